//! What a router learns after training: outcomes observed while serving (or read from a file of
//! labelled queries), kept per cluster × model on top of the training statistics.
//!
//! An outcome for model `m` on a query updates every cluster that voted for the query: cell
//! `(c, m)` takes the outcome with weight `w_c`, the cluster's vote weight within its k-means
//! solution (so each solution of a bagged router takes in one whole observation). A cell's
//! accuracy is then the weighted mean of its training answers and its outcomes once the
//! outcomes' mean stands `SHIFT_SIGNIFICANCE` standard errors out of the answers' (its training
//! mean until then: only the chosen model gets outcomes, and its cells must not move by their
//! noise alone), and the shrinkage toward the model's training-wide mean stays as it was
//! trained. With a half-life of `H` observations, each outcome first discounts everything the
//! cell knew by `2^(−w/H)`, training answers included, so that a model whose quality changed is
//! followed.
//!
//! A model that changes usually changes everywhere, but each cell sees only a share of its
//! outcomes. So every outcome also feeds the model's shift `δ`: the posterior mean of its
//! residuals against the training means `μ` of the clusters that voted,
//! `Σ(s − μ) / (n + v/SHIFT_SPREAD²)` with `v` their variance, once it stands
//! `SHIFT_SIGNIFICANCE` standard errors out of the noise (0 before). It moves the training part
//! of every cell of the model (observed outcomes enter a cell as they are) as a change of
//! log-odds: the one that moves the mean accuracy expected of the outcomes, `μ̄`, by `δ`. A model
//! that got better thus gains most where it was middling and little where it was nearly always
//! right, as a stronger model does. Under no change `δ` stays 0 but for rare false alarms; after
//! a change of 0.3 it applies within a few tens of outcomes, in clusters that saw none of them
//! too. Its half-life is `SHIFT_HALF_LIFE_FACTOR × H` outcomes of the model.
//!
//! A model that changed may have become another model, whose strengths lie elsewhere. Once its
//! shift applies it is learned again from its outcomes as a model added to the pool is (the
//! router's `relearned_profiles`): its training answers set aside, its profile over each k-means
//! solution's clusters is the posterior mean given its outcomes, with the other models' profiles
//! as the prior; its cells are its outcomes shrunk toward that profile.

use serde::{Deserialize, Serialize};

use super::CHANGE_WORTH_FINDING;

/// Evidence about one quantity (accuracy or cost) of a cluster × model cell gathered after
/// training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// Share of the cell's training answers still counted: 1 until forgetting discounts it.
    pub kept: f64,
    /// Fractional count of the outcomes observed (discounted like the training answers).
    pub weight: f64,
    /// Their weighted sum.
    pub sum: f64,
}

impl Default for Evidence {
    fn default() -> Self {
        Self {
            kept: 1.0,
            weight: 0.0,
            sum: 0.0,
        }
    }
}

impl Evidence {
    /// Nothing observed and nothing forgotten.
    pub fn is_untouched(&self) -> bool {
        *self == Self::default()
    }

    /// Takes in `value` with `weight`, first discounting what the cell knew by `2^(−weight/h)`
    /// under a half-life of `h` observations.
    pub fn add(&mut self, weight: f64, value: f64, half_life: Option<f64>) {
        if let Some(h) = half_life {
            let keep = 0.5f64.powf(weight / h);
            self.kept *= keep;
            self.weight *= keep;
            self.sum *= keep;
        }
        self.weight += weight;
        self.sum += weight * value;
    }

    /// The count and mean of `n` training answers at `mean` together with this evidence.
    pub fn combine(&self, n: f64, mean: Option<f64>) -> (f64, Option<f64>) {
        let trained = self.kept * n;
        let count = trained + self.weight;
        let sum = trained * mean.unwrap_or(0.0) + self.sum;
        (count, (count > 0.0).then(|| sum / count))
    }
}

