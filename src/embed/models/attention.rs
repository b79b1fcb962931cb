//! Bidirectional multi-head self-attention of the post-norm encoders, from the fused QKV
//! projection to the context in token-major layout: `softmax(q·kᵀ + masks)·v` per head.
//!
//! On CPU in f32 it is one pass with a task per (sequence, head): gather the head's q, k, v
//! with their biases, two single-threaded GEMMs (the tasks are the parallelism) around the
//! masked softmax, and the context written straight into its columns of the `(tokens, hidden)`
//! output. Why: composed from candle ops, attention spent its time outside arithmetic:
//! candle's batched matmul runs one multi-threaded GEMM per (sequence, head), each a few hundred
//! thousand multiply-adds; the scores, the probabilities and the split and merged heads were
//! each written to memory.
//! Elsewhere (other devices and dtypes) the same computation is composed from candle's ops,
//! which is also what the fused pass is tested against.

use candle_core::{CpuStorage, DType, Shape, Tensor};
use rayon::prelude::*;

use super::linear::gemm_f32;
use super::ops::{self, MaskedOp};
use crate::error::Result;
use crate::kernels::DisjointWrites;

/// `qkv`: `(batch·seq, 3·hidden)`, the fused projection without its bias `qkv_bias` (`3·hidden`;
/// the 1/√d scale already folded into Q). `key_bias`: `(batch, seq)`, additive key mask.
/// `position_bias`: an optional `(heads, seq, seq)` term shared by every sequence (MPNet's
/// relative positions). Returns the context, `(batch·seq, hidden)`.
pub fn attention(
    qkv: &Tensor,
    qkv_bias: &Tensor,
    key_bias: &Tensor,
    position_bias: Option<&Tensor>,
    batch: usize,
    heads: usize,
) -> Result<Tensor> {
    if !(qkv.device().is_cpu() && qkv.dtype() == DType::F32) {
        return composed(qkv, qkv_bias, key_bias, position_bias, batch, heads);
    }
    let op = FusedAttention {
        bias: qkv_bias.to_dtype(DType::F32)?.to_vec1()?,
        batch,
        heads,
    };
    ops::apply_masked(op, &qkv.contiguous()?, key_bias, position_bias)
}

/// The same computation from candle's ops.
fn composed(
    qkv: &Tensor,
    qkv_bias: &Tensor,
    key_bias: &Tensor,
    position_bias: Option<&Tensor>,
    batch: usize,
    heads: usize,
) -> Result<Tensor> {
    let (rows, width) = qkv.dims2()?;
    let (seq, head_dim) = (rows / batch, width / (3 * heads));
    let split = qkv
        .broadcast_add(qkv_bias)?
        .reshape((batch, seq, 3, heads, head_dim))?
        .permute((2, 0, 3, 1, 4))?
        .contiguous()?;
    let (q, k, v) = (split.get(0)?, split.get(1)?, split.get(2)?);
    let probs = ops::masked_softmax(&q.matmul(&k.t()?)?, key_bias, position_bias)?;
    Ok(probs
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((rows, width / 3))?)
}

struct FusedAttention {
    bias: Vec<f32>,
    batch: usize,
    heads: usize,
}

impl MaskedOp for FusedAttention {
    const NAME: &'static str = "attention";

