//! Changing a trained router's model pool without retraining: adding models from a few
//! evaluated queries (or from a declared prior alone, or both), removing one, recomputing costs
//! at new prices from the token counts kept per cell, and choosing which training queries a new
//! model should be evaluated on first.
//!
//! An added model's answers are assigned to the existing centroids of every k-means solution,
//! as the training queries were (nearest by Euclidean distance), and give its cells a count
//! and means. Each cell is shrunk (the router's prior strength) toward the model's accuracy
//! profile, which its answers in all clusters estimate together, borrowing how the trained
//! models' accuracies vary across clusters ([`profile`]). Nothing is re-clustered and the other
//! models' statistics stay as they were.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::online::ClusterEvidence;
use super::profile::{Measurement, ProfilePrior};
use super::{ClusterStats, Priors, Router};
use crate::cluster::nearest_centroids;
use crate::error::{Error, InputError, Result};
use crate::records::RoutingData;

/// The variance a declared mean accuracy is taken with: as exact.
const DECLARED_NOISE: f64 = 1e-9;

/// One value per query and k-means solution, `(queries, bag)`.
type PerMember<T> = Vec<Vec<T>>;

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        self.of_tokens([input_tokens as f64, output_tokens as f64])
    }

    /// Dollars for `[prompt, completion]` tokens.
    pub fn of_tokens(&self, [prompt, completion]: [f64; 2]) -> f64 {
        (prompt * self.input_per_mtok + completion * self.output_per_mtok) / 1e6
    }

    /// Why this is not a price, if it is not.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (name, value) in [
            ("input_per_mtok", self.input_per_mtok),
            ("output_per_mtok", self.output_per_mtok),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{name} must be a finite number ≥ 0, got {value}"));
            }
        }
        Ok(())
    }
}

/// Reads a prices file: one entry per model,
/// `"model" = { input_per_mtok = 2.5, output_per_mtok = 10.0 }`.
pub fn read_prices(path: &Path) -> Result<BTreeMap<String, Price>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let prices: BTreeMap<String, Price> =
        toml::from_str(&text).map_err(|e| InputError::new(path, e.to_string()))?;
    for (model, price) in &prices {
        price
            .check()
            .map_err(|e| InputError::new(path, format!("\"{model}\": {e}")))?;
    }
    if prices.is_empty() {
        return Err(InputError::new(
            path,
            "no prices: expected lines like \"model\" = { input_per_mtok = 2.5, output_per_mtok = 10.0 }",
        )
        .into());
    }
    Ok(prices)
}

/// A model's mean accuracy over the router's training queries and its dollars per answer,
/// declared rather than measured (a published benchmark score, a list price).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPrior {
    pub accuracy: f64,
    /// `None` for a model added from evaluated answers, whose costs those answers give.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

/// One change to a router's model pool since training, as `router.json` keeps them in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum PoolChange {
    /// A model added from `evaluations` evaluated queries of `from`, on a declared prior, or
    /// from both (the prior's accuracy then fixes the model's level, its answers the shape).
    Added {
        model: String,
        evaluations: usize,
        from: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prior: Option<ModelPrior>,
    },
    Removed {
        model: String,
    },
    /// Costs recomputed at `price` in the `cells` that had token counts.
    Repriced {
        model: String,
        price: Price,
        cells: usize,
    },
}

/// What [`Router::reprice`] changed for one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Repriced {
    pub model: String,
    /// Cells whose cost was recomputed from their mean tokens.
    pub cells: usize,
    /// Cells with answers but without token counts, whose trained cost stays.
    pub cells_without_tokens: usize,
    /// The model's mean cost per answer over the training queries, before and after.
    pub mean_cost_before: Option<f64>,
    pub mean_cost_after: Option<f64>,
}

impl Router {
    /// The changes to the model pool since training, oldest first.
    pub fn pool_changes(&self) -> &[PoolChange] {
        &self.pool
    }

    /// Models that entered on a declared prior and have no evaluated answer: their estimates are
    /// the prior everywhere (until outcomes arrive).
    pub fn prior_only_models(&self) -> Vec<&str> {
        self.declared_priors()
            .iter()
            .zip(&self.models)
            .enumerate()
            .filter(|(m, (prior, _))| {
                prior.is_some() && self.clusters.iter().all(|c| c.count[*m] == 0)
            })
            .map(|(_, (_, name))| name.as_str())
            .collect()
    }