/// A model's outcomes measured against what training expected of them: their count, the sum
/// and sum of squares of their residuals, the sum of what was expected, and how much likelier
/// they are under a change worth finding than under none (all discounted alike under a
/// half-life).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Residuals {
    pub weight: f64,
    pub sum: f64,
    pub squares: f64,
    pub expected: f64,
    /// The log-likelihood ratio of the outcomes under an improvement of the model by
    /// [`CHANGE_WORTH_FINDING`] (applied as a shift is, in log-odds at its outcomes' level)
    /// against no change, each outcome's score taken as a Bernoulli outcome's: a failure where
    /// the model was middling weighs a little, one where it was strong weighs much, since an
    /// improved model would rarely fail there.
    pub worth_finding: f64,
}

impl Residuals {
    /// Takes in an outcome `score` where training expected `expected`.
    fn add(&mut self, expected: f64, score: f64, half_life: Option<f64>) {
        if let Some(h) = half_life {
            let keep = 0.5f64.powf(1.0 / h);
            self.weight *= keep;
            self.sum *= keep;
            self.squares *= keep;
            self.expected *= keep;
            self.worth_finding *= keep;
        }
        let residual = score - expected;
        self.weight += 1.0;
        self.sum += residual;
        self.squares += residual * residual;
        self.expected += expected;
        let level = self.expected / self.weight;
        let improved = shift_accuracy(expected, logit_shift(level, CHANGE_WORTH_FINDING));
        self.worth_finding += log_likelihood(score, improved) - log_likelihood(score, expected);
    }

    /// Whether the outcomes are `odds` times likelier without a change worth finding than with
    /// it ([`Residuals::worth_finding`]).
    pub fn rule_out_change(&self, odds: f64) -> bool {
        self.worth_finding < -odds.ln()
    }

    /// The mean accuracy training expected of the outcomes, if there are any.
    pub fn level(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.expected / self.weight)
    }

    /// The variance of one residual: their spread about their mean, taken with
    /// `VARIANCE_PRIOR` pseudo-residuals at the largest a score can have (1/4).
    pub(crate) fn variance(&self) -> f64 {
        let spread = match self.weight > 0.0 {
            true => (self.squares - self.sum * self.sum / self.weight).max(0.0),
            false => 0.0,
        };
        (spread + VARIANCE_PRIOR * 0.25) / (self.weight + VARIANCE_PRIOR)
    }

    /// The posterior mean of the shift under a normal prior of spread `SHIFT_SPREAD` around no
    /// change, and its standard error. Residuals that agree (a model that changed answers
    /// alike) shrink less and settle sooner than scattered ones.
    pub fn mean(&self) -> (f64, f64) {
        let variance = self.variance();
        let n = self.weight + variance / (SHIFT_SPREAD * SHIFT_SPREAD);
        (self.sum / n, (variance / n).sqrt())
    }

    /// The shift they give: their mean shrunk toward no change, once it stands
    /// `SHIFT_SIGNIFICANCE` standard errors out of the noise (and out of the small bias that
    /// choosing a model where its estimate is high gives its outcomes); 0 before.
    pub fn shift(&self) -> f64 {
        let (mean, error) = self.mean();
        match mean.abs() > SHIFT_SIGNIFICANCE * error {
            true => mean,
            false => 0.0,
        }
    }

    /// [`Residuals::shift`] as the change of log-odds it is at the outcomes' level.
    pub fn logit_shift(&self) -> f64 {
        match (self.shift(), self.level()) {
            (shift, Some(level)) if shift != 0.0 => logit_shift(level, shift),
            _ => 0.0,
        }
    }
}

/// Accuracies this close to 0 or 1 are taken as this far from them in log-odds.
const LOGIT_MARGIN: f64 = 0.01;

fn logit(p: f64) -> f64 {
    let p = p.clamp(LOGIT_MARGIN, 1.0 - LOGIT_MARGIN);
    (p / (1.0 - p)).ln()
}

/// The log-likelihood of `score` as a Bernoulli outcome of probability `p` (a fractional score
/// as that share of a success).
fn log_likelihood(score: f64, p: f64) -> f64 {
    let p = p.clamp(LOGIT_MARGIN, 1.0 - LOGIT_MARGIN);
    score * p.ln() + (1.0 - score) * (1.0 - p).ln()
}

/// The change of log-odds that moves accuracy `level` by `delta`.
pub fn logit_shift(level: f64, delta: f64) -> f64 {
    logit(level + delta) - logit(level)
}

