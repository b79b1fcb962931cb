//! Fused encoder ops. On CPU in f32 each runs as one parallel pass (candle custom ops); on other
//! devices and dtypes they compose candle's generic ops, which is also the reference the fused
//! versions are tested against.
//!
//! Why: after the matmuls, a BERT layer on candle's CPU backend spends as long again in
//! single-threaded element-wise passes (bias adds, erf-GELU, mask add, softmax, head split),
//! each reading and writing the whole activation.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::kernels::init_with;

fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// `gelu_erf(x + bias)`; `x`: `(rows, n)`, `bias`: `(n)`.
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if fused(x) {
        Ok(x.apply_op2_no_bwd(bias, &BiasGelu)?)
    } else {
        Ok(x.broadcast_add(bias)?.gelu_erf()?)
    }
}

/// `layer_norm(x + bias + residual)`; `params`: `(3, n)` stacked bias, gamma, beta.
pub fn bias_residual_norm(
    x: &Tensor,
    residual: &Tensor,
    params: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    if fused(x) {
        Ok(x.apply_op3_no_bwd(residual, params, &BiasResidualNorm { eps })?)
    } else {
        let summed = x.broadcast_add(&params.get(0)?)?.add(residual)?;
        Ok(candle_nn::ops::layer_norm(
            &summed,
            &params.get(1)?,
            &params.get(2)?,
            eps,
        )?)
    }
}

/// `softmax(scores + position_bias + key_bias)` over the last axis; `scores`:
/// `(batch, heads, queries, seq)`, `key_bias`: `(batch, seq)` additive key mask, `position_bias`:
/// an optional term shared by every sequence, `(heads, queries, seq)` (MPNet's relative
/// positions) or `(queries, seq)` shared by the heads too (a causal mask).
pub fn masked_softmax(
    scores: &Tensor,
    key_bias: &Tensor,
    position_bias: Option<&Tensor>,
) -> Result<Tensor> {
    if fused(scores) {
        return apply_masked(MaskedSoftmax, scores, key_bias, position_bias);
    }
    let (batch, _, queries, seq) = scores.dims4()?;
    let mut masked = scores.broadcast_add(&key_bias.reshape((batch, 1, 1, seq))?)?;
    if let Some(position) = position_bias {
        let position = match position.rank() {
            2 => position.reshape((1, 1, queries, seq))?,
            _ => position.unsqueeze(0)?,
        };
        masked = masked.broadcast_add(&position)?;
    }
    Ok(candle_nn::ops::softmax_last_dim(&masked)?)
}

pub(super) use simd::masked_softmax_rows;

pub(super) fn f32_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expected f32");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expected a contiguous input"),
    }
}

/// Rows per rayon task: enough work to amortise scheduling.
fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

/// An output of `len` values built row by row in parallel: `fill(index, row)` initialises a row
/// (with [`init_with`]) and returns it. The vector is never zeroed first: `vec![0.0; len]` on
/// every activation was a single-threaded memset costing a tenth of the encoder's time.
fn par_rows<F>(len: usize, row_len: usize, fill: F) -> Vec<f32>
where
    F: for<'a> Fn(usize, &'a mut [MaybeUninit<f32>]) -> &'a mut [f32] + Sync,
{
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(row_len.max(1))
        .enumerate()
        .with_min_len(rows_per_task(row_len))
        .for_each(|(index, row)| {
            let (start, count) = (row.as_ptr() as *const f32, row.len());
            let written = fill(index, row);
            // A `&mut [f32]` over this memory can only come from initialising all of it.
            assert!(std::ptr::eq(written.as_ptr(), start) && written.len() == count);
        });
    // SAFETY: every row was initialised (asserted above), and the rows tile `0..len`.
    unsafe { out.set_len(len) };
    out
}

struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let bias = f32_slice(s2, l2, self.name())?;
        let n = bias.len();
        let out = par_rows(x.len(), n, |row, out| {
            simd::bias_gelu(out, &x[row * n..(row + 1) * n], bias)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

struct BiasResidualNorm {
    eps: f32,
}

impl CustomOp3 for BiasResidualNorm {
    fn name(&self) -> &'static str {
        "bias-residual-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let residual = f32_slice(s2, l2, self.name())?;
        let params = f32_slice(s3, l3, self.name())?;
        let n = params.len() / 3;
        let (bias, rest) = params.split_at(n);
        let (gamma, beta) = rest.split_at(n);
        let out = par_rows(x.len(), n, |row, out| {
            let (x, r) = (
                &x[row * n..(row + 1) * n],
                &residual[row * n..(row + 1) * n],
            );
            simd::bias_residual_norm(out, x, r, [bias, gamma, beta], self.eps)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// The fused masked softmax, with or without a position bias.
struct MaskedSoftmax;

impl MaskedOp for MaskedSoftmax {
    const NAME: &'static str = "masked-softmax";

    fn run(
        &self,
        scores: &[f32],
        shape: &Shape,
        key_bias: &[f32],
        position_bias: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, heads, queries, seq) = shape.dims4()?;
        if position_bias
            .is_some_and(|p| p.len() != heads * queries * seq && p.len() != queries * seq)
        {
            candle_core::bail!(
                "{}: position bias is neither (heads, queries, seq) nor (queries, seq)",
                Self::NAME
            );
        }
        let out = par_rows(scores.len(), seq, |row, out| {
            let scores = &scores[row * seq..(row + 1) * seq];
            let key_bias = &key_bias[(row / (heads * queries)) * seq..][..seq];
            let out = init_with(out, scores.iter().zip(key_bias).map(|(s, k)| s + k));
            if let Some(position) = position_bias {
                // Rows run (batch, head, query); the bias is shared across the batch, and
                // across the heads too when it has one row per query only.
                let shared_rows = position.len() / seq;
                let position = &position[(row % shared_rows) * seq..][..seq];
                out.iter_mut().zip(position).for_each(|(o, p)| *o += p);
            }
            simd::softmax(out);
            out
        });
        Ok((CpuStorage::F32(out), shape.clone()))
    }
}

/// A fused CPU op over f32 inputs `(x, key_bias[, position_bias])`: the attention ops, whose
/// position bias (MPNet's relative positions, a causal mask) only some models have.
pub(super) trait MaskedOp {
    const NAME: &'static str;

    fn run(
        &self,
        x: &[f32],
        shape: &Shape,
        key_bias: &[f32],
        position_bias: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)>;
}

/// Runs `op` as a candle op of two inputs, or of three with a position bias.
pub(super) fn apply_masked<T: MaskedOp>(
    op: T,
    x: &Tensor,
    key_bias: &Tensor,
    position_bias: Option<&Tensor>,
) -> Result<Tensor> {
    let op = Masked(op);
    Ok(match position_bias {
        Some(position) => x.apply_op3_no_bwd(key_bias, position, &op)?,
        None => x.apply_op2_no_bwd(key_bias, &op)?,
    })
}

struct Masked<T>(T);

impl<T: MaskedOp> CustomOp2 for Masked<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, T::NAME)?;
        let key_bias = f32_slice(s2, l2, T::NAME)?;
        self.0.run(x, l1.shape(), key_bias, None)
    }
}

impl<T: MaskedOp> CustomOp3 for Masked<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, T::NAME)?;
        let key_bias = f32_slice(s2, l2, T::NAME)?;
        let position = f32_slice(s3, l3, T::NAME)?;
        self.0.run(x, l1.shape(), key_bias, Some(position))
    }
}

/// Branch-free element-wise math the compiler can vectorise, compiled for AVX-512 or AVX2+FMA
/// where the CPU has them (checked at run time) and for the baseline target elsewhere.
mod simd {
    use std::mem::MaybeUninit;

    use crate::kernels::init_with;
    use crate::kernels::simd::{dispatch, exp_neg, fold_lanes, gelu_erf, max};

