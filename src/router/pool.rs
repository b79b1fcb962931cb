//! Changing a trained router's model pool without retraining: adding models from a few
//! evaluated queries (or from a declared prior alone), removing one, recomputing costs at new
//! prices from the token counts kept per cell, and choosing which training queries a new model
//! should be evaluated on first.
//!
//! An added model's answers are assigned to the existing centroids of every k-means solution,
//! as the training queries were (nearest by Euclidean distance), and give its cells a count
//! and means; shrinkage toward its own global mean (the router's prior strength) fills the
//! clusters it was not evaluated in. Nothing is re-clustered and the other models' statistics
//! stay as they were.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{ClusterStats, Priors, Router};
use crate::cluster::nearest_centroids;
use crate::error::{Error, InputError, Result};
use crate::records::RoutingData;

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

/// A model's accuracy and dollars per answer, declared for a model that enters the router
/// without evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPrior {
    pub accuracy: f64,
    pub cost: f64,
}

/// One change to a router's model pool since training, as `router.json` keeps them in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum PoolChange {
    /// A model added from `evaluations` evaluated queries of `from`, or on a declared prior.
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
    /// answers say little about each cluster: their mean accuracy moved by the cluster's
    /// difficulty and their mean cost scaled by its length ([`Router::difficulty`]).
    pub(super) fn cluster_priors<'a>(&self, cluster: usize, global: &'a Priors) -> Cow<'a, Priors> {
        let added = self.added_models();
        if !added.iter().any(|&a| a) {
            return Cow::Borrowed(global);
        }
        let (offset, ratio) = self.difficulty(cluster, global, &added);
        let mut priors = global.clone();
        for m in (0..self.models.len()).filter(|&m| added[m]) {
            priors.accuracy[m] = priors.accuracy[m].map(|a| (a + offset).clamp(0.0, 1.0));
            priors.cost[m] = priors.cost[m].map(|c| c * ratio);
        }
        Cow::Owned(priors)
    }

    /// How cluster `cluster` treats the trained models: how far their accuracy there lies
    /// from their global means, on average (hard clusters are hard for every model), and the
    /// mean ratio of their cost there to their global mean cost (long queries cost every model
    /// more).
    fn difficulty(&self, cluster: usize, global: &Priors, added: &[bool]) -> (f64, f64) {
        let stats = &self.clusters[cluster];
        let (mut offsets, mut ratios) = (Vec::new(), Vec::new());
        for m in (0..self.models.len()).filter(|&m| !added[m] && stats.count[m] > 0) {
            if let (Some(accuracy), Some(mean)) = (stats.accuracy[m], global.accuracy[m]) {
                offsets.push(accuracy - mean);
            }
            if let (Some(cost), Some(mean)) = (stats.cost[m], global.cost[m]) {
                if mean > 0.0 {
                    ratios.push(cost / mean);
                }
            }
        }
        let average = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
        (
            if offsets.is_empty() {
                0.0
            } else {
                average(&offsets)
            },
            if ratios.is_empty() {
                1.0
            } else {
                average(&ratios)
            },
        )
    }

    /// [`Priors::of`] the training statistics, with two corrections for models added after
    /// training: one without answers takes its declared prior, and one evaluated on a few
    /// queries has its means corrected for how hard and how long those queries were (a model
    /// evaluated on easy queries alone is not taken for a strong one): its mean accuracy is
    /// its answers' mean less their clusters' mean difficulty, and its mean cost its answers'
    /// total over what the trained models' cost ratios there would predict.
    pub(super) fn priors_with_pool(&self) -> Priors {
        let member = &self.clusters[..self.clusters_per_member()];
        let mut priors = Priors::of(member);
        let added = self.added_models();
        let difficulty: Vec<(f64, f64)> = match added.iter().any(|&a| a) {
            true => (0..member.len())
                .map(|c| self.difficulty(c, &priors, &added))
                .collect(),
            false => Vec::new(),
        };
        let declared = self.declared_priors();
        let trained: Vec<f64> = (0..self.models.len())
            .filter(|&m| !added[m])
            .filter_map(|m| priors.accuracy[m])
            .collect();
        let pool_accuracy = trained.iter().sum::<f64>() / trained.len().max(1) as f64;
        for m in (0..self.models.len()).filter(|&m| added[m]) {
            let (mut n, mut offset, mut length, mut spent) = (0.0, 0.0, 0.0, 0.0);
            for (stats, &(cluster_offset, ratio)) in member.iter().zip(&difficulty) {
                let count = stats.count[m] as f64;
                n += count;
                offset += count * cluster_offset;
                length += count * ratio;
                spent += count * stats.cost[m].unwrap_or(0.0);
            }
            if n > 0.0 {
                // Shrunk toward the trained models' mean like a cell toward its model's: ten
                // right answers on easy queries do not make the best model of the pool.
                let m_prior = self.defaults.prior_strength;
                priors.accuracy[m] = priors.accuracy[m].map(|a| {
                    let corrected = (a - offset / n).clamp(0.0, 1.0);
                    (n * corrected + m_prior * pool_accuracy) / (n + m_prior)
                });
                if length > 0.0 {
                    priors.cost[m] = Some(spent / length);
                }
            } else if let Some(declared) = declared[m] {
                priors.accuracy[m] = Some(declared.accuracy);
                priors.cost[m] = Some(declared.cost);
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
    /// added. Every evaluated answer needs a cost.
    pub fn add_models(&mut self, embeddings: &Tensor, data: &RoutingData) -> Result<Vec<String>> {
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
            for (c, stats) in stats.into_iter().enumerate() {
                added[member * k + c] = new.iter().map(|&i| stats.cell(i)).collect();
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
                prior: None,
            });
        }
        self.set_models([self.models.clone(), names.clone()].concat());
        Ok(names)
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
        if !(0.0..=1.0).contains(&prior.accuracy) {
            return Err(Error::Invalid(format!(
                "--prior-accuracy must be in [0, 1], got {}",
                prior.accuracy
            )));
        }
        if !(prior.cost.is_finite() && prior.cost >= 0.0) {
            return Err(Error::Invalid(format!(
                "--prior-cost must be a finite number of dollars ≥ 0, got {}",
                prior.cost
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
    /// per-cluster statistics, best first. Clusters of every k-means solution take turns in
    /// proportion to their share of the training queries (the highest `share / (taken + 1)`
    /// goes next, as seats are apportioned by D'Hondt's rule), each taking its nearest query
    /// not yet chosen, and a query counts toward its cluster in every solution. The order does
    /// not depend on `n`: the first `m` of `n` suggestions are the `m` suggestions.
    pub fn suggest(&self, embeddings: &Tensor, n: usize) -> Result<Vec<usize>> {
        let (labels, centroid_distance) = self.assign_with_distances(embeddings)?;
        let k = self.clusters_per_member();
        let total = self.clusters[..k]
            .iter()
            .map(|c| c.size)
            .sum::<usize>()
            .max(1) as f64;
        let share: Vec<f64> = self
            .clusters
            .iter()
            .map(|c| c.size as f64 / total)
            .collect();
        // Each cluster's queries, the one nearest its centroid last (popped first).
        let mut queue = vec![Vec::new(); self.clusters.len()];
        for (row, clusters) in labels.iter().enumerate() {
            for (member, &c) in clusters.iter().enumerate() {
                queue[c as usize].push((centroid_distance[row][member], row));
            }
        }
        for members in &mut queue {
            members.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        }
        let mut taken_in = vec![0usize; self.clusters.len()];
        let mut taken = vec![false; labels.len()];
        let mut chosen = Vec::with_capacity(n.min(labels.len()));
        while chosen.len() < n {
            // Drop chosen queries from the heads so that a non-empty queue has a candidate.
            for members in &mut queue {
                while members.last().is_some_and(|&(_, row)| taken[row]) {
                    members.pop();
                }
            }
            let priority = |c: usize| share[c] / (taken_in[c] + 1) as f64;
            let Some(c) = (0..self.clusters.len())
                .filter(|&c| !queue[c].is_empty())
                .max_by(|&a, &b| priority(a).total_cmp(&priority(b)).then(b.cmp(&a)))
            else {
                break;
            };
            let (_, row) = queue[c].pop().expect("a non-empty queue");
            taken[row] = true;
            chosen.push(row);
            for &cluster in &labels[row] {
                taken_in[cluster as usize] += 1;
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
