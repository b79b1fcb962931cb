//! The Avengers-Pro router: cluster centroids over query embeddings, per-cluster model
//! statistics, and routing of new queries by a softmax-weighted vote of their nearest clusters.
//!
//! Training ([`Router::fit`]) takes embeddings already on the device, so an evaluation can embed
//! once and train many routers. Routing ([`Router::route`]) runs batched on the device: one
//! matmul for the distances to every centroid, then one fused kernel ([`kernels::top_p_vote`])
//! picks the `top_p` nearest, weighs them by a softmax and sums their per-model votes; only the
//! totals and the chosen clusters come back to the host.

mod artifact;
mod scoring;
mod stats;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

pub use crate::embed::EmbeddingInfo;
pub use artifact::ROUTER_FILE;
pub use scoring::{ReferenceScoring, Scoring};
pub use stats::ClusterStats;

use crate::cluster::{KMeans, KMeansConfig};
use crate::error::{Error, Result};
use crate::kernels;
use crate::records::RoutingData;

/// How queries are routed; stored in the router as its defaults and overridable per call.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RouteParams {
    pub scoring: Scoring,
    /// Nearest clusters that vote.
    pub top_p: usize,
    /// Sharpness of the vote weights `softmax(−β·distance)`.
    pub beta: f64,
}

impl Default for RouteParams {
    fn default() -> Self {
        Self {
            scoring: Scoring::default(),
            top_p: 4,
            beta: 9.0,
        }
    }
}

impl RouteParams {
    pub fn validate(&self) -> Result<()> {
        self.scoring.validate()?;
        if self.top_p == 0 {
            return Err(Error::Invalid("--top-p must be at least 1".into()));
        }
        if !self.beta.is_finite() || self.beta < 0.0 {
            return Err(Error::Invalid(format!(
                "--beta must be a finite number ≥ 0, got {}",
                self.beta
            )));
        }
        Ok(())
    }
}

/// How the router was trained, kept in `router.json` for provenance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// The records file, as given.
    pub data: String,
    pub train_queries: usize,
    pub clusters: usize,
    pub n_init: usize,
    pub max_iter: usize,
    pub tol: f64,
    pub seed: u64,
    pub inertia: f64,
    pub iterations: usize,
}

/// A trained router on a device.
#[derive(Debug, Clone)]
pub struct Router {
    /// Model names; every per-model vector follows this order, which also breaks ties.
    pub models: Vec<String>,
    /// `(clusters, dim)` f32 on the routing device.
    pub centroids: Tensor,
    pub clusters: Vec<ClusterStats>,
    pub embedding: EmbeddingInfo,
    pub defaults: RouteParams,
    pub training: TrainingInfo,
}

impl Router {
    /// Clusters the training queries' `embeddings` (`(rows.len(), dim)`, L2-normalised, on the
    /// device) and gathers per-cluster statistics of `data.records[rows]`.
    pub fn fit(
        embeddings: &Tensor,
        data: &RoutingData,
        rows: &[usize],
        kmeans: &KMeansConfig,
        embedding: EmbeddingInfo,
        defaults: RouteParams,
    ) -> Result<Self> {
        defaults.validate()?;
        if embeddings.dim(0)? != rows.len() {
            return Err(Error::Invalid(format!(
                "{} embeddings for {} training records",
                embeddings.dim(0)?,
                rows.len()
            )));
        }
        let fitted = KMeans::fit(embeddings, kmeans)?;
        let records: Vec<_> = rows.iter().map(|&i| &data.records[i]).collect();
        let clusters = ClusterStats::compute(&records, &fitted.labels, kmeans.k, data.models.len());
        Ok(Self {
            models: data.models.clone(),
            centroids: fitted.centroids,
            clusters,
            embedding,
            defaults,
            training: TrainingInfo {
                data: data.path.display().to_string(),
                train_queries: rows.len(),
                clusters: kmeans.k,
                n_init: kmeans.n_init,
                max_iter: kmeans.max_iter,
                tol: kmeans.tol,
                seed: kmeans.seed,
                inertia: fitted.inertia,
                iterations: fitted.iterations,
            },
        })
    }

    pub fn device(&self) -> &Device {
        self.centroids.device()
    }