    /// Per model, the prior it was added with, if any.
    pub(super) fn declared_priors(&self) -> Vec<Option<ModelPrior>> {
        let mut priors = vec![None; self.models.len()];
        for change in &self.pool {
            if let PoolChange::Added {
                model,
                prior: Some(prior),
                ..
            } = change
            {
                if let Some(m) = self.models.iter().position(|name| name == model) {
                    priors[m] = Some(*prior);
                }
            }
        }
        priors
    }

    /// What shrinkage pulls cluster `cluster`'s estimates toward: each model's global means
    /// (`global`, from [`Router::priors`]), except for models added after training, whose few
    /// answers say little about each cluster: their accuracy profile borrowed from the trained
    /// models ([`Router::added_profiles`]) and their mean cost scaled by the cluster's length
    /// ([`Router::cost_ratio`]).
    pub(super) fn cluster_priors<'a>(&self, cluster: usize, global: &'a Priors) -> Cow<'a, Priors> {
        let added = self.added_models();
        if !added.iter().any(|&a| a) {
            return Cow::Borrowed(global);
        }
        let ratio = self.cost_ratio(cluster, global, &added);
        let profiles = self.added_profiles();
        let mut priors = global.clone();
        for m in (0..self.models.len()).filter(|&m| added[m]) {
            priors.accuracy[m] = profiles[cluster][m].or(priors.accuracy[m]);
            priors.cost[m] = priors.cost[m].map(|c| c * ratio);
        }
        Cow::Owned(priors)
    }

    /// The mean ratio of the trained models' cost in `cluster` to their global mean cost: long
    /// queries cost every model more.
    fn cost_ratio(&self, cluster: usize, global: &Priors, added: &[bool]) -> f64 {
        let stats = &self.clusters[cluster];
        let ratios: Vec<f64> = (0..self.models.len())
            .filter(|&m| !added[m] && stats.count[m] > 0)
            .filter_map(|m| match (stats.cost[m], global.cost[m]) {
                (Some(cost), Some(mean)) if mean > 0.0 => Some(cost / mean),
                _ => None,
            })
            .collect();
        match ratios.is_empty() {
            true => 1.0,
            false => ratios.iter().sum::<f64>() / ratios.len() as f64,
        }
    }

    /// Per cluster of every k-means solution, each added model's accuracy there before its
    /// own answers in the cluster are counted (`None` for trained models): the posterior mean
    /// of its profile over the solution's clusters ([`profile`]), the trained models' shrunk
    /// estimates its prior, and its measurements each cluster's mean answer (seen with the
    /// variance of a mean of that many answers plus the cell's own scatter, a share
    /// `1/prior_strength` of one answer's) and, for a model with a declared prior, its
    /// declared mean over the training queries, taken as exact. Cached until the statistics
    /// change.
    fn added_profiles(&self) -> &[Vec<Option<f64>>] {
        self.profiles.0.get_or_init(|| {
            let added = self.added_models();
            let declared = self.declared_priors();
            let k = self.clusters_per_member();
            let mut profiles = vec![vec![None; self.models.len()]; self.clusters.len()];
            for (b, member) in self.clusters.chunks(k.max(1)).take(self.bag).enumerate() {
                let Some(prior) = self.profile_prior(member, &added) else {
                    continue;
                };
                let share = shares(member);
                for m in (0..self.models.len()).filter(|&m| added[m]) {
                    let mut measurements: Vec<Measurement> = member
                        .iter()
                        .enumerate()
                        .filter_map(|(c, stats)| {
                            Some(Measurement {
                                weights: vec![(c, 1.0)],
                                value: stats.accuracy[m]?,
                                noise: prior.noise(c, stats.count[m] as f64),
                            })
                        })
                        .collect();
                    if let Some(declared) = declared[m] {
                        measurements.push(Measurement {
                            weights: share.iter().copied().enumerate().collect(),
                            value: declared.accuracy,
                            noise: DECLARED_NOISE,
                        });
                    }
                    if measurements.is_empty() {
                        continue;
                    }
                    for (c, accuracy) in prior.posterior(&measurements).into_iter().enumerate() {
                        profiles[b * k + c][m] = Some(accuracy.clamp(0.0, 1.0));
                    }
                }
            }
            profiles
        })
    }

    /// What routing reads of the learned evidence for `cluster`, with the profiles of models
    /// that changed learned again ([`Router::relearned_profiles`]).
    pub(super) fn evidence(&self, cluster: usize) -> Option<ClusterEvidence<'_>> {
        let evidence = self.learned.cluster(cluster, self.models.len())?;
        Some(ClusterEvidence {
            relearned: self
                .relearned_profiles()
                .get(cluster)
                .map_or(&[], Vec::as_slice),
            ..evidence
        })
    }

    /// Per cluster of every k-means solution, each changed model's accuracy there learned again
    /// from its outcomes, as an added model's is (empty when no model changed): a model whose
    /// outcomes moved it (a shift, [`super::online`]) may have become another model, and its
    /// training answers no longer say where it is strong. Its profile's prior is the other
    /// models' ([`Router::profile_prior`]), its measurements its outcomes' mean per cluster.
    fn relearned_profiles(&self) -> &[Vec<Option<f64>>] {
        self.relearned.0.get_or_init(|| {
            let models = self.models.len();
            let changed: Vec<bool> = (0..models)
                .map(|m| self.learned.shift(m).0 != 0.0)
                .collect();
            if !changed.iter().any(|&c| c) {
                return Vec::new();
            }
            let cells = self.learned.cells();
            // Its own training answers describe the model it was: left out of its prior.
            let excluded: Vec<bool> = self
                .added_models()
                .iter()
                .zip(&changed)
                .map(|(&added, &changed)| added || changed)
                .collect();
            let k = self.clusters_per_member();
            let mut profiles = vec![vec![None; models]; self.clusters.len()];
            for (b, member) in self.clusters.chunks(k.max(1)).take(self.bag).enumerate() {
                let Some(prior) = self.profile_prior(member, &excluded) else {
                    continue;
                };
                for m in (0..models).filter(|&m| changed[m]) {
                    let measurements: Vec<Measurement> = (0..member.len())
                        .filter_map(|c| {
                            let outcomes = cells[(b * k + c) * models + m].accuracy;
                            (outcomes.weight > 0.0).then(|| Measurement {
                                weights: vec![(c, 1.0)],
                                value: outcomes.sum / outcomes.weight,
                                noise: prior.noise(c, outcomes.weight),
                            })
                        })
                        .collect();
                    if measurements.is_empty() {
                        continue;
                    }
                    for (c, accuracy) in prior.posterior(&measurements).into_iter().enumerate() {
                        profiles[b * k + c][m] = Some(accuracy.clamp(0.0, 1.0));
                    }
                }
            }
            profiles
        })
    }

    /// What a new model's accuracy profile over `member`'s clusters (one k-means solution) is
    /// expected to be before it answers: the trained models' (those not `added`) shrunk
    /// estimates there, their mean and their scatter ([`profile`]), with the model's overall
    /// level as uncertain as a mean of `prior_strength` answers. `None` without trained models.
    fn profile_prior(&self, member: &[ClusterStats], added: &[bool]) -> Option<ProfilePrior> {
        let trained: Vec<usize> = (0..self.models.len()).filter(|&m| !added[m]).collect();
        if trained.is_empty() {
            return None;
        }
        let global = Priors::of(member);
        let estimates: Vec<Vec<f64>> = member
            .iter()
            .map(|stats| {
                let accuracy = stats
                    .estimates(&global, self.defaults.prior_strength, None)
                    .accuracy;
                trained
                    .iter()
                    .map(|&m| accuracy[m].or(global.accuracy[m]).unwrap_or(0.5))
                    .collect()
            })
            .collect();
        // The paper's estimator (no shrinkage) still needs a prior where a model has no
        // answers: one answer's worth.
        Some(ProfilePrior::new(
            &estimates,
            self.defaults.prior_strength.max(1.0),
        ))
    }

    /// [`Priors::of`] the training statistics, with the means of models added after training
    /// taken from their profiles ([`Router::added_profiles`]) weighted by the clusters' sizes
    /// (a model evaluated on easy queries alone is not taken for a strong one), and their
    /// mean cost their answers' total over what the trained models' cost ratios there would
    /// predict; one on a declared prior alone costs the declared cost.
    pub(super) fn priors_with_pool(&self) -> Priors {
        let member = &self.clusters[..self.clusters_per_member()];
        let mut priors = Priors::of(member);
        let added = self.added_models();
        if !added.iter().any(|&a| a) {
            return priors;
        }
        let profiles = &self.added_profiles()[..member.len()];
        let declared = self.declared_priors();
        let share = shares(member);
        let ratios: Vec<f64> = (0..member.len())
            .map(|c| self.cost_ratio(c, &priors, &added))
            .collect();
        for m in (0..self.models.len()).filter(|&m| added[m]) {
            let (mut length, mut spent) = (0.0, 0.0);
            for (stats, ratio) in member.iter().zip(&ratios) {
                let count = stats.count[m] as f64;
                length += count * ratio;
                spent += count * stats.cost[m].unwrap_or(0.0);
            }
            if profiles.iter().all(|row| row[m].is_some()) {
                let mean = share
                    .iter()
                    .zip(profiles)
                    .map(|(share, row)| share * row[m].unwrap_or(0.0))
                    .sum();
                priors.accuracy[m] = Some(mean);
            } else if let Some(declared) = declared[m] {
                priors.accuracy[m] = Some(declared.accuracy);
            }
            if length > 0.0 {
                priors.cost[m] = Some(spent / length);
            } else if let Some(cost) = declared[m].and_then(|d| d.cost) {
                priors.cost[m] = Some(cost);
            }
        }
        priors
    }

    /// Per model, whether it was added after training.
    fn added_models(&self) -> Vec<bool> {
        let mut added = vec![false; self.models.len()];
        for change in &self.pool {
            if let PoolChange::Added { model, .. } = change {
                if let Some(m) = self.models.iter().position(|name| name == model) {
                    added[m] = true;
                }
            }
        }
        added
    }

    /// Each query's cluster in every k-means solution (`(queries, bag)`, global cluster
    /// indices), by the Euclidean distance k-means assigned the training queries with.
    pub fn assign(&self, embeddings: &Tensor) -> Result<Vec<Vec<u32>>> {
        Ok(self.assign_with_distances(embeddings)?.0)
    }

    /// [`Router::assign`] with each query's squared distance to its cluster's centroid, in
    /// the same `(queries, bag)` layout.
    fn assign_with_distances(
        &self,
        embeddings: &Tensor,
    ) -> Result<(Vec<Vec<u32>>, PerMember<f32>)> {
        let k = self.clusters_per_member();
        let rows = embeddings.dim(0)?;
        let mut labels = vec![Vec::with_capacity(self.bag); rows];
        let mut distances = vec![Vec::with_capacity(self.bag); rows];
        for member in 0..self.bag {
            let centroids = self.centroids.narrow(0, member * k, k)?;
            let (nearest, squared) = nearest_centroids(embeddings, &centroids)?;
            for (i, (cluster, d)) in nearest.into_iter().zip(squared).enumerate() {
                labels[i].push((member * k) as u32 + cluster);
                distances[i].push(d);
            }
        }
        Ok((labels, distances))
    }

    /// Adds the models of `data` that the router lacks, from their evaluated answers on its
    /// queries (`embeddings`, one row per record, L2-normalised); `from` names the data in
    /// `router.json`. Models the router has already are left as they are. Returns the names
    /// added. Every evaluated answer needs a cost. `declared_accuracy`, for data that adds one
    /// model, is that model's mean accuracy over the router's training queries (a published
    /// score): it fixes the level of the profile, and the answers say where the model is
    /// stronger or weaker than that.
    pub fn add_models(
        &mut self,
        embeddings: &Tensor,
        data: &RoutingData,
        declared_accuracy: Option<f64>,
    ) -> Result<Vec<String>> {
        let new: Vec<usize> = (0..data.models.len())
            .filter(|&i| !self.models.contains(&data.models[i]))
            .collect();
        if new.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: every model there is in the router already ({})",
                data.path.display(),
                data.models.join(", ")
            )));
        }
        if let Some(accuracy) = declared_accuracy {
            check_declared_accuracy(accuracy)?;
            if new.len() > 1 {
                let names: Vec<&str> = new.iter().map(|&i| data.models[i].as_str()).collect();
                return Err(Error::Invalid(format!(
                    "{}: a declared accuracy is for one model, and these records add {} ({})",
                    data.path.display(),
                    names.len(),
                    names.join(", ")
                )));
            }
        }
        if embeddings.dim(0)? != data.records.len() {
            return Err(Error::Invalid(format!(
                "{} embeddings for {} records",
                embeddings.dim(0)?,
                data.records.len()
            )));
        }
        for record in &data.records {
            for &i in &new {
                if record.scores[i].is_some() && record.costs[i].is_none() {
                    return Err(
                        InputError::new(&data.path, "missing for an evaluated model")
                            .at_line(record.line)
                            .field(format!("usages.{}.cost", data.models[i]))
                            .into(),
                    );
                }
            }
        }
        let labels = self.assign(embeddings)?;
        let records: Vec<_> = data.records.iter().collect();
        let k = self.clusters_per_member();
        let mut added = vec![Vec::new(); self.clusters.len()];
        for member in 0..self.bag {
            let member_labels: Vec<u32> = labels
                .iter()
                .map(|row| row[member] - (member * k) as u32)
                .collect();
            let stats = ClusterStats::compute(&records, &member_labels, k, data.models.len());
            let ease = self.evaluated_ease(data, &member_labels, member, &new);
            for (c, stats) in stats.into_iter().enumerate() {
                added[member * k + c] = new
                    .iter()
                    .zip(&ease)
                    .map(|(&i, ease)| {
                        let mut cell = stats.cell(i);
                        if let (Some(accuracy), Some(ease)) = (cell.accuracy, ease) {
                            cell.accuracy = Some((accuracy - ease).clamp(0.0, 1.0));
                        }
                        cell
                    })
                    .collect();
            }
        }
        let names: Vec<String> = new.iter().map(|&i| data.models[i].clone()).collect();
        for (cluster, cells) in self.clusters.iter_mut().zip(added) {
            for cell in cells {
                cluster.push_model(cell);
            }
        }
        for (&i, name) in new.iter().zip(&names) {
            let evaluations = data
                .records
                .iter()
                .filter(|r| r.scores[i].is_some())
                .count();
            self.pool.push(PoolChange::Added {
                model: name.clone(),
                evaluations,
                from: data.path.display().to_string(),
                prior: declared_accuracy.map(|accuracy| ModelPrior {
                    accuracy,
                    cost: None,
                }),
            });
        }
        self.set_models([self.models.clone(), names.clone()].concat());
        Ok(names)
    }

    /// Per model of `new` (indices into `data.models`), how much higher its mean accuracy on
    /// the queries `data` evaluates it on is expected to be than on the training queries, from
    /// the scores `data` also holds for the router's trained models on those queries (a probe
    /// file that `suggest --from` wrote carries them): a control variate. A query's ease is the mean
    /// score of those models on it less their mean accuracy in its cluster of k-means solution
    /// `member` (`labels`: each record's cluster there); the expected gain is the evaluated
    /// queries' mean ease times the slope of the new model's scores on the ease. `None`
    /// without such scores; exactly 0 where the evaluated queries are all the training queries.
    fn evaluated_ease(
        &self,
        data: &RoutingData,
        labels: &[u32],
        member: usize,
        new: &[usize],
    ) -> Vec<Option<f64>> {
        let k = self.clusters_per_member();
        // Models added after training have too few answers per cluster to measure ease by.
        let added = self.added_models();
        let scored: Vec<(usize, usize)> = self
            .models
            .iter()
            .enumerate()
            .filter(|&(m, _)| !added[m])
            .filter_map(|(m, name)| Some((m, data.model_index(name)?)))
            .collect();
        let mean_accuracy =
            |label: u32, m: usize| self.clusters[member * k + label as usize].accuracy[m];
        // Each query's ease, for the slope.
        let ease: Vec<Option<f64>> = data
            .records
            .iter()
            .zip(labels)
            .map(|(record, &label)| {
                let offsets: Vec<f64> = scored
                    .iter()
                    .filter_map(|&(m, j)| Some(record.scores[j]? - mean_accuracy(label, m)?))
                    .collect();
                (!offsets.is_empty()).then(|| offsets.iter().sum::<f64>() / offsets.len() as f64)
            })
            .collect();
        new.iter()
            .map(|&i| {
                let evaluated: Vec<(f64, f64)> = data
                    .records
                    .iter()
                    .zip(&ease)
                    .filter_map(|(record, &ease)| Some((ease?, record.scores[i]?)))
                    .collect();
                // The mean ease, taken per cluster and model as each mean's difference from
                // the training mean, so that it is 0 exactly on all the training queries.
                let mut sums = vec![(0usize, 0.0f64); k * scored.len()];
                for (record, &label) in data.records.iter().zip(labels) {
                    if record.scores[i].is_none() {
                        continue;
                    }
                    for (s, &(_, j)) in scored.iter().enumerate() {
                        if let Some(score) = record.scores[j] {
                            let sum = &mut sums[label as usize * scored.len() + s];
                            sum.0 += 1;
                            sum.1 += score;
                        }
                    }
                }
                let (mut weight, mut total) = (0usize, 0.0);
                for c in 0..k {
                    let cell = &sums[c * scored.len()..(c + 1) * scored.len()];
                    let offsets: Vec<f64> = cell
                        .iter()
                        .zip(&scored)
                        .filter_map(|(&(answers, sum), &(m, _))| {
                            let mean = mean_accuracy(c as u32, m)?;
                            (answers > 0).then(|| sum / answers as f64 - mean)
                        })
                        .collect();
                    let answers = cell.iter().map(|&(a, _)| a).max().unwrap_or(0);
                    if answers > 0 && !offsets.is_empty() {
                        weight += answers;
                        total +=
                            answers as f64 * offsets.iter().sum::<f64>() / offsets.len() as f64;
                    }
                }
                (weight > 0).then(|| slope(&evaluated) * total / weight as f64)
            })
            .collect()
    }

    /// Adds `model` with no evaluations, on a declared `prior` alone: it gets the prior's
    /// accuracy and cost in every cluster. Needs a prior strength above 0 (the paper's
    /// estimator gives a model no vote where it has no answers).
    pub fn add_model_on_prior(&mut self, model: &str, prior: ModelPrior) -> Result<()> {
        if self.models.iter().any(|m| m == model) {
            return Err(Error::Invalid(format!(
                "model `{model}` is in the router already"
            )));
        }
        check_declared_accuracy(prior.accuracy)?;
        let Some(cost) = prior.cost else {
            return Err(Error::Invalid(format!(
                "`{model}` has no evaluated answers to take its cost from: it needs --prior-cost"
            )));
        };
        if !(cost.is_finite() && cost >= 0.0) {
            return Err(Error::Invalid(format!(
                "--prior-cost must be a finite number of dollars ≥ 0, got {cost}"
            )));
        }
        if self.defaults.prior_strength <= 0.0 {
            return Err(Error::Invalid(format!(
                "the router's prior strength is 0 (the paper's per-cluster means), under which a \
                 model without answers gets no vote: add `{model}` from evaluated queries, or \
                 retrain with --prior-strength"
            )));
        }
        for cluster in &mut self.clusters {
            cluster.push_model(CellStats::default());
        }
        self.pool.push(PoolChange::Added {
            model: model.to_string(),
            evaluations: 0,
            from: "declared prior".into(),
            prior: Some(prior),
        });
        self.set_models([self.models.clone(), vec![model.to_string()]].concat());
        Ok(())
    }

    /// Drops `model` from the router (its statistics and what was learned about it).
    pub fn remove_model(&mut self, model: &str) -> Result<()> {
        let m = self.models.iter().position(|n| n == model).ok_or_else(|| {
            Error::Invalid(format!(
                "no model `{model}` in the router (its models: {})",
                self.models.join(", ")
            ))
        })?;
        if self.models.len() == 1 {
            return Err(Error::Invalid(format!(
                "`{model}` is the router's only model"
            )));
        }
        for cluster in &mut self.clusters {
            cluster.remove_model(m);
        }
        self.pool.push(PoolChange::Removed {
            model: model.to_string(),
        });
        let mut models = self.models.clone();
        models.remove(m);
        self.set_models(models);
        Ok(())
    }

    /// Recomputes the named models' costs at new `prices` from the mean tokens of each cell (the
    /// router must have been trained on records with token counts for them). Outcomes' costs
    /// learned since training are scaled by the model's change in mean cost.
    pub fn reprice(&mut self, prices: &BTreeMap<String, Price>) -> Result<Vec<Repriced>> {
        let mut plan = Vec::new();
        for (model, price) in prices {
            price
                .check()
                .map_err(|e| Error::Invalid(format!("price of `{model}`: {e}")))?;
            let m = self.models.iter().position(|n| n == model).ok_or_else(|| {
                Error::Invalid(format!(
                    "no model `{model}` in the router (its models: {})",
                    self.models.join(", ")
                ))
            })?;
            if !self.clusters.iter().any(|c| c.tokens_of(m).is_some()) {
                return Err(Error::Invalid(format!(
                    "the router has no token counts for `{model}`: train it from records with \
                     usages.<model>.prompt_tokens and completion_tokens (or their _est \
                     estimates) to reprice it"
                )));
            }
            plan.push((m, model.clone(), *price));
        }
        let mut report = Vec::new();
        for (m, model, price) in plan {
            let before = self.priors().cost[m];
            let (mut cells, mut cells_without_tokens) = (0, 0);
            for cluster in &mut self.clusters {
                match cluster.tokens_of(m) {
                    Some(tokens) => {
                        cluster.cost[m] = Some(price.of_tokens(tokens));
                        cells += 1;
                    }
                    None if cluster.count[m] > 0 => cells_without_tokens += 1,
                    None => {}
                }
            }
            let after = self.priors().cost[m];
            if let (Some(before), Some(after)) = (before, after) {
                if before > 0.0 {
                    self.learned
                        .scale_costs(m, self.models.len(), after / before);
                }
            }
            self.pool.push(PoolChange::Repriced {
                model: model.clone(),
                price,
                cells,
            });
            report.push(Repriced {
                model,
                cells,
                cells_without_tokens,
                mean_cost_before: before,
                mean_cost_after: after,
            });
        }
        self.statistics_changed();
        Ok(report)
    }

    /// Models the router has token counts for (in some cell), in model order.
    pub fn models_with_tokens(&self) -> Vec<&str> {
        (0..self.models.len())
            .filter(|&m| self.clusters.iter().any(|c| c.tokens_of(m).is_some()))
            .map(|m| self.models[m].as_str())
            .collect()
    }

    /// The `n` queries (rows of `embeddings`) whose evaluation tells most about a new model's
    /// per-cluster accuracy, best first: chosen one at a time, each the query whose answer
    /// would most reduce the uncertainty of the model's profile ([`Router::profile_prior`])
    /// summed over the clusters of every k-means solution, each cluster weighted by its share
    /// of the training queries (ties: the query nearest its centroids). The order does not
    /// depend on `n`: the first `m` of `n` suggestions are the `m` suggestions.
    pub fn suggest(&self, embeddings: &Tensor, n: usize) -> Result<Vec<usize>> {
        let (labels, centroid_distance) = self.assign_with_distances(embeddings)?;
        let k = self.clusters_per_member();
        let added = self.added_models();
        let mut designs = Vec::with_capacity(self.bag);
        for member in self.clusters.chunks(k.max(1)).take(self.bag) {
            let prior = self.profile_prior(member, &added).ok_or_else(|| {
                Error::Invalid("the router has no trained model to compare a new one with".into())
            })?;
            designs.push(Design::new(prior, member));
        }
        let nearness: Vec<f32> = centroid_distance.iter().map(|d| d.iter().sum()).collect();
        let mut taken = vec![false; labels.len()];
        let mut chosen = Vec::with_capacity(n.min(labels.len()));
        while chosen.len() < n {
            let gains: Vec<Vec<f64>> = designs.iter().map(Design::gains).collect();
            let gain: Vec<f64> = labels
                .iter()
                .map(|clusters| {
                    clusters
                        .iter()
                        .enumerate()
                        .map(|(b, &c)| gains[b][c as usize - b * k])
                        .sum()
                })
                .collect();
            let Some(row) = (0..labels.len())
                .filter(|&row| !taken[row])
                .max_by(|&a, &b| {
                    gain[a]
                        .total_cmp(&gain[b])
                        .then(nearness[b].total_cmp(&nearness[a]))
                        .then(b.cmp(&a))
                })
            else {
                break;
            };
            taken[row] = true;
            chosen.push(row);
            for (b, &c) in labels[row].iter().enumerate() {
                designs[b].answer(c as usize - b * k);
            }
        }
        Ok(chosen)
    }

    /// Sets the model list after clusters' statistics changed shape, moving what was learned
    /// to the new layout.
    fn set_models(&mut self, models: Vec<String>) {
        self.learned = self.learned.remap(&self.models, &models);
        self.models = models;
        self.statistics_changed();
    }
}

