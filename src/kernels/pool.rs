//! Sentence vectors from the encoder's last hidden states: masked mean and L2 normalisation in
//! one pass.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::{f32_input, host_output, unsupported, Contiguous};
use crate::error::Result;

/// `hidden`: `(batch, seq, dim)` in f32, f16 or bf16; `mask`: `(batch, seq)`, 1 for real
/// tokens and 0 for padding. Returns `(batch, dim)` f32: the mean of the real tokens' states,
/// scaled to unit length if `normalize` (a zero vector stays zero).
pub fn mean_pool(hidden: &Tensor, mask: &Tensor, normalize: bool) -> Result<Tensor> {
    let (batch, seq, dim) = hidden.dims3()?;
    let mask = f32_input(mask, "mask", &[batch, seq])?;
    match hidden.device() {
        Device::Cpu => {
            let hidden = f32_input(hidden, "hidden states", &[batch, seq, dim])?;
            let mut out = host_output(batch * dim);
            mean_pool_cpu(
                Contiguous::of(&hidden)?.cpu()?,
                Contiguous::of(&mask)?.cpu()?,
                seq,
                normalize,
                &mut out,
            );
            Ok(Tensor::from_vec(out, (batch, dim), &Device::Cpu)?)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(device) => {
            use candle_core::DType;
            let hidden = match hidden.dtype() {
                DType::F32 | DType::F16 | DType::BF16 => hidden.contiguous()?,
                _ => hidden.to_dtype(DType::F32)?,
            };
            super::cuda::mean_pool(device, &hidden, &mask, (batch, seq, dim), normalize)
        }
        device => Err(unsupported("mean-pool", device)),
    }
}

/// The CPU implementation: one sequence per task. `out` holds `batch × dim`.
pub fn mean_pool_cpu(hidden: &[f32], mask: &[f32], seq: usize, normalize: bool, out: &mut [f32]) {
    let batch = mask.len() / seq.max(1);
    let dim = out.len() / batch.max(1);
    out.par_chunks_exact_mut(dim.max(1))
        .zip(hidden.par_chunks_exact((seq * dim).max(1)))
        .zip(mask.par_chunks_exact(seq.max(1)))
        .for_each(|((pooled, states), weights)| {
            pooled.fill(0.0);
            for (state, &w) in states.chunks_exact(dim.max(1)).zip(weights) {
                if w != 0.0 {
                    for (p, &s) in pooled.iter_mut().zip(state) {
                        *p += w * s;
                    }
                }
            }
            let count = weights.iter().sum::<f32>().max(1e-9);
            pooled.iter_mut().for_each(|p| *p /= count);
            if normalize {
                let norm = pooled.iter().map(|p| p * p).sum::<f32>().sqrt().max(1e-12);
                pooled.iter_mut().for_each(|p| *p /= norm);
            }
        });
}
