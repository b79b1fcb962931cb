//! The Avengers-Pro router: cluster centroids over query embeddings, per-cluster model
//! statistics, and routing of new queries by a softmax-weighted vote of their nearest clusters.
//!
//! Training ([`Router::fit`]) takes embeddings already on the device, so an evaluation can embed
//! once and train many routers. Routing ([`Router::route`]) runs batched on the device: one
//! matmul for the distances to every centroid, then one fused kernel ([`kernels::top_p_vote`])
//! picks the `top_p` nearest, weighs them by a softmax and sums their per-model votes; only the
//! totals and the chosen clusters come back to the host.
//!
//! Two refinements of the paper's estimator, both off at their defaults' paper values
//! (`prior_strength` 0, `bag` 1): cluster statistics shrunk toward each model's global means
//! ([`ClusterStats::estimates`]), and bagging, where one router holds `bag` k-means solutions of
//! different seeds and a query's totals are the mean of theirs.
//!
//! After training, a router keeps learning: [`Router::observe`] takes in an outcome (how well
//! a model answered a routed query) in the cells of the clusters that voted for it ([`online`]),
//! and [`Router::explore`] sometimes leaves the greedy choice so that a model that improved is
//! found again.

mod artifact;
mod decision;
mod explore;
mod online;
mod pool;
mod profile;
mod scoring;
mod stats;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

pub use crate::embed::EmbeddingInfo;
pub use artifact::ROUTER_FILE;
pub use explore::{Exploration, CHANGE_WORTH_FINDING, OPTIMISM};
pub use online::{
    logit_shift, shift_accuracy, CellEvidence, ClusterEvidence, Evidence, FeedbackSource, Learned,
    Observation, Residuals, SHIFT_HALF_LIFE_FACTOR, SHIFT_SIGNIFICANCE, SHIFT_SPREAD,
    VARIANCE_PRIOR,
};
pub use pool::{read_prices, ModelPrior, PoolChange, Price, Repriced};
pub use scoring::{ReferenceScoring, Scoring};
pub use stats::{ClusterStats, Estimates, Priors};

use crate::cluster::{KMeans, KMeansConfig};
use crate::error::{Error, Result};
use crate::kernels;
use crate::records::RoutingData;

/// How queries are routed; stored in the router as its defaults and overridable per call. The
/// [`Default`] is the paper's (top-p 4, β 9, per-cluster means); the command line starts from
/// [`RouteParams::recommended`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RouteParams {
    pub scoring: Scoring,
    /// Nearest clusters that vote.
    pub top_p: usize,
    /// Sharpness of the vote weights `softmax(−β·distance)`.
    pub beta: f64,
    /// Pseudo-answers at a model's global mean added to each cluster's statistics (0: the
    /// paper's per-cluster means).
    #[serde(default)]
    pub prior_strength: f64,
}

impl Default for RouteParams {
    fn default() -> Self {
        Self {
            scoring: Scoring::default(),
            top_p: 4,
            beta: 9.0,
            prior_strength: 0.0,
        }
    }
}

/// k-means solutions `kroute train`/`eval` bag by default (see [`RouteParams::recommended`]).
pub const RECOMMENDED_BAG: usize = 3;