/// Accuracy `accuracy` with its log-odds moved by `shift`: a model that got better gains most
/// where it was middling and little where it was nearly always right or wrong, as a stronger
/// model does (and one that got worse likewise). Never moves against the shift's sign.
pub fn shift_accuracy(accuracy: f64, shift: f64) -> f64 {
    let moved = 1.0 / (1.0 + (-(logit(accuracy) + shift)).exp());
    if shift > 0.0 {
        moved.max(accuracy)
    } else if shift < 0.0 {
        moved.min(accuracy)
    } else {
        accuracy
    }
}

/// A cell's evidence on accuracy and on cost (outcomes need not report a cost).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CellEvidence {
    pub accuracy: Evidence,
    pub cost: Evidence,
}

impl CellEvidence {
    pub fn is_untouched(&self) -> bool {
        self.accuracy.is_untouched() && self.cost.is_untouched()
    }
}

/// How far a model's accuracy is expected to move after training, a priori: the spread of
/// the normal prior its shift is shrunk with. At the largest residual variance (1/4) it weighs
/// as 10 outcomes at no change.
pub const SHIFT_SPREAD: f64 = 0.158;
/// Pseudo-residuals of variance 1/4 that a model's residual variance is estimated with, so that
/// its first few outcomes, alike by chance, do not look certain.
pub const VARIANCE_PRIOR: f64 = 5.0;
/// Standard errors a model's mean residual must stand out by before it shifts the model. Its
/// outcomes can stand out of its training means with no change at all (a model is chosen where
/// its estimates are high): at 2, one MMLU-Pro model gathered a false shift of +0.15 from 60
/// outcomes; at 2.5 a rare one remains (+0.08 for one RouterBench model over 190 outcomes).
pub const SHIFT_SIGNIFICANCE: f64 = 2.5;
/// A model's shift forgets with this many times the cells' half-life, in its own outcomes.
pub const SHIFT_HALF_LIFE_FACTOR: f64 = 10.0;

/// What routing reads of the learned evidence for one cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterEvidence<'a> {
    /// One cell per model.
    pub cells: &'a [CellEvidence],
    /// Each model's shift of log-odds.
    pub shifts: &'a [f64],
    /// Per model, its accuracy here as learned again from its outcomes after it changed
    /// (`None`, or an empty slice, where it did not).
    pub relearned: &'a [Option<f64>],
}

/// One outcome: how well `model` answered a query, and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The clusters that voted for the query (indices over all k-means solutions) and their
    /// vote weights as routing gave them: summing to 1 over the query, each of a bagged
    /// router's solutions holding `1 / bag` of it.
    pub votes: Vec<(u32, f32)>,
    /// Index in the router's models.
    pub model: usize,
    /// In [0, 1].
    pub score: f64,
    /// Dollars actually paid, when known.
    pub cost: Option<f64>,
}

/// Where a run of observations came from (a file, a server's state directory), for
/// `router.json`'s provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackSource {
    pub source: String,
    pub observations: u64,
    /// The half-life they were taken in with (observations per cell), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life: Option<f64>,
}

/// Everything a router has learned since training (equal when the outcomes, their sources and
/// the cells are, whatever the change bookkeeping).
#[derive(Debug, Clone, Default)]
pub struct Learned {
    /// Outcomes taken in.
    pub observations: u64,
    pub sources: Vec<FeedbackSource>,
    /// `(clusters, models)` cells, cluster-major; empty until the first outcome.
    cells: Vec<CellEvidence>,
    /// Per model, residuals of its outcomes against the training estimates (weight, sum),
    /// and the shift they give; empty with the cells.
    shift_evidence: Vec<Residuals>,
    shifts: Vec<f64>,
    /// Per cluster, the [`Learned::version`] of its last change (empty with the cells).
    changed: Vec<u64>,
    /// Bumped by every change, so that derived tables know what to rebuild.
    version: u64,
}

impl PartialEq for Learned {
    fn eq(&self, other: &Self) -> bool {
        self.observations == other.observations
            && self.sources == other.sources
            && self.cells == other.cells
            && self.shift_evidence == other.shift_evidence
    }
}