/// One model's statistics in one cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct CellStats {
    pub count: usize,
    pub accuracy: Option<f64>,
    pub cost: Option<f64>,
    pub tokens: Option<[f64; 2]>,
}

impl ClusterStats {
    /// Model `m`'s statistics here.
    pub(super) fn cell(&self, m: usize) -> CellStats {
        CellStats {
            count: self.count[m],
            accuracy: self.accuracy[m],
            cost: self.cost[m],
            tokens: self.tokens_of(m),
        }
    }

    /// Model `m`'s mean tokens here, if known.
    pub fn tokens_of(&self, m: usize) -> Option<[f64; 2]> {
        self.tokens.get(m).copied().flatten()
    }

    /// Appends a model's statistics (the token column appears when first needed).
    fn push_model(&mut self, cell: CellStats) {
        let models = self.count.len();
        self.count.push(cell.count);
        self.accuracy.push(cell.accuracy);
        self.cost.push(cell.cost);
        if cell.tokens.is_some() && self.tokens.is_empty() {
            self.tokens = vec![None; models];
        }
        if !self.tokens.is_empty() {
            self.tokens.push(cell.tokens);
        }
    }

    fn remove_model(&mut self, m: usize) {
        self.count.remove(m);
        self.accuracy.remove(m);
        self.cost.remove(m);
        if !self.tokens.is_empty() {
            self.tokens.remove(m);
        }
    }
}

