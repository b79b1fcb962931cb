//! A dense layer's weight, `(out, in)`, computing `x·Wᵀ` for `x` of `(rows, in)`: a float
//! matmul, or the int8 GEMM of `--dtype int8` (quantized once here, at load). Biases and what
//! follows (GELU, residual, norms) stay with the fused ops after the matmul, in f32.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::error::{Error, Result};
use crate::kernels::int8::{Int8Weights, Isa};

pub enum Linear {
    Float(Tensor),
    Int8(Arc<Int8Weights>),
}

impl Linear {
    /// Keeps `weight` as it is, or quantizes it for `int8`'s kernel.
    pub fn new(weight: Tensor, int8: Option<Isa>) -> Result<Self> {
        let Some(isa) = int8 else {
            return Ok(Self::Float(weight));
        };
        let (out, inner) = weight.dims2()?;
        let values = weight
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self::Int8(Arc::new(Int8Weights::quantize(
            &values, out, inner, isa,
        )?)))
    }

    /// `x·Wᵀ`; `x`: `(rows, in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Float(weight) => Ok(x.matmul(&weight.t()?)?),
            Self::Int8(weights) => Ok(x
                .contiguous()?
                .apply_op1_no_bwd(&Int8Matmul(weights.clone()))?),
        }
    }
}

struct Int8Matmul(Arc<Int8Weights>);

impl CustomOp1 for Int8Matmul {
    fn name(&self) -> &'static str {
        "int8-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("int8 matmul: expected f32 activations");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("int8 matmul: expected contiguous activations");
        };
        let (rows, _) = layout.shape().dims2()?;
        let out = self
            .0
            .matmul(&data[start..end], rows)
            .map_err(|e: Error| candle_core::Error::Msg(e.to_string()))?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((rows, self.0.out_features())),
        ))
    }
}
