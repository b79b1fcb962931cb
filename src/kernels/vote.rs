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
    /// `(queries, members·top_p)` u32: each member's nearest clusters in turn, nearest first
    /// (ties to the lower cluster), as columns of `distances`.
    pub clusters: Tensor,
    /// `(queries, members·top_p)` f32: their distances.
    pub distances: Tensor,
    /// `(queries, members·top_p)` f32: their weights, summing to 1 per query.
    pub weights: Tensor,
}

/// `distances`: `(queries, members·k)` from each query to each cluster of `members`
/// clusterings of `k` clusters side by side (NaN counts as +∞); `votes`: `(members·k, models)`,
/// each cluster's vote per model. Each member votes with its `top_p` nearest clusters and the
/// totals are the mean of the members'. `top_p` must be in `1..=k`, and at most
/// [`MAX_KERNEL_TOP_P`] on CUDA.
pub fn top_p_vote(
    distances: &Tensor,
    votes: &Tensor,
    top_p: usize,
    beta: f32,
    members: usize,
) -> Result<Vote> {
    let (queries, columns) = distances.dims2()?;
    let models = votes.dim(1)?;
    if members == 0 || !columns.is_multiple_of(members) {
        return Err(Error::Invalid(format!(
            "{columns} clusters are not {members} equal clusterings"
        )));
    }
    let k = columns / members;
    let distances = f32_input(distances, "distances", &[queries, columns])?;
    let votes = f32_input(votes, "votes", &[columns, models])?;
    if top_p == 0 || top_p > k {
        return Err(Error::Invalid(format!(
            "top_p must be in 1..={k}, got {top_p}"
        )));
    }
    match distances.device() {
        Device::Cpu => {
            let mut out = VoteOutputs::host(queries, models, members * top_p);
            top_p_vote_cpu(
                Contiguous::of(&distances)?.cpu()?,
                Contiguous::of(&votes)?.cpu()?,
                top_p,
                members,
                beta,
                &mut out,
            );
            let cpu = &Device::Cpu;
            let chosen = (queries, members * top_p);
            Ok(Vote {
                totals: Tensor::from_vec(out.totals, (queries, models), cpu)?,
                clusters: Tensor::from_vec(out.clusters, chosen, cpu)?,
                distances: Tensor::from_vec(out.distances, chosen, cpu)?,
                weights: Tensor::from_vec(out.weights, chosen, cpu)?,
            })
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(device) if top_p <= MAX_KERNEL_TOP_P => {
            by_member(&distances, &votes, members, |d, v| {
                super::cuda::top_p_vote(device, d, v, top_p, beta)
            })
        }
        device => Err(unsupported("top-p vote", device)),
    }
}

/// A vote of `members` side-by-side clusterings from `one`, a vote of a single clustering:
/// each member's vote in turn, totals averaged, clusters indexed into the side-by-side
/// columns, weights shared out. One member is `one` itself.
pub fn by_member(
    distances: &Tensor,
    votes: &Tensor,
    members: usize,
    mut one: impl FnMut(&Tensor, &Tensor) -> Result<Vote>,
) -> Result<Vote> {
    if members == 1 {
        return one(distances, votes);
    }
    let k = distances.dim(1)? / members;
    let mut parts = Vec::with_capacity(members);
    for member in 0..members {
        let d = distances.narrow(1, member * k, k)?.contiguous()?;
        let v = votes.narrow(0, member * k, k)?.contiguous()?;
        let vote = one(&d, &v)?;
        let offset = Tensor::new(&[(member * k) as u32], distances.device())?;
        parts.push(Vote {
            clusters: vote.clusters.broadcast_add(&offset)?,
            ..vote
        });
    }
    let cat = |f: fn(&Vote) -> &Tensor| -> Result<Tensor> {
        Ok(Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 1)?)
    };
    let share = 1.0 / members as f64;
    let mut totals = parts[0].totals.clone();
    for part in &parts[1..] {
        totals = (totals + &part.totals)?;
    }
    Ok(Vote {
        totals: totals.affine(share, 0.0)?,
        clusters: cat(|v| &v.clusters)?,
        distances: cat(|v| &v.distances)?,
        weights: cat(|v| &v.weights)?.affine(share, 0.0)?,
    })
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

/// The CPU implementation, one query per task; the members (the side-by-side clusterings,
/// `out` has `members·top_p` columns) one after the other. Per member: a partial selection of
/// the `top_p` smallest (distance, cluster) pairs, then the softmax and the totals summed
/// nearest first, term by term, so that equal votes give bit-equal totals (the CUDA kernel
/// computes the same expressions in the same order); the members' totals are then summed in
/// member order and scaled by 1/members, their weights scaled alike. With one member nothing
/// is scaled.
pub fn top_p_vote_cpu(
    distances: &[f32],
    votes: &[f32],
    top_p: usize,
    members: usize,
    beta: f32,
    out: &mut VoteOutputs,
) {
    let chosen = members * top_p;
    let queries = out.clusters.len() / chosen.max(1);
    let columns = distances.len() / queries.max(1);
    let k = columns / members.max(1);
    let models = out.totals.len() / queries.max(1);
    out.totals
        .par_chunks_exact_mut(models.max(1))
        .zip(out.clusters.par_chunks_exact_mut(chosen.max(1)))
        .zip(out.distances.par_chunks_exact_mut(chosen.max(1)))
        .zip(out.weights.par_chunks_exact_mut(chosen.max(1)))
        .zip(distances.par_chunks_exact(columns.max(1)))
        .for_each(|((((totals, clusters), near), weights), row)| {
            let mut order: Vec<usize> = Vec::with_capacity(k);
            let mut member_totals = vec![0f32; models];
            for member in 0..members {
                let row = &row[member * k..(member + 1) * k];
                let span = member * top_p..(member + 1) * top_p;
                let (clusters, near, weights) = (
                    &mut clusters[span.clone()],
                    &mut near[span.clone()],
                    &mut weights[span],
                );
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
                order.clear();
                order.extend(0..k);
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
                let votes = &votes[member * k * models..];
                for (m, total) in member_totals.iter_mut().enumerate() {
                    *total = 0.0;
                    for (&c, &w) in clusters.iter().zip(weights.iter()) {
                        *total += w * votes[c as usize * models + m];
                    }
                }
                let offset = (member * k) as u32;
                clusters.iter_mut().for_each(|c| *c += offset);
                if member == 0 {
                    totals.copy_from_slice(&member_totals);
                } else {
                    totals
                        .iter_mut()
                        .zip(&member_totals)
                        .for_each(|(t, m)| *t += m);
                }
            }
            if members > 1 {
                let share = 1.0 / members as f32;
                totals.iter_mut().for_each(|t| *t *= share);
                weights.iter_mut().for_each(|w| *w *= share);
            }
        });
}