/// A declared accuracy must be a score in [0, 1].
fn check_declared_accuracy(accuracy: f64) -> Result<()> {
    match (0.0..=1.0).contains(&accuracy) {
        true => Ok(()),
        false => Err(Error::Invalid(format!(
            "--prior-accuracy must be in [0, 1], got {accuracy}"
        ))),
    }
}

/// Each of one k-means solution's clusters' share of the training queries.
fn shares(member: &[ClusterStats]) -> Vec<f64> {
    let total = member.iter().map(|c| c.size).sum::<usize>().max(1) as f64;
    member.iter().map(|c| c.size as f64 / total).collect()
}

/// One k-means solution's clusters while [`Router::suggest`] chooses queries: the covariance
/// of a new model's profile after the answers chosen so far.
struct Design {
    prior: ProfilePrior,
    covariance: Vec<f64>,
    share: Vec<f64>,
    answers: Vec<f64>,
}

impl Design {
    fn new(prior: ProfilePrior, member: &[ClusterStats]) -> Self {
        Self {
            covariance: prior.covariance(),
            share: shares(member),
            answers: vec![0.0; member.len()],
            prior,
        }
    }

    /// The precision one more answer in cluster `c` adds to the measurement of its profile
    /// there (the mean of its answers: its noise shrinks, down to the cell's own scatter).
    fn added_precision(&self, c: usize) -> f64 {
        let before = match self.answers[c] > 0.0 {
            true => 1.0 / self.prior.noise(c, self.answers[c]),
            false => 0.0,
        };
        1.0 / self.prior.noise(c, self.answers[c] + 1.0) - before
    }