impl Learned {
    /// Evidence `cells` laid out `(clusters, models)` and each model's `shift_evidence`, as
    /// read back from a router file.
    pub fn from_cells(
        observations: u64,
        sources: Vec<FeedbackSource>,
        cells: Vec<CellEvidence>,
        shift_evidence: Vec<Residuals>,
        clusters: usize,
    ) -> Self {
        let touched = cells.iter().any(|c| !c.is_untouched())
            || shift_evidence.iter().any(|r| r.weight > 0.0);
        if !touched {
            return Self {
                observations,
                sources,
                ..Self::default()
            };
        }
        let shifts = shift_evidence.iter().map(Residuals::logit_shift).collect();
        Self {
            observations,
            sources,
            changed: vec![0; clusters],
            cells,
            shift_evidence,
            shifts,
            version: 0,
        }
    }

    /// What routing reads for cluster `c`; `None` before any outcome.
    pub fn cluster(&self, c: usize, models: usize) -> Option<ClusterEvidence<'_>> {
        (!self.cells.is_empty()).then(|| ClusterEvidence {
            cells: &self.cells[c * models..(c + 1) * models],
            shifts: &self.shifts,
            relearned: &[],
        })
    }

    /// Every cell, `(clusters, models)` (empty before any outcome).
    pub fn cells(&self) -> &[CellEvidence] {
        &self.cells
    }

    /// Each model's residual evidence (empty before any outcome).
    pub fn shift_evidence(&self) -> &[Residuals] {
        &self.shift_evidence
    }

    /// Model `m`'s shift of log-odds as applied, and the residuals' shrunk mean and standard
    /// error it comes from (in accuracy).
    pub fn shift(&self, m: usize) -> (f64, f64, f64) {
        let (mean, error) = self
            .shift_evidence
            .get(m)
            .copied()
            .unwrap_or_default()
            .mean();
        (self.shifts.get(m).copied().unwrap_or(0.0), mean, error)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether cluster `c` changed after `version`.
    pub fn changed_since(&self, c: usize, version: u64) -> bool {
        self.changed.get(c).is_some_and(|&v| v > version)
    }

    /// Records an outcome in the cells of `votes` (weights as in [`Observation::votes`]),
    /// scaling each weight by `bag` so that every k-means solution takes in one observation,
    /// and its score against what training `expected` in the model's shift. Returns whether it
    /// moved the model beyond the voting cells: its shift applies, or did before (a shifted
    /// model is learned again from all its outcomes, in every cluster).
    pub(crate) fn add(
        &mut self,
        observation: &Observation,
        expected: Option<f64>,
        bag: usize,
        clusters: usize,
        models: usize,
        half_life: Option<f64>,
    ) -> bool {
        if self.cells.is_empty() {
            self.cells = vec![CellEvidence::default(); clusters * models];
            self.shift_evidence = vec![Residuals::default(); models];
            self.shifts = vec![0.0; models];
            self.changed = vec![0; clusters];
        }
        self.version += 1;
        for &(cluster, weight) in &observation.votes {
            let weight = weight as f64 * bag as f64;
            let cell = &mut self.cells[cluster as usize * models + observation.model];
            cell.accuracy.add(weight, observation.score, half_life);
            if let Some(cost) = observation.cost {
                cell.cost.add(weight, cost, half_life);
            }
            self.changed[cluster as usize] = self.version;
        }
        let shifted_before = self.shifts[observation.model] != 0.0;
        if let Some(expected) = expected {
            let residuals = &mut self.shift_evidence[observation.model];
            residuals.add(
                expected,
                observation.score,
                half_life.map(|h| h * SHIFT_HALF_LIFE_FACTOR),
            );
            self.shifts[observation.model] = residuals.logit_shift();
        }
        self.observations += 1;
        // Until a shift applies, an outcome moves the voting cells alone: routing rebuilds only
        // their clusters' votes.
        let everywhere = shifted_before || self.shifts[observation.model] != 0.0;
        if everywhere {
            self.changed.fill(self.version);
        }
        everywhere
    }

    /// The evidence of the first `clusters` clusters (a router narrowed to its first k-means
    /// solutions).
    pub(crate) fn first_clusters(&self, clusters: usize, models: usize) -> Learned {
        if self.cells.is_empty() {
            return self.clone();
        }
        Learned::from_cells(
            self.observations,
            self.sources.clone(),
            self.cells[..clusters * models].to_vec(),
            self.shift_evidence.clone(),
            clusters,
        )
    }

    /// Scales the costs observed for model `m` by `factor` (its price changed).
    pub(crate) fn scale_costs(&mut self, m: usize, models: usize, factor: f64) {
        if self.cells.is_empty() {
            return;
        }
        self.version += 1;
        for cell in self.cells.iter_mut().skip(m).step_by(models) {
            cell.cost.sum *= factor;
        }
        self.changed.fill(self.version);
    }

    /// Counts `observations` from `source` in the provenance, extending its last run.
    pub fn note_source(&mut self, source: &str, observations: u64, half_life: Option<f64>) {
        match self.sources.last_mut() {
            Some(last) if last.source == source && last.half_life == half_life => {
                last.observations += observations
            }
            _ => self.sources.push(FeedbackSource {
                source: source.to_string(),
                observations,
                half_life,
            }),
        }
    }

    /// This evidence for a router whose models are `to` (where it had `from`): cells of models
    /// both share move, those of dropped models go, new models start untouched.
    pub fn remap(&self, from: &[String], to: &[String]) -> Learned {
        if self.cells.is_empty() {
            return Learned {
                observations: self.observations,
                sources: self.sources.clone(),
                ..Learned::default()
            };
        }
        let clusters = self.cells.len() / from.len();
        let mut cells = vec![CellEvidence::default(); clusters * to.len()];
        let mut shifts = vec![Residuals::default(); to.len()];
        for (new, name) in to.iter().enumerate() {
            if let Some(old) = from.iter().position(|m| m == name) {
                for c in 0..clusters {
                    cells[c * to.len() + new] = self.cells[c * from.len() + old];
                }
                shifts[new] = self.shift_evidence[old];
            }
        }
        Learned::from_cells(
            self.observations,
            self.sources.clone(),
            cells,
            shifts,
            clusters,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_a_weighted_mean_with_the_training_answers() {
        let mut e = Evidence::default();
        assert_eq!(e.combine(4.0, Some(0.5)), (4.0, Some(0.5)));
        e.add(0.5, 1.0, None);
        e.add(1.5, 0.0, None);
        // (4·0.5 + 0.5·1 + 1.5·0) / 6
        assert_eq!(e.combine(4.0, Some(0.5)), (6.0, Some(2.5 / 6.0)));
        // A cell without training answers is its outcomes' mean.
        assert_eq!(e.combine(0.0, None), (2.0, Some(0.25)));
    }

    #[test]
    fn a_half_life_halves_old_evidence_after_that_many_observations() {
        let mut e = Evidence::default();
        for _ in 0..10 {
            e.add(1.0, 0.0, Some(10.0));
        }
        // The 20 training answers count as 10 after 10 observations of weight 1.
        let (n, mean) = e.combine(20.0, Some(1.0));
        assert!((e.kept - 0.5).abs() < 1e-12);
        assert!((n - (10.0 + e.weight)).abs() < 1e-12);
        assert!((mean.unwrap() - 10.0 / n).abs() < 1e-12);
        // The outcomes' own weight is discounted too: Σ 2^(−k/10), k = 0..9.
        let expected: f64 = (0..10).map(|k| 0.5f64.powf(k as f64 / 10.0)).sum();
        assert!((e.weight - expected).abs() < 1e-12);
    }

    #[test]
    fn residuals_that_agree_settle_sooner_than_scattered_ones_with_the_same_mean() {
        // Before any outcome: the largest variance, 10 pseudo-outcomes at no change.
        let (mean, error) = Residuals::default().mean();
        assert_eq!(mean, 0.0);
        assert!((error - 0.5 / (0.25 / (SHIFT_SPREAD * SHIFT_SPREAD)).sqrt()).abs() < 1e-12);
        let (mut agreeing, mut scattered) = (Residuals::default(), Residuals::default());
        for i in 0..12 {
            agreeing.add(0.5, 0.8, None);
            scattered.add(0.2, if i % 2 == 0 { 1.0 } else { 0.0 }, None);
        }
        assert!((agreeing.sum - scattered.sum).abs() < 1e-12);
        assert!(agreeing.variance() < 0.1, "{}", agreeing.variance());
        assert!((scattered.variance() - 0.25).abs() < 1e-9);
        assert!(agreeing.shift() > 0.2, "{}", agreeing.shift());
        assert_eq!(scattered.shift(), 0.0);
        // In log-odds at their level (0.5): the shift that moves 0.5 to 0.5 + shift.
        assert_eq!(agreeing.level(), Some(0.5));
        let moved = shift_accuracy(0.5, agreeing.logit_shift());
        assert!((moved - 0.5 - agreeing.shift()).abs() < 1e-9, "{moved}");
    }

    #[test]
    fn one_failure_where_a_model_was_middling_leaves_a_change_worth_finding_possible() {
        // Odds of 4 against the change.
        let ruled_out = |r: &Residuals| r.rule_out_change(4.0);
        let mut failures = Residuals::default();
        failures.add(0.5, 0.0, None);
        assert!(!ruled_out(&failures));
        let mut mixed = failures;
        failures.add(0.5, 0.0, None);
        assert!(ruled_out(&failures));
        // A success between them keeps the change possible; a run of them makes it likelier
        // than none.
        mixed.add(0.5, 1.0, None);
        mixed.add(0.5, 0.0, None);
        assert!(!ruled_out(&mixed));
        for _ in 0..3 {
            mixed.add(0.5, 1.0, None);
        }
        assert!(mixed.worth_finding > 0.0);
        // At odds of 2, one failure rules the change out where the model was middling, not
        // where it was weak.
        let one_failure = |expected: f64| {
            let mut r = Residuals::default();
            r.add(expected, 0.0, None);
            r.rule_out_change(2.0)
        };
        assert!(one_failure(0.5));
        assert!(!one_failure(0.3));
        // Where the model was strong, an improved one would hardly fail: one failure settles it.
        let mut strong = Residuals::default();
        strong.add(0.8, 0.0, None);
        assert!(ruled_out(&strong));
    }

    #[test]
    fn a_logit_shift_moves_middling_accuracies_most_and_never_against_its_sign() {
        let up = logit_shift(0.58, 0.3);
        assert!((shift_accuracy(0.58, up) - 0.88).abs() < 1e-9);
        let (hard, easy) = (
            shift_accuracy(0.3, up) - 0.3,
            shift_accuracy(0.95, up) - 0.95,
        );
        assert!(hard > 0.35 && easy > 0.0 && easy < 0.05, "{hard} {easy}");
        // Certain cells stay certain in the shift's direction.
        assert_eq!(shift_accuracy(1.0, up), 1.0);
        assert_eq!(shift_accuracy(0.0, -up), 0.0);
        assert!(shift_accuracy(1.0, -up) < 0.96);
        assert_eq!(shift_accuracy(0.7, 0.0), 0.7);
        assert_eq!(shift_accuracy(0.0, 0.0), 0.0);
    }

    #[test]
    fn remap_follows_models_by_name() {
        let mut learned = Learned::default();
        let from = ["a".to_string(), "b".to_string()];
        let observation = Observation {
            votes: vec![(1, 1.0)],
            model: 1,
            score: 1.0,
            cost: Some(0.5),
        };
        learned.add(&observation, Some(0.5), 1, 2, 2, None);
        let to = ["b".to_string(), "new".to_string()];
        let remapped = learned.remap(&from, &to);
        assert_eq!(remapped.observations, 1);
        let cells = remapped.cluster(1, 2).unwrap().cells;
        assert_eq!(cells[0], learned.cluster(1, 2).unwrap().cells[1]);
        assert!(cells[1].is_untouched());
        assert!(remapped.cluster(0, 2).unwrap().cells[0].is_untouched());
        // The model's evidence moves with it (one residual of 0.5 does not stand out yet).
        assert_eq!(remapped.shift_evidence()[0].sum, 0.5);
        assert_eq!(remapped.shift(0).0, 0.0);
        assert_eq!(remapped.shift(1).0, 0.0);
    }
}