    fn run(
        &self,
        qkv: &[f32],
        shape: &Shape,
        key_bias: &[f32],
        position_bias: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, width) = shape.dims2()?;
        let (batch, heads) = (self.batch, self.heads);
        let (seq, hidden) = (rows / batch, width / 3);
        let dim = hidden / heads;
        if rows != batch * seq || hidden != heads * dim || self.bias.len() != width {
            candle_core::bail!("attention: qkv {shape:?} does not split into {batch} × {heads}");
        }
        if key_bias.len() != rows {
            candle_core::bail!(
                "attention: key bias has {} values, not {rows}",
                key_bias.len()
            );
        }
        if position_bias.is_some_and(|p| p.len() != heads * seq * seq) {
            candle_core::bail!("attention: position bias is not (heads, seq, seq)");
        }
        let mut out = Vec::<f32>::with_capacity(rows * hidden);
        // SAFETY: each (sequence, head) task writes its own rows × columns block.
        let out_ptr = unsafe { DisjointWrites::new(out.spare_capacity_mut().as_mut_ptr()) };
        (0..batch * heads).into_par_iter().for_each(|task| {
            let (b, h) = (task / heads, task % heads);
            // q, k, v of this head, biases added: `seq × dim` each, row-major.
            let mut qkv_head = vec![0f32; 3 * seq * dim];
            for (part, block) in qkv_head.chunks_exact_mut(seq * dim).enumerate() {
                let column = part * hidden + h * dim;
                let bias = &self.bias[column..column + dim];
                for (s, row) in block.chunks_exact_mut(dim).enumerate() {
                    let src = &qkv[(b * seq + s) * width + column..][..dim];
                    for ((o, x), b) in row.iter_mut().zip(src).zip(bias) {
                        *o = x + b;
                    }
                }
            }
            let (q, kv) = qkv_head.split_at(seq * dim);
            let (k, v) = kv.split_at(seq * dim);
            let mut scores = vec![0f32; seq * seq];
            // SAFETY (both GEMMs): every pointer and stride stays inside its buffer; the
            // context block of (b, h) is this task's alone.
            unsafe {
                // scores = q · kᵀ: kᵀ read through k's strides.
                gemm_f32(
                    seq,
                    seq,
                    dim,
                    scores.as_mut_ptr(),
                    seq,
                    (q.as_ptr(), dim, 1),
                    (k.as_ptr(), 1, dim),
                    false,
                );
            }
            let key_bias = &key_bias[b * seq..(b + 1) * seq];
            let position = position_bias.map(|p| &p[h * seq * seq..(h + 1) * seq * seq]);
            ops::masked_softmax_rows(&mut scores, key_bias, position);
            unsafe {
                // context = probs · v, into columns h·dim.. of rows b·seq.. of the output.
                let context = out_ptr.get().add(b * seq * hidden + h * dim) as *mut f32;
                gemm_f32(
                    seq,
                    dim,
                    seq,
                    context,
                    hidden,
                    (scores.as_ptr(), seq, 1),
                    (v.as_ptr(), dim, 1),
                    false,
                );
            }
        });
        // SAFETY: the (sequence, head) tasks wrote every row and column of the output.
        unsafe { out.set_len(rows * hidden) };
        Ok((CpuStorage::F32(out), Shape::from((rows, hidden))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::models::MASK_BIAS;
    use candle_core::Device;

    fn random(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        let a = a.to_dtype(DType::F64).unwrap();
        let b = b.to_dtype(DType::F64).unwrap();
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn fused_attention_matches_composed_ops() {
        let (batch, heads, seq, dim) = (3, 4, 7, 8);
        let hidden = heads * dim;
        let qkv = random(&[batch * seq, 3 * hidden]);
        let bias = random(&[3 * hidden]);
        let mut mask = vec![0f32; batch * seq];
        mask[seq - 2..seq].fill(MASK_BIAS);
        mask[2 * seq - 1] = MASK_BIAS;
        let mask = Tensor::from_vec(mask, (batch, seq), &Device::Cpu).unwrap();
        let position = random(&[heads, seq, seq]);
        let f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        for position in [None, Some(&position)] {
            let got = attention(&qkv, &bias, &mask, position, batch, heads).unwrap();
            let want = composed(
                &f64(&qkv),
                &f64(&bias),
                &f64(&mask),
                position.map(f64).as_ref(),
                batch,
                heads,
            )
            .unwrap();
            assert_eq!(got.dims(), &[batch * seq, hidden]);
            assert!(
                max_abs_diff(&got, &want) < 1e-5,
                "{}",
                max_abs_diff(&got, &want)
            );
        }
    }
}