impl RouteParams {
    /// kroute's defaults, chosen by cross-validation on the bundled RouterBench data with two
    /// embedders (docs/EVALUATION.md): the paper's top-p and β, with cluster statistics shrunk
    /// by 5 pseudo-answers at each model's global mean (and [`RECOMMENDED_BAG`] k-means
    /// solutions). [`RouteParams::default`] is the paper's router exactly.
    pub fn recommended() -> Self {
        Self {
            prior_strength: 5.0,
            ..Self::default()
        }
    }

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
        if !self.prior_strength.is_finite() || self.prior_strength < 0.0 {
            return Err(Error::Invalid(format!(
                "--prior-strength must be a finite number ≥ 0, got {}",
                self.prior_strength
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
    /// Inertia and Lloyd iterations of the first (or only) k-means solution.
    pub inertia: f64,
    pub iterations: usize,
    /// k-means solutions held (bagging); member b used seed `seed + b·BAG_SEED_STEP`.
    #[serde(default = "one")]
    pub bag: usize,
    /// Set when the clusters, bag and routing defaults were chosen by `kroute train --auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<TuningInfo>,
    /// Each model's mean seconds per answer over the training rows that give one
    /// (`usages.<model>.latency_s`): what a server weighs latency with until it has measured
    /// the model itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mean_latency_s: BTreeMap<String, f64>,
}

/// How a router's settings were chosen by cross-validation on its training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuningInfo {
    pub folds: usize,
    pub settings_tried: usize,
    /// The chosen setting's mean (and spread) over the folds of the area under the router's
    /// accuracy–cost frontier.
    pub area: f64,
    pub area_std: f64,
}

fn one() -> usize {
    1
}

/// Seed distance between the k-means solutions of a bagged router.
pub const BAG_SEED_STEP: u64 = 1_000_003;

/// A trained router on a device.
#[derive(Debug, Clone)]
pub struct Router {
    /// Model names; every per-model vector follows this order, which also breaks ties.
    pub models: Vec<String>,
    /// `(bag·clusters, dim)` f32 on the routing device: the `bag` k-means solutions one after
    /// the other.
    pub centroids: Tensor,
    /// Statistics of every centroid's cluster, in the same order.
    pub clusters: Vec<ClusterStats>,
    /// k-means solutions whose votes are averaged (1: the paper's router).
    pub bag: usize,
    pub embedding: EmbeddingInfo,
    pub defaults: RouteParams,
    pub training: TrainingInfo,
    /// Outcomes taken in since training ([`Router::observe`]).
    learned: Learned,
    /// Models added, removed or repriced since training ([`pool`]).
    pool: Vec<PoolChange>,
    /// The `(clusters, models)` vote table of the last routing settings used; rebuilding it
    /// from the statistics was most of a lone query's routing time at bag > 1.
    votes: VoteCache,
    /// Added models' accuracy profiles ([`pool`]), computed on first use.
    profiles: ProfileCache,
    /// Changed models' accuracy profiles learned again from their outcomes, computed on first
    /// use after an outcome.
    relearned: ProfileCache,
}

/// A router's vote tables for the routing settings and model masks used last (a server's
/// tenants each route with their own), as of one [`Learned::version`] each. A clone starts
/// empty (the clone's clusters may be narrowed, as in [`Router::first_members`]).
#[derive(Debug, Default)]
struct VoteCache(std::sync::Mutex<Vec<VoteTable>>);

/// Vote tables kept; the least recently used goes first.
const VOTE_TABLES: usize = 16;

#[derive(Debug)]
struct VoteTable {
    params: RouteParams,
    allowed: ModelMask,
    version: u64,
    /// The table on the host, whose changed rows are rebuilt after outcomes arrive.
    host: Vec<f32>,
    tensor: Tensor,
}

/// Per cluster, each added model's accuracy prior; a clone starts empty, like [`VoteCache`].
#[derive(Debug, Default)]
struct ProfileCache(std::sync::OnceLock<Vec<Vec<Option<f64>>>>);

impl Clone for ProfileCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Clone for VoteCache {
    fn clone(&self) -> Self {
        Self::default()
    }
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
        Self::fit_bagged(embeddings, data, rows, kmeans, 1, embedding, defaults)
    }

    /// [`Router::fit`] with `bag` k-means solutions (seeds `seed + b·BAG_SEED_STEP`) whose votes
    /// are averaged when routing.
    pub fn fit_bagged(
        embeddings: &Tensor,
        data: &RoutingData,
        rows: &[usize],
        kmeans: &KMeansConfig,
        bag: usize,
        embedding: EmbeddingInfo,
        defaults: RouteParams,
    ) -> Result<Self> {
        defaults.validate()?;
        if bag == 0 {
            return Err(Error::Invalid("--bag must be at least 1".into()));
        }
        if embeddings.dim(0)? != rows.len() {
            return Err(Error::Invalid(format!(
                "{} embeddings for {} training records",
                embeddings.dim(0)?,
                rows.len()
            )));
        }
        let records: Vec<_> = rows.iter().map(|&i| &data.records[i]).collect();
        let mut centroids = Vec::with_capacity(bag);
        let mut clusters = Vec::with_capacity(bag * kmeans.k);
        let mut first = None;
        for member in 0..bag {
            let config = KMeansConfig {
                seed: kmeans.seed.wrapping_add(member as u64 * BAG_SEED_STEP),
                ..kmeans.clone()
            };
            let fitted = KMeans::fit(embeddings, &config)?;
            clusters.extend(ClusterStats::compute(
                &records,
                &fitted.labels,
                kmeans.k,
                data.models.len(),
            ));
            first.get_or_insert((fitted.inertia, fitted.iterations));
            centroids.push(fitted.centroids);
        }
        let (inertia, iterations) = first.expect("bag ≥ 1");
        Ok(Self {
            models: data.models.clone(),
            centroids: Tensor::cat(&centroids, 0)?,
            clusters,
            bag,
            embedding,
            defaults,
            learned: Learned::default(),
            pool: Vec::new(),
            votes: VoteCache::default(),
            profiles: ProfileCache::default(),
            relearned: ProfileCache::default(),
            training: TrainingInfo {
                data: data.path.display().to_string(),
                train_queries: rows.len(),
                clusters: kmeans.k,
                n_init: kmeans.n_init,
                max_iter: kmeans.max_iter,
                tol: kmeans.tol,
                seed: kmeans.seed,
                inertia,
                iterations,
                bag,
                tuning: None,
                mean_latency_s: mean_latencies(data, rows),
            },
        })
    }

    /// A router from its parts: `bag` k-means solutions' centroids one after the other, and
    /// their clusters' statistics in the same order.
    pub fn from_parts(
        models: Vec<String>,
        centroids: Tensor,
        clusters: Vec<ClusterStats>,
        bag: usize,
        embedding: EmbeddingInfo,
        defaults: RouteParams,
        training: TrainingInfo,
    ) -> Self {
        Self {
            models,
            centroids,
            clusters,
            bag,
            embedding,
            defaults,
            training,
            learned: Learned::default(),
            pool: Vec::new(),
            votes: VoteCache::default(),
            profiles: ProfileCache::default(),
            relearned: ProfileCache::default(),
        }
    }

    /// Outcomes taken in since training.
    pub fn learned(&self) -> &Learned {
        &self.learned
    }

    /// Replaces what the router has learned (read back from a file, or carried over from a
    /// router with the same clusters); its cells must be laid out for this router's clusters
    /// and models.
    pub fn set_learned(&mut self, learned: Learned) -> Result<()> {
        let cells = self.clusters.len() * self.models.len();
        if !learned.cells().is_empty() && learned.cells().len() != cells {
            return Err(Error::Invalid(format!(
                "learned statistics for {} cells, the router has {cells}",
                learned.cells().len()
            )));
        }
        self.learned = learned;
        self.statistics_changed();
        Ok(())
    }

    /// Drops the vote table, which the statistics it was built from no longer match.
    fn statistics_changed(&mut self) {
        *self.votes.0.lock().expect("vote cache lock") = Vec::new();
        self.profiles = ProfileCache::default();
        self.relearned = ProfileCache::default();
    }

    /// Clusters per k-means solution.
    pub fn clusters_per_member(&self) -> usize {
        self.clusters.len() / self.bag.max(1)
    }

    /// Each model's global means over the training queries (from the first k-means solution;
    /// every solution partitions the same queries); for a model added after training, its
    /// declared prior or its means corrected for the queries it was evaluated on.
    pub fn priors(&self) -> Priors {
        self.priors_with_pool()
    }

    /// Each model's accuracy and cost in `cluster` as routing sees them: the training
    /// statistics with the outcomes learned since, shrunk with `prior_strength`.
    pub fn estimates(&self, cluster: usize, prior_strength: f64) -> Estimates {
        self.estimates_with(cluster, &self.priors(), prior_strength)
    }

    fn estimates_with(&self, cluster: usize, priors: &Priors, prior_strength: f64) -> Estimates {
        self.clusters[cluster].estimates(
            &self.cluster_priors(cluster, priors),
            prior_strength,
            self.evidence(cluster),
        )
    }

    /// Each model's score in `cluster` under `params` (shrinkage included), in model order;
    /// `None` where the model has no vote there.
    pub fn cluster_scores(&self, cluster: usize, params: &RouteParams) -> Vec<Option<f64>> {
        params
            .scoring
            .cluster_scores(&self.estimates(cluster, params.prior_strength))
    }

    /// What each model is expected to cost on query `i` of `routed`, in model order: the
    /// vote-weighted mean of its cost estimates in the voting clusters where it has data
    /// (`None` where it has none).
    pub fn expected_costs(
        &self,
        routed: &RoutedBatch,
        i: usize,
        params: &RouteParams,
    ) -> Vec<Option<f64>> {
        let votes: Vec<(usize, f32)> = routed.nearest(i).map(|(c, _, w)| (c, w)).collect();
        self.expected(&votes, params.prior_strength).cost
    }

    /// Each model's accuracy and cost expected for a query whose clusters vote with these
    /// `(cluster, weight)`s: the vote-weighted means of its estimates in the clusters where it
    /// has data (`None` where it has none).
    pub fn expected(&self, votes: &[(usize, f32)], prior_strength: f64) -> Estimates {
        let priors = self.priors();
        let models = self.models.len();
        let (mut accuracy, mut cost) = (vec![(0.0, 0.0); models], vec![(0.0, 0.0); models]);
        for &(cluster, weight) in votes {
            let estimates = self.estimates_with(cluster, &priors, prior_strength);
            let weight = weight as f64;
            for (sums, values) in [
                (&mut accuracy, &estimates.accuracy),
                (&mut cost, &estimates.cost),
            ] {
                for (sum, value) in sums.iter_mut().zip(values) {
                    if let Some(value) = value {
                        *sum = (sum.0 + weight * value, sum.1 + weight);
                    }
                }
            }
        }
        let means = |sums: Vec<(f64, f64)>| {
            sums.into_iter()
                .map(|(total, weight)| (weight > 0.0).then(|| total / weight))
                .collect()
        };
        Estimates {
            accuracy: means(accuracy),
            cost: means(cost),
        }
    }

    /// Each model's total for a query whose clusters vote with these `(cluster, weight)`s (as
    /// a decision logged them), under `params` among the `allowed` models: what
    /// [`Router::route_among`] gives a query with those nearest clusters, without its
    /// embedding. The router must have the clusters the votes were taken in.
    pub fn revote(
        &self,
        votes: &[(usize, f32)],
        params: &RouteParams,
        allowed: ModelMask,
    ) -> Result<Vec<f32>> {
        params.validate()?;
        if let Some(&(cluster, _)) = votes.iter().find(|(c, _)| *c >= self.clusters.len()) {
            return Err(Error::Invalid(format!(
                "cluster {cluster} is not one of the router's {} clusters",
                self.clusters.len()
            )));
        }
        let priors = self.priors();
        let mut totals = vec![0.0f32; self.models.len()];
        for &(cluster, weight) in votes {
            let mut estimates = self.estimates_with(cluster, &priors, params.prior_strength);
            allowed.restrict(&mut estimates);
            for (total, vote) in totals
                .iter_mut()
                .zip(params.scoring.cluster_votes(&estimates))
            {
                *total += weight * vote as f32;
            }
        }
        Ok(totals)
    }

    /// Takes in one outcome (see [`Observation`]): every voting cluster's cell of the model
    /// moves toward the score (and the cost, when given) by its vote weight, forgetting with a
    /// half-life of `half_life` observations per cell when set. The next routing uses it.
    pub fn observe(&mut self, observation: &Observation, half_life: Option<f64>) -> Result<()> {
        self.check_observation(observation, half_life)?;
        let expected = self.trained_accuracy(&observation.votes, observation.model);
        let everywhere = self.learned.add(
            observation,
            expected,
            self.bag,
            self.clusters.len(),
            self.models.len(),
            half_life,
        );
        // Profiles learned again depend on the shifted models' outcomes alone.
        if everywhere {
            self.relearned = ProfileCache::default();
        }
        Ok(())
    }

    /// What the training statistics alone expect of `model` on a query with these `votes`:
    /// the vote-weighted mean of its training answers in each voting cluster (the shrunk
    /// estimate where it has none). Not the shrunk estimates throughout: a model is chosen where
    /// it is strong, where shrinkage toward its global mean sells it short, and its outcomes
    /// would stand out of them with no change at all.
    fn trained_accuracy(&self, votes: &[(u32, f32)], model: usize) -> Option<f64> {
        // Needed only where the model has no training answers.
        let mut global = None;
        let (mut sum, mut weight) = (0.0, 0.0);
        for &(cluster, w) in votes {
            let stats = &self.clusters[cluster as usize];
            let trained = match stats.count[model] > 0 {
                true => stats.accuracy[model],
                false => {
                    let global = global.get_or_insert_with(|| self.priors());
                    let priors = self.cluster_priors(cluster as usize, global);
                    stats
                        .estimates(&priors, self.defaults.prior_strength, None)
                        .accuracy[model]
                }
            };
            if let Some(accuracy) = trained {
                sum += w as f64 * accuracy;
                weight += w as f64;
            }
        }
        (weight > 0.0).then(|| sum / weight)
    }

    /// Why `observation` cannot be taken in, if it cannot.
    fn check_observation(&self, observation: &Observation, half_life: Option<f64>) -> Result<()> {
        let invalid = |message: String| Err(Error::Invalid(message));
        if observation.model >= self.models.len() {
            return invalid(format!(
                "outcome for model {} of a router with {}",
                observation.model,
                self.models.len()
            ));
        }
        if !(0.0..=1.0).contains(&observation.score) {
            return invalid(format!(
                "a score must be in [0, 1], got {}",
                observation.score
            ));
        }
        if let Some(cost) = observation.cost.filter(|c| !(c.is_finite() && *c >= 0.0)) {
            return invalid(format!("a cost must be a finite number ≥ 0, got {cost}"));
        }
        if let Some(h) = half_life.filter(|h| !(h.is_finite() && *h > 0.0)) {
            return invalid(format!("the half-life must be a positive number, got {h}"));
        }
        if observation.votes.is_empty() {
            return invalid("an outcome needs the clusters that voted for its query".into());
        }
        for &(cluster, weight) in &observation.votes {
            if cluster as usize >= self.clusters.len() || !(weight.is_finite() && weight >= 0.0) {
                return invalid(format!(
                    "vote ({cluster}, {weight}): expected a cluster below {} with a weight ≥ 0",
                    self.clusters.len()
                ));
            }
        }
        Ok(())
    }

    /// The outcome `score` (and `cost`) of `model` on query `i` of `routed`, for
    /// [`Router::observe`].
    pub fn observation(
        routed: &RoutedBatch,
        i: usize,
        model: usize,
        score: f64,
        cost: Option<f64>,
    ) -> Observation {
        Observation {
            votes: routed
                .nearest(i)
                .map(|(cluster, _, weight)| (cluster as u32, weight))
                .collect(),
            model,
            score,
            cost,
        }
    }

    /// Routes `queries` (`(n, dim)`, L2-normalised) with `params` to find the clusters that
    /// vote for each, then takes in query `i`'s `outcomes[i]`: (model, score, cost) each.
    /// Returns the outcomes taken in; `source` names them in the router's provenance.
    pub fn observe_queries(
        &mut self,
        queries: &Tensor,
        outcomes: &[Vec<(usize, f64, Option<f64>)>],
        params: &RouteParams,
        half_life: Option<f64>,
        source: &str,
    ) -> Result<u64> {
        if queries.dim(0)? != outcomes.len() {
            return Err(Error::Invalid(format!(
                "{} queries for {} lists of outcomes",
                queries.dim(0)?,
                outcomes.len()
            )));
        }
        let routed = self.route(queries, params)?;
        let mut taken = 0;
        for (i, outcomes) in outcomes.iter().enumerate() {
            for &(model, score, cost) in outcomes {
                self.observe(
                    &Self::observation(&routed, i, model, score, cost),
                    half_life,
                )?;
                taken += 1;
            }
        }
        self.learned.note_source(source, taken, half_life);
        Ok(taken)
    }

    /// Provenance of outcomes taken in one by one with [`Router::observe`].
    pub fn note_feedback_source(
        &mut self,
        source: &str,
        observations: u64,
        half_life: Option<f64>,
    ) {
        self.learned.note_source(source, observations, half_life);
    }

    /// A digest of the clusters (bag and every centroid's bits): two routers with the same
    /// fingerprint assign every query to the same clusters, so what one learned applies to
    /// the other.
    pub fn clusters_fingerprint(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let centroids = self.centroids.flatten_all()?.to_vec1::<f32>()?;
        let mut hash = Sha256::new();
        hash.update((self.bag as u64).to_le_bytes());
        hash.update((self.embedding.dim as u64).to_le_bytes());
        for x in centroids {
            hash.update(x.to_le_bytes());
        }
        Ok(hex::encode(hash.finalize()))
    }

    /// The first `bag` members of this router (a router with fewer k-means solutions).
    pub fn first_members(&self, bag: usize) -> Result<Router> {
        if bag == 0 || bag > self.bag {
            return Err(Error::Invalid(format!(
                "the router holds {} k-means solutions, not {bag}",
                self.bag
            )));
        }
        let k = self.clusters_per_member();
        Ok(Router {
            centroids: self.centroids.narrow(0, 0, bag * k)?,
            clusters: self.clusters[..bag * k].to_vec(),
            learned: self.learned.first_clusters(bag * k, self.models.len()),
            bag,
            training: TrainingInfo {
                bag,
                ..self.training.clone()
            },
            ..self.clone()
        })
    }

    pub fn device(&self) -> &Device {
        self.centroids.device()
    }

    /// Each cluster's vote per model under `params`, `(bag·clusters, models)` on the device:
    /// built once per scoring and prior strength, then reused, with only the rows of clusters
    /// that took in outcomes rebuilt.
    fn vote_table(&self, params: &RouteParams, allowed: ModelMask) -> Result<Tensor> {
        let same = |cached: &VoteTable| {
            cached.params.scoring == params.scoring
                && cached.params.prior_strength == params.prior_strength
                && cached.allowed == allowed
        };
        let version = self.learned.version();
        let mut cache = self.votes.0.lock().expect("vote cache lock");
        let models = self.models.len();
        let priors = self.priors();
        let votes = |c: usize| {
            let mut estimates = self.estimates_with(c, &priors, params.prior_strength);
            allowed.restrict(&mut estimates);
            params.scoring.cluster_votes(&estimates)
        };
        let mut table = match cache.iter().position(same) {
            Some(at) => cache.remove(at),
            None => {
                let host: Vec<f32> = (0..self.clusters.len())
                    .flat_map(votes)
                    .map(|v| v as f32)
                    .collect();
                let tensor =
                    Tensor::from_slice(&host, (self.clusters.len(), models), self.device())?;
                VoteTable {
                    params: *params,
                    allowed,
                    version,
                    host,
                    tensor,
                }
            }
        };
        if table.version != version {
            for c in 0..self.clusters.len() {
                if self.learned.changed_since(c, table.version) {
                    let row = &mut table.host[c * models..(c + 1) * models];
                    for (slot, vote) in row.iter_mut().zip(votes(c)) {
                        *slot = vote as f32;
                    }
                }
            }
            table.tensor =
                Tensor::from_slice(&table.host, (self.clusters.len(), models), self.device())?;
            table.version = version;
        }
        let tensor = table.tensor.clone();
        // Most recently used last.
        cache.push(table);
        if cache.len() > VOTE_TABLES {
            cache.remove(0);
        }
        Ok(tensor)
    }

    /// Routes a batch of query embeddings (`(n, dim)`, L2-normalised) on the router's device.
    pub fn route(&self, queries: &Tensor, params: &RouteParams) -> Result<RoutedBatch> {
        self.route_among(queries, params, ModelMask::all())
    }

    /// [`Router::route`] choosing only among the `allowed` models: the others get no vote in
    /// any cluster (each cluster's scores are normalised over the allowed models, as if the
    /// router had only those) and are left out of every ranking.
    pub fn route_among(
        &self,
        queries: &Tensor,
        params: &RouteParams,
        allowed: ModelMask,
    ) -> Result<RoutedBatch> {
        params.validate()?;
        let (k, m) = (self.clusters_per_member(), self.models.len());
        if !(0..m).any(|model| allowed.allows(model)) {
            return Err(Error::Invalid("no model of the router is allowed".into()));
        }
        let top_p = params.top_p.min(k);
        let votes = self.vote_table(params, allowed)?;
        let queries = queries.to_device(self.device())?.to_dtype(DType::F32)?;
        let n = queries.dim(0)?;
        let mut batch = RoutedBatch {
            models: m,
            top_p: top_p * self.bag,
            allowed,
            ..Default::default()
        };
        let fused = kernels::active(self.device())
            && (!self.device().is_cuda() || top_p <= kernels::MAX_KERNEL_TOP_P);
        // Tiles bound the (rows, clusters) distance matrix for any number of queries.
        const TILE_ROWS: usize = 65_536;
        for start in (0..n).step_by(TILE_ROWS) {
            let rows = TILE_ROWS.min(n - start);
            let q = queries.narrow(0, start, rows)?;
            // Cosine distance to every centroid of every member as stored (not re-normalised):
            // 1 − q·c, one matmul.
            let distances = q.matmul(&self.centroids.t()?)?.affine(-1.0, 1.0)?;
            let vote = if fused {
                kernels::top_p_vote(&distances, &votes, top_p, params.beta as f32, self.bag)?
            } else {
                kernels::by_member(&distances, &votes, self.bag, |d, v| {
                    vote_by_generic_ops(d, v, top_p, params.beta)
                })?
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

/// Each model's mean `latency_s` over `rows`, for the models that have any.
fn mean_latencies(data: &RoutingData, rows: &[usize]) -> BTreeMap<String, f64> {
    let mut sums = vec![(0.0, 0usize); data.models.len()];
    for &row in rows {
        for (sum, latency) in sums.iter_mut().zip(&data.records[row].latencies) {
            if let Some(seconds) = latency {
                *sum = (sum.0 + seconds, sum.1 + 1);
            }
        }
    }
    data.models
        .iter()
        .zip(sums)
        .filter(|(_, (_, n))| *n > 0)
        .map(|(model, (total, n))| (model.clone(), total / n as f64))
        .collect()
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

/// The models a routing may choose: all of them, or a subset (a tenant's `allowed_models`) of
/// the first [`ModelMask::MAX_MODELS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelMask(Option<[u64; 4]>);

impl ModelMask {
    /// The most models a subset can name (a router may have more; all of them are then allowed).
    pub const MAX_MODELS: usize = 256;

    pub fn all() -> Self {
        Self(None)
    }

    /// The subset of these model indices.
    pub fn of(models: impl IntoIterator<Item = usize>) -> Result<Self> {
        let mut bits = [0u64; 4];
        for m in models {
            if m >= Self::MAX_MODELS {
                return Err(Error::Invalid(format!(
                    "a model subset can only name the router's first {} models",
                    Self::MAX_MODELS
                )));
            }
            bits[m / 64] |= 1 << (m % 64);
        }
        Ok(Self(Some(bits)))
    }

    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }

    pub fn allows(&self, m: usize) -> bool {
        match self.0 {
            None => true,
            Some(bits) => m < Self::MAX_MODELS && bits[m / 64] & (1 << (m % 64)) != 0,
        }
    }

    /// Takes the models outside the subset out of `estimates`, so they get no score.
    pub fn restrict(&self, estimates: &mut Estimates) {
        if self.is_all() {
            return;
        }
        for (m, (accuracy, cost)) in estimates
            .accuracy
            .iter_mut()
            .zip(&mut estimates.cost)
            .enumerate()
        {
            if !self.allows(m) {
                (*accuracy, *cost) = (None, None);
            }
        }
    }
}

/// Routing results of a batch of queries, on the host.
#[derive(Debug, Clone, Default)]
pub struct RoutedBatch {
    pub models: usize,
    pub top_p: usize,
    /// `(queries, models)`: each model's total vote.
    pub totals: Vec<f32>,
    /// `(queries, top_p)`: the nearest clusters, nearest first (for a bagged router, each
    /// member's `top_p` nearest in turn, so `top_p` here is the vote's times the bag).
    pub clusters: Vec<u32>,
    /// `(queries, top_p)`: their cosine distances.
    pub distances: Vec<f32>,
    /// `(queries, top_p)`: their vote weights, summing to 1 over a query's clusters (a bagged
    /// router's members each weigh 1 / bag).
    pub weights: Vec<f32>,
    /// The models it chose among; rankings hold only these.
    pub allowed: ModelMask,
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

    /// The allowed models by descending total; equal totals keep model order.
    pub fn ranking(&self, i: usize) -> Vec<usize> {
        let totals = self.totals(i);
        let mut order: Vec<usize> = (0..self.models)
            .filter(|&m| self.allowed.allows(m))
            .collect();
        order.sort_by(|&a, &b| totals[b].total_cmp(&totals[a]));
        order
    }

    /// The chosen model: the allowed one with the highest total, the first in model order among
    /// equals.
    pub fn best(&self, i: usize) -> usize {
        let totals = self.totals(i);
        let mut allowed = (0..self.models).filter(|&m| self.allowed.allows(m));
        let first = allowed.next().expect("routing allows at least one model");
        allowed.fold(
            first,
            |best, m| if totals[m] > totals[best] { m } else { best },
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::MissingCost;

    #[test]
    fn training_keeps_each_models_mean_latency_over_the_rows_that_give_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let line = |a: Option<f64>, b: Option<f64>| {
            serde_json::json!({"query": "q", "records": {"a": 1, "b": 0},
                "usages": {"a": {"cost": 0.1, "latency_s": a}, "b": {"cost": 0.2, "latency_s": b}}})
            .to_string()
        };
        let lines = [
            line(Some(1.0), None),
            line(Some(3.0), None),
            line(Some(9.0), None),
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let data = RoutingData::read(&path, MissingCost::Error).unwrap();
        // The third row is not a training row; "b" has no latency anywhere.
        let means = mean_latencies(&data, &[0, 1]);
        assert_eq!(means, BTreeMap::from([("a".to_string(), 2.0)]));
    }
}