    /// Writes `gelu_erf(x + bias)` into `out`, one row of `bias.len()` values.
    pub fn bias_gelu<'a>(
        out: &'a mut [MaybeUninit<f32>],
        x: &[f32],
        bias: &[f32],
    ) -> &'a mut [f32] {
        dispatch(
            #[inline(always)]
            || bias_gelu_generic(out, x, bias),
        )
    }

    #[inline(always)]
    fn bias_gelu_generic<'a>(
        out: &'a mut [MaybeUninit<f32>],
        x: &[f32],
        bias: &[f32],
    ) -> &'a mut [f32] {
        init_with(out, x.iter().zip(bias).map(|(&x, &b)| gelu_erf(x + b)))
    }

    /// `layer_norm(x + bias + residual)` with (gamma, beta), one row, into `out`.
    pub fn bias_residual_norm<'a>(
        out: &'a mut [MaybeUninit<f32>],
        x: &[f32],
        residual: &[f32],
        [bias, gamma, beta]: [&[f32]; 3],
        eps: f32,
    ) -> &'a mut [f32] {
        dispatch(
            #[inline(always)]
            || {
                let values = x.iter().zip(bias).zip(residual);
                let out = init_with(out, values.map(|((x, b), r)| x + b + r));
                let n = out.len() as f32;
                let mean = sum(out) / n;
                let var = sum_map(out, |v| (v - mean) * (v - mean)) / n;
                let inv = 1.0 / (var + eps).sqrt();
                for ((o, g), b) in out.iter_mut().zip(gamma).zip(beta) {
                    *o = (*o - mean) * inv * g + b;
                }
                out
            },
        )
    }

    /// `row ← softmax(row)`.
    pub fn softmax(row: &mut [f32]) {
        dispatch(
            #[inline(always)]
            || softmax_generic(row),
        )
    }

    #[inline(always)]
    fn softmax_generic(row: &mut [f32]) {
        let max = max(row, f32::NEG_INFINITY);
        row.iter_mut().for_each(|v| *v = exp_neg(max - *v));
        let inv = 1.0 / sum(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }

    /// Every row of one head's attention scores `(queries, keys)` ←
    /// `softmax(row + key_bias + position_bias[row])`; one dispatch for them all, since a row
    /// is only as long as the sequence.
    pub fn masked_softmax_rows(
        scores: &mut [f32],
        key_bias: &[f32],
        position_bias: Option<&[f32]>,
    ) {
        let keys = key_bias.len();
        dispatch(
            #[inline(always)]
            || {
                for (query, row) in scores.chunks_exact_mut(keys).enumerate() {
                    row.iter_mut().zip(key_bias).for_each(|(s, m)| *s += m);
                    if let Some(position) = position_bias {
                        let position = &position[query * keys..(query + 1) * keys];
                        row.iter_mut().zip(position).for_each(|(s, p)| *s += p);
                    }
                    softmax_generic(row);
                }
            },
        )
    }

    #[inline(always)]
    fn sum(values: &[f32]) -> f32 {
        sum_map(values, |v| v)
    }

    #[inline(always)]
    fn sum_map(values: &[f32], map: impl Fn(f32) -> f32) -> f32 {
        fold_lanes(values, 0.0, |a, v| a + map(v), |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    fn f64(t: &Tensor) -> Tensor {
        t.to_dtype(DType::F64).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (f64(a) - b)
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

    fn random(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 2.0, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn fused_ops_match_generic_ops() {
        let (batch, heads, seq, dim) = (3, 4, 7, 8);
        let hidden = heads * dim;
        let x = random(&[batch * seq, hidden]);
        let bias = random(&[hidden]);
        let want = f64(&x)
            .broadcast_add(&f64(&bias))
            .unwrap()
            .gelu_erf()
            .unwrap();
        assert!(max_abs_diff(&bias_gelu(&x, &bias).unwrap(), &want) < 1e-5);

        let residual = random(&[batch * seq, hidden]);
        let params = random(&[3, hidden]);
        let p = f64(&params);
        let summed = (f64(&x).broadcast_add(&p.get(0).unwrap()).unwrap() + f64(&residual)).unwrap();
        let want =
            candle_nn::ops::layer_norm_slow(&summed, &p.get(1).unwrap(), &p.get(2).unwrap(), 1e-12)
                .unwrap();
        let got = bias_residual_norm(&x, &residual, &params, 1e-12).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-4);

        let scores = random(&[batch, heads, seq, seq]);
        let mut mask = vec![0f32; batch * seq];
        mask[seq - 2..seq].fill(super::super::transformer::MASK_BIAS);
        let mask = Tensor::from_vec(mask, (batch, seq), &Device::Cpu).unwrap();
        let masked = f64(&scores).broadcast_add(&f64(&mask).reshape((batch, 1, 1, seq)).unwrap());
        let want = candle_nn::ops::softmax(masked.as_ref().unwrap(), 3).unwrap();
        let got = masked_softmax(&scores, &mask, None).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-6);
        // With a position bias shared across the batch (MPNet): the bias of (head, query, key)
        // lands on that entry of every sequence.
        let position = random(&[heads, seq, seq]);
        let with_position = masked
            .unwrap()
            .broadcast_add(&f64(&position).unsqueeze(0).unwrap())
            .unwrap();
        let want_position = candle_nn::ops::softmax(&with_position, 3).unwrap();
        let got_position = masked_softmax(&scores, &mask, Some(&position)).unwrap();
        assert!(max_abs_diff(&got_position, &want_position) < 1e-6);
        let generic = masked_softmax(&f64(&scores), &f64(&mask), Some(&f64(&position))).unwrap();
        assert!(max_abs_diff(&got_position, &generic) < 1e-6);
        assert_eq!(
            got.i((0, 0, 0, seq - 1))
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }
}
