//! The k-means assignment: each point's nearest centroid and squared distance, without the
//! `(points, centroids)` distance matrix.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::{f32_input, host_output, unsupported, Contiguous};
use crate::error::{Error, Result};

/// Each point's nearest centroid.
#[derive(Debug, Clone)]
pub struct Nearest {
    /// `(n)` u32: the nearest centroid; the lower index among equally near ones.
    pub labels: Tensor,
    /// `(n)` f32: the squared distance to it, `max(‖x‖² + ‖c‖² − 2·x·c, 0)`.
    pub distances: Tensor,
}

/// `points`: `(n, dim)` f32, rows contiguous but possibly strided (a column slice of a wider
/// matrix is read in place); `point_sq_norms`: `(n)`, their squared norms (k-means keeps
/// them); `centroids`: `(k, dim)`, k ≥ 1. Computed in f32 on the points' device.
pub fn nearest_centroid(
    points: &Tensor,
    point_sq_norms: &Tensor,
    centroids: &Tensor,
) -> Result<Nearest> {
    let (n, dim) = points.dims2()?;
    let k = centroids.dim(0)?;
    if k == 0 || points.dtype() != DType::F32 {
        return Err(Error::Invalid(format!(
            "nearest centroid needs f32 points and at least one centroid (got {:?}, k = {k})",
            points.dtype()
        )));
    }
    let point_sq_norms = f32_input(point_sq_norms, "point norms", &[n])?;
    let centroids = f32_input(centroids, "centroids", &[k, dim])?;
    let centroid_sq_norms = centroids.sqr()?.sum(1)?;
    match points.device() {
        Device::Cpu => {
            let (x, row_stride) = Contiguous::rows(points)?;
            let [x_sq, c, c_sq] =
                [&point_sq_norms, &centroids, &centroid_sq_norms].map(Contiguous::of);
            let (mut labels, mut distances) = (host_output(n), host_output(n));
            nearest_centroid_cpu(
                Points {
                    data: x.cpu()?,
                    dim,
                    row_stride,
                },
                x_sq?.cpu()?,
                c?.cpu()?,
                c_sq?.cpu()?,
                &mut labels,
                &mut distances,
            );
            Ok(Nearest {
                labels: Tensor::from_vec(labels, n, &Device::Cpu)?,
                distances: Tensor::from_vec(distances, n, &Device::Cpu)?,
            })
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(device) => super::cuda::nearest_centroid(
            device,
            [points, &point_sq_norms, &centroids, &centroid_sq_norms],
            n,
            k,
            dim,
        ),
        device => Err(unsupported("nearest-centroid", device)),
    }
}

/// Row-major points whose rows start `row_stride` apart.
#[derive(Debug, Clone, Copy)]
pub struct Points<'a> {
    pub data: &'a [f32],
    pub dim: usize,
    pub row_stride: usize,
}

/// The CPU implementation: rows in parallel, each scanning every centroid.
pub fn nearest_centroid_cpu(
    points: Points<'_>,
    point_sq_norms: &[f32],
    centroids: &[f32],
    centroid_sq_norms: &[f32],
    labels: &mut [u32],
    distances: &mut [f32],
) {
    let Points {
        data,
        dim,
        row_stride,
    } = points;
    labels
        .par_iter_mut()
        .zip(distances.par_iter_mut())
        .enumerate()
        .zip(point_sq_norms)
        .for_each(|((row, (label, distance)), &x_sq)| {
            let x = &data[row * row_stride..row * row_stride + dim];
            let (mut best, mut best_index) = (f32::MAX, u32::MAX);
            for (c, (centroid, &c_sq)) in centroids
                .chunks_exact(dim.max(1))
                .zip(centroid_sq_norms)
                .enumerate()
            {
                let score = c_sq - 2.0 * dot(x, centroid);
                if score < best {
                    (best, best_index) = (score, c as u32);
                }
            }
            *label = best_index;
            *distance = (x_sq + best).max(0.0);
        });
}

/// Eight partial sums, so the compiler can keep them in vector lanes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}