    /// Routes a batch of query embeddings (`(n, dim)`, L2-normalised) on the router's device.
    pub fn route(&self, queries: &Tensor, params: &RouteParams) -> Result<RoutedBatch> {
        params.validate()?;
        let (k, m) = (self.clusters.len(), self.models.len());
        let top_p = params.top_p.min(k);
        let votes: Vec<f32> = self
            .clusters
            .iter()
            .flat_map(|stats| params.scoring.cluster_votes(stats))
            .map(|v| v as f32)
            .collect();
        let votes = Tensor::from_vec(votes, (k, m), self.device())?;
        let queries = queries.to_device(self.device())?.to_dtype(DType::F32)?;
        let n = queries.dim(0)?;
        let mut batch = RoutedBatch {
            models: m,
            top_p,
            ..Default::default()
        };
        // Tiles bound the (rows, clusters) distance matrix for any number of queries.
        const TILE_ROWS: usize = 65_536;
        for start in (0..n).step_by(TILE_ROWS) {
            let rows = TILE_ROWS.min(n - start);
            let q = queries.narrow(0, start, rows)?;
            // Cosine distance to each centroid as stored (not re-normalised): 1 − q·c.
            let distances = q.matmul(&self.centroids.t()?)?.affine(-1.0, 1.0)?;
            let fused = kernels::active(self.device())
                && (!self.device().is_cuda() || top_p <= kernels::MAX_KERNEL_TOP_P);
            let vote = if fused {
                kernels::top_p_vote(&distances, &votes, top_p, params.beta as f32)?
            } else {
                vote_by_generic_ops(&distances, &votes, top_p, params.beta)?
            };
            let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            batch.totals.extend(host(&vote.totals)?);
            batch
                .clusters
                .extend(vote.clusters.flatten_all()?.to_vec1::<u32>()?);
            batch.distances.extend(host(&vote.distances)?);
            batch.weights.extend(host(&vote.weights)?);
        }
        Ok(batch)
    }
}

/// [`kernels::top_p_vote`] composed of candle's generic ops, for devices without the kernel: a
/// full sort of each row for the `top_p` nearest, a gather, a softmax, and the weighted votes.
fn vote_by_generic_ops(
    distances: &Tensor,
    votes: &Tensor,
    top_p: usize,
    beta: f64,
) -> Result<kernels::Vote> {
    let (rows, models) = (distances.dim(0)?, votes.dim(1)?);
    let nearest = distances
        .arg_sort_last_dim(true)?
        .narrow(1, 0, top_p)?
        .contiguous()?;
    let near = distances.gather(&nearest, 1)?;
    let weights = candle_nn::ops::softmax_last_dim(&near.affine(-beta, 0.0)?)?;
    // Σ over the p nearest clusters of weight × vote; summing p terms element by element (not
    // a matmul) keeps equal votes giving exactly equal totals, so ties stay ties.
    let totals = votes
        .index_select(&nearest.flatten_all()?, 0)?
        .reshape((rows, top_p, models))?
        .broadcast_mul(&weights.unsqueeze(2)?)?
        .sum(1)?;
    Ok(kernels::Vote {
        totals,
        clusters: nearest,
        distances: near,
        weights,
    })
}

/// Routing results of a batch of queries, on the host.
#[derive(Debug, Clone, Default)]
pub struct RoutedBatch {
    pub models: usize,
    pub top_p: usize,
    /// `(queries, models)`: each model's total vote.
    pub totals: Vec<f32>,
    /// `(queries, top_p)`: the nearest clusters, nearest first.
    pub clusters: Vec<u32>,
    /// `(queries, top_p)`: their cosine distances.
    pub distances: Vec<f32>,
    /// `(queries, top_p)`: their vote weights.
    pub weights: Vec<f32>,
}

impl RoutedBatch {
    pub fn len(&self) -> usize {
        self.totals.len().checked_div(self.models).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Query `i`'s total per model.
    pub fn totals(&self, i: usize) -> &[f32] {
        &self.totals[i * self.models..(i + 1) * self.models]
    }

    /// Models by descending total; equal totals keep model order.
    pub fn ranking(&self, i: usize) -> Vec<usize> {
        let totals = self.totals(i);
        let mut order: Vec<usize> = (0..self.models).collect();
        order.sort_by(|&a, &b| totals[b].total_cmp(&totals[a]));
        order
    }

    /// The chosen model: the highest total, the first in model order among equals.
    pub fn best(&self, i: usize) -> usize {
        let totals = self.totals(i);
        (0..self.models).fold(0, |best, m| if totals[m] > totals[best] { m } else { best })
    }

    /// Query `i`'s nearest clusters as (cluster, distance, weight), nearest first.
    pub fn nearest(&self, i: usize) -> impl Iterator<Item = (usize, f32, f32)> + '_ {
        let span = i * self.top_p..(i + 1) * self.top_p;
        self.clusters[span.clone()]
            .iter()
            .zip(&self.distances[span.clone()])
            .zip(&self.weights[span])
            .map(|((&c, &d), &w)| (c as usize, d, w))
    }
}