    /// Per cluster, how much one more answer there would reduce the share-weighted sum of the
    /// profile's variances.
    fn gains(&self) -> Vec<f64> {
        let k = self.share.len();
        (0..k)
            .map(|c| {
                let column = (0..k).map(|i| self.covariance[i * k + c]);
                let explained: f64 = column.zip(&self.share).map(|(p, s)| s * p * p).sum();
                explained / (1.0 / self.added_precision(c) + self.covariance[c * k + c])
            })
            .collect()
    }

    /// Takes one more answer in cluster `c`: a rank-one update of the covariance.
    fn answer(&mut self, c: usize) {
        let k = self.share.len();
        let column: Vec<f64> = (0..k).map(|i| self.covariance[i * k + c]).collect();
        let denominator = 1.0 / self.added_precision(c) + column[c];
        for i in 0..k {
            for j in 0..k {
                self.covariance[i * k + j] -= column[i] * column[j] / denominator;
            }
        }
        self.answers[c] += 1.0;
    }
}

/// The least-squares slope of `y` on `x` over `(x, y)` pairs; 0 where `x` does not vary.
fn slope(pairs: &[(f64, f64)]) -> f64 {
    let n = pairs.len() as f64;
    let (mx, my) = pairs
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x / n, sy + y / n));
    let (sxy, sxx) = pairs.iter().fold((0.0, 0.0), |(sxy, sxx), (x, y)| {
        (sxy + (x - mx) * (y - my), sxx + (x - mx) * (x - mx))
    });
    if sxx > 0.0 {
        sxy / sxx
    } else {
        0.0
    }
}
