//! A dense layer's weight, `(out, in)`, computing `x·Wᵀ` for `x` of `(rows, in)`: a float
//! matmul, or the int8 GEMM of `--dtype int8` (quantized once here, at load). Biases and what
//! follows (GELU, residual, norms) stay with the fused ops after the matmul, in f32.
//!
//! On CPU in f32 the float matmul calls `gemm` itself rather than through candle's matmul,
//! which zeroes every output on one thread before the multi-threaded GEMM overwrites it; and it
//! keeps `Wᵀ`, `(in, out)`, which `gemm` reads in place for a small batch: with `W` it repacked
//! the whole matrix on every call, 70 % of a lone query's time.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

use super::ops::{self, f32_slice};
use crate::error::{Error, Result};
use crate::kernels::int8::{Epilogue, Int8Weights, Isa};

pub enum Linear {
    /// `W`, `(out, in)`: candle's matmul (GPU, half precision).
    Float(Tensor),
    /// `Wᵀ`, `(in, out)` contiguous: CPU f32 through `gemm`.
    CpuF32(Tensor),
    Int8(Arc<Int8Weights>),
}

impl Linear {
    /// Keeps `weight` as it is, or quantizes it for `int8`'s kernel (one scale per output
    /// channel).
    pub fn new(weight: Tensor, int8: Option<Isa>) -> Result<Self> {
        Self::quantized(weight, int8, None)
    }

    /// A feed-forward down projection: in int8, one weight scale per output channel and
    /// block of [`DOWN_PROJECTION_BLOCK`] inputs. With one scale per channel, as the other
    /// layers, int8 there takes MPNet's vectors to cosine 0.980 of f32's on the parity texts;
    /// with blocks, 0.996 (`scripts/int8_block_simulation.py`; tests/int8_quality.rs holds
    /// kroute's).
    pub fn down_projection(weight: Tensor, int8: Option<Isa>) -> Result<Self> {
        Self::quantized(weight, int8, Some(DOWN_PROJECTION_BLOCK))
    }

    /// `weight` as it is, or quantized for `int8` with a scale per output channel and, if
    /// given, per `block` of inputs.
    fn quantized(weight: Tensor, int8: Option<Isa>, block: Option<usize>) -> Result<Self> {
        let Some(isa) = int8 else {
            if weight.device().is_cpu() && weight.dtype() == DType::F32 {
                return Ok(Self::CpuF32(weight.t()?.contiguous()?));
            }
            return Ok(Self::Float(weight));
        };
        let (out, inner) = weight.dims2()?;
        let values = weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let weights = match block {
            None => Int8Weights::quantize(&values, out, inner, isa)?,
            Some(block) => Int8Weights::quantize_grouped(&values, out, inner, isa, block)?,
        };
        Ok(Self::Int8(Arc::new(weights)))
    }

    /// `x·Wᵀ`; `x`: `(rows, in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::CpuF32(transposed) => {
                Ok(x.contiguous()?.apply_op2_no_bwd(transposed, &FloatMatmul)?)
            }
            Self::Float(weight) => Ok(x.matmul(&weight.t()?)?),
            Self::Int8(weights) => Ok(x
                .contiguous()?
                .apply_op1_no_bwd(&Int8Matmul(weights.clone()))?),
        }
    }

    /// `gelu_erf(x·Wᵀ + bias)`; in int8 the GEMM applies bias and GELU as it stores its
    /// output, which is then written once instead of three times.
    pub fn forward_bias_gelu(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        match self {
            Self::Int8(weights) => Ok(x
                .contiguous()?
                .apply_op2_no_bwd(bias, &Int8Matmul(weights.clone()))?),
            Self::Float(_) | Self::CpuF32(_) => ops::bias_gelu(&self.forward(x)?, bias),
        }
    }
}

/// Inputs per weight scale in int8 down projections.
pub const DOWN_PROJECTION_BLOCK: usize = 128;

/// `dst (m × n, row stride dst_rs) = lhs (m × k) · rhs (k × n)` in f32, the operands given as
/// `(pointer, row stride, column stride)`; on the rayon pool if `parallel`.
///
/// # Safety
/// Every element the shapes and strides address must lie inside its allocation; `dst` is
/// written without being read, so it may be uninitialised.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    parallel: bool,
) {
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs.0,
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0,
        rhs.2 as isize,
        rhs.1 as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    )
}

/// `x·Wᵀ` for f32 CPU tensors: `x` `(rows, in)` and `Wᵀ` `(in, out)`, both contiguous.
struct FloatMatmul;

impl CustomOp2 for FloatMatmul {
    fn name(&self) -> &'static str {
        "float-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let (rows, inner) = l1.shape().dims2()?;
        let (w_inner, out) = l2.shape().dims2()?;
        if inner != w_inner {
            candle_core::bail!("float matmul: ({rows}, {inner}) by ({w_inner}, {out})");
        }
        let mut y = Vec::<f32>::with_capacity(rows * out);
        // SAFETY: x is rows × inner and w inner × out, both contiguous; y has room for
        // rows × out values, all of which the GEMM writes.
        unsafe {
            gemm_f32(
                rows,
                out,
                inner,
                y.as_mut_ptr(),
                out,
                (x.as_ptr(), inner, 1),
                (w.as_ptr(), out, 1),
                true,
            );
            y.set_len(rows * out);
        }
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }
}

/// `x·Wᵀ` in int8 for f32 CPU activations `(rows, in)`; as a candle op of two inputs, with a
/// bias `(out)` and the GELU applied as the output is stored.
struct Int8Matmul(Arc<Int8Weights>);

impl Int8Matmul {
    fn run(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
        epilogue: Epilogue,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, "int8 matmul")?;
        let (rows, _) = layout.shape().dims2()?;
        let out = self
            .0
            .matmul_then(x, rows, epilogue)
            .map_err(|e: Error| candle_core::Error::Msg(e.to_string()))?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((rows, self.0.out_features())),
        ))
    }
}

impl CustomOp1 for Int8Matmul {
    fn name(&self) -> &'static str {
        "int8-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(storage, layout, Epilogue::None)
    }
}

impl CustomOp2 for Int8Matmul {
    fn name(&self) -> &'static str {
        "int8-matmul-bias-gelu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let bias = f32_slice(s2, l2, CustomOp2::name(self))?;
        self.run(s1, l1, Epilogue::BiasGelu(bias))
    }
}
