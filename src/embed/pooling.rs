//! Sentence vectors from token states: mean, first-token or last-token pooling, then optional L2
//! normalisation.

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::kernels;
use crate::model::Pooling;

/// `hidden`: `(batch, seq, dim)`; `mask`: `(batch, seq)` f32 with 1 for real tokens.
/// Returns `(batch, dim)` in f32. Mean pooling runs as one fused kernel where there is one.
pub fn pool(hidden: &Tensor, mask: &Tensor, pooling: Pooling, normalize: bool) -> Result<Tensor> {
    if pooling == Pooling::Mean && kernels::active(hidden.device()) {
        return kernels::mean_pool(hidden, mask, normalize);
    }
    let hidden = hidden.to_dtype(DType::F32)?;
    let pooled = match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        Pooling::Last => {
            // The last real token of each row, wherever the padding sits: the largest position
            // whose mask is 1.
            let (batch, seq, dim) = hidden.dims3()?;
            let positions = Tensor::arange(0f32, seq as f32, mask.device())?;
            let last = mask.broadcast_mul(&positions)?.argmax_keepdim(1)?;
            let index = last
                .unsqueeze(2)?
                .broadcast_as((batch, 1, dim))?
                .contiguous()?;
            hidden.gather(&index, 1)?.squeeze(1)?
        }
        Pooling::Mean => {
            let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
            let counts = mask.sum_keepdim(1)?.clamp(1e-9, f64::MAX)?;
            summed.broadcast_div(&counts)?
        }
    };
    if normalize {
        l2_normalize(&pooled)
    } else {
        Ok(pooled)
    }
}

/// Rows scaled to unit length (rows of zeros stay zero, as with torch's `F.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norms = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norms)?)
}
