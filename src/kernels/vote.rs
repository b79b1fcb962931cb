//! The routing vote: for each query, the `top_p` nearest clusters, their weights
//! `softmax(−β·distance)` and every model's weighted total.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::{f32_input, host_output, unsupported, Contiguous};
use crate::error::{Error, Result};

/// The largest `top_p` the CUDA kernel takes (one warp lane per chosen cluster).
pub const MAX_KERNEL_TOP_P: usize = 32;

/// A batch's votes, on the inputs' device.
#[derive(Debug, Clone)]
pub struct Vote {
    /// `(queries, models)` f32: each model's total.
    pub totals: Tensor,
    /// `(queries, top_p)` u32: the nearest clusters, nearest first; ties to the lower cluster.
    pub clusters: Tensor,
    /// `(queries, top_p)` f32: their distances.
    pub distances: Tensor,
    /// `(queries, top_p)` f32: their weights.
    pub weights: Tensor,
}

/// `distances`: `(queries, k)` from each query to each cluster (NaN counts as +∞); `votes`:
/// `(k, models)`, each cluster's vote per model. `top_p` must be in `1..=k`, and at most
/// [`MAX_KERNEL_TOP_P`] on CUDA.
pub fn top_p_vote(distances: &Tensor, votes: &Tensor, top_p: usize, beta: f32) -> Result<Vote> {
    let (queries, k) = distances.dims2()?;
    let models = votes.dim(1)?;
    let distances = f32_input(distances, "distances", &[queries, k])?;
    let votes = f32_input(votes, "votes", &[k, models])?;
    if top_p == 0 || top_p > k {
        return Err(Error::Invalid(format!(
            "top_p must be in 1..={k}, got {top_p}"
        )));
    }
    match distances.device() {
        Device::Cpu => {
            let mut out = VoteOutputs::host(queries, models, top_p);
            top_p_vote_cpu(
                Contiguous::of(&distances)?.cpu()?,
                Contiguous::of(&votes)?.cpu()?,
                top_p,
                beta,
                &mut out,
            );
            let cpu = &Device::Cpu;
            Ok(Vote {
                totals: Tensor::from_vec(out.totals, (queries, models), cpu)?,
                clusters: Tensor::from_vec(out.clusters, (queries, top_p), cpu)?,
                distances: Tensor::from_vec(out.distances, (queries, top_p), cpu)?,
                weights: Tensor::from_vec(out.weights, (queries, top_p), cpu)?,
            })
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(device) if top_p <= MAX_KERNEL_TOP_P => {
            super::cuda::top_p_vote(device, &distances, &votes, top_p, beta)
        }
        device => Err(unsupported("top-p vote", device)),
    }
}

/// Host buffers for [`top_p_vote_cpu`]; layouts as in [`Vote`].
#[derive(Debug, Clone, PartialEq)]
pub struct VoteOutputs {
    pub totals: Vec<f32>,
    pub clusters: Vec<u32>,
    pub distances: Vec<f32>,
    pub weights: Vec<f32>,
}

impl VoteOutputs {
    /// Zeroed buffers, or poisoned ones when [`super::poison_outputs`] is on.
    pub fn host(queries: usize, models: usize, top_p: usize) -> Self {
        Self {
            totals: host_output(queries * models),
            clusters: host_output(queries * top_p),
            distances: host_output(queries * top_p),
            weights: host_output(queries * top_p),
        }
    }
}

/// The CPU implementation, one query per task: a partial selection of the `top_p` smallest
/// (distance, cluster) pairs, then the softmax and the totals summed nearest first, term by
/// term, so that equal votes give bit-equal totals. The CUDA kernel computes the same
/// expressions in the same order.
pub fn top_p_vote_cpu(
    distances: &[f32],
    votes: &[f32],
    top_p: usize,
    beta: f32,
    out: &mut VoteOutputs,
) {
    let queries = out.clusters.len() / top_p.max(1);
    let k = distances.len() / queries.max(1);
    let models = out.totals.len() / queries.max(1);
    out.totals
        .par_chunks_exact_mut(models.max(1))
        .zip(out.clusters.par_chunks_exact_mut(top_p))
        .zip(out.distances.par_chunks_exact_mut(top_p))
        .zip(out.weights.par_chunks_exact_mut(top_p))
        .zip(distances.par_chunks_exact(k))
        .for_each(|((((totals, clusters), near), weights), row)| {
            let key = |c: usize| {
                (
                    if row[c].is_nan() {
                        f32::INFINITY
                    } else {
                        row[c]
                    },
                    c,
                )
            };
            let mut order: Vec<usize> = (0..k).collect();
            let by_key = |&a: &usize, &b: &usize| key(a).partial_cmp(&key(b)).expect("no NaN");
            order.select_nth_unstable_by(top_p - 1, by_key);
            order[..top_p].sort_unstable_by(by_key);
            for (j, &c) in order[..top_p].iter().enumerate() {
                clusters[j] = c as u32;
                near[j] = key(c).0;
            }
            let top_logit = -beta * near[0];
            for (w, &d) in weights.iter_mut().zip(near.iter()) {
                *w = (-beta * d - top_logit).exp();
            }
            let sum: f32 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= sum);
            for (m, total) in totals.iter_mut().enumerate() {
                *total = 0.0;
                for (&c, &w) in clusters.iter().zip(weights.iter()) {
                    *total += w * votes[c as usize * models + m];
                }
            }
        });
}
