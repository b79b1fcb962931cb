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

/// The CPU implementation: rows are cut into at most [`SEGMENT_CHUNKS`] fixed chunks, each
/// summed into its own `(segments, width)` buffer in parallel, and the buffers are added in
/// chunk order. The chunks depend only on the row count (not on the threads or on rayon's work
/// stealing), so the sums, and the k-means built on them, are the same on every run. Errors on a
/// label out of range.
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
    let rows = labels.len();
    let chunk_rows = rows.div_ceil(SEGMENT_CHUNKS).max(1);
    let width = width.max(1);
    let partials: Vec<Vec<f32>> = values
        .par_chunks(chunk_rows * width)
        .zip(labels.par_chunks(chunk_rows))
        .map(|(chunk, chunk_labels)| {
            let mut sums = vec![0f32; segments * width];
            for (row, &label) in chunk.chunks_exact(width).zip(chunk_labels) {
                let start = label as usize * width;
                for (sum, value) in sums[start..start + width].iter_mut().zip(row) {
                    *sum += value;
                }
            }
            sums
        })
        .collect();
    let mut total = vec![0f32; segments * width];
    for partial in partials {
        for (x, y) in total.iter_mut().zip(partial) {
            *x += y;
        }
    }
    Ok(total)
}

/// Partial sums [`segment_sum_cpu`] splits its rows into at most (parallelism for any core
/// count this runs on, at `SEGMENT_CHUNKS × segments × width` floats of scratch).
pub const SEGMENT_CHUNKS: usize = 32;
