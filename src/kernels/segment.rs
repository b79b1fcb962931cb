//! The k-means centroid update: row sums per cluster.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::{f32_input, unsupported, Contiguous};
use crate::error::{Error, Result};

/// `sums[s] = Σ values[i] over the rows i with labels[i] = s`; `values`: `(n, width)`,
/// `labels`: `(n)` u32, each below `segments`. Returns `(segments, width)` f32.
pub fn segment_sum(values: &Tensor, labels: &Tensor, segments: usize) -> Result<Tensor> {
    let (n, width) = values.dims2()?;
    let values = f32_input(values, "values", &[n, width])?;
    if labels.dims() != [n] || labels.dtype() != candle_core::DType::U32 {
        return Err(Error::Invalid(format!(
            "labels must be ({n}) u32, got {:?} {:?}",
            labels.dims(),
            labels.dtype()
        )));
    }
    let labels = labels.contiguous()?;
    match values.device() {
        Device::Cpu => {
            let sums = segment_sum_cpu(
                Contiguous::of(&values)?.cpu()?,
                Contiguous::of(&labels)?.cpu()?,
                width,
                segments,
            )?;
            Ok(Tensor::from_vec(sums, (segments, width), &Device::Cpu)?)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(device) => {
            super::cuda::segment_sum(device, &values, &labels, n, width, segments)
        }
        device => Err(unsupported("segment-sum", device)),
    }
}

/// The CPU implementation: each rayon task sums its rows into its own `(segments, width)`
/// buffer, and the buffers are added up. Errors on a label out of range.
pub fn segment_sum_cpu(
    values: &[f32],
    labels: &[u32],
    width: usize,
    segments: usize,
) -> Result<Vec<f32>> {
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= segments) {
        return Err(Error::Invalid(format!(
            "label {bad} out of range for {segments} segments"
        )));
    }
    let zeros = || vec![0f32; segments * width];
    Ok(values
        .par_chunks_exact(width.max(1))
        .zip(labels)
        .fold(zeros, |mut sums, (row, &label)| {
            let start = label as usize * width;
            for (sum, value) in sums[start..start + width].iter_mut().zip(row) {
                *sum += value;
            }
            sums
        })
        .reduce(zeros, |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
            a
        }))
}
