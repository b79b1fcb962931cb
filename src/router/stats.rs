//! Per-cluster, per-model statistics of the training records, and their shrinkage toward each
//! model's global means.

use serde::{Deserialize, Serialize};

use super::online::{shift_accuracy, ClusterEvidence, Evidence, SHIFT_SIGNIFICANCE};
use crate::records::RoutingRecord;

/// One cluster's training queries and, per model (in the router's model order), how many of
/// them the model was evaluated on, its mean score and its mean cost there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// Training queries assigned to the cluster.
    pub size: usize,
    /// Evaluated answers per model.
    pub count: Vec<usize>,
    /// Mean score per model; `None` where the model has no evaluated answer in the cluster.
    pub accuracy: Vec<Option<f64>>,
    /// Mean dollars per answer, over the same answers as `accuracy`.
    pub cost: Vec<Option<f64>>,
    /// Mean prompt and completion tokens per answer over the same answers, where every one of
    /// them had token counts: `cost` is then recomputed from them at new prices
    /// ([`ClusterStats::reprice`]). Empty when no model has token counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<Option<[f64; 2]>>,
}

impl ClusterStats {
    /// Statistics of `k` clusters from each record's cluster `labels`. Not-evaluated answers
    /// (null scores) are left out of a model's means rather than counted as wrong.
    pub fn compute(
        records: &[&RoutingRecord],
        labels: &[u32],
        k: usize,
        models: usize,
    ) -> Vec<Self> {
        // (evaluated, score sum, cost sum, answers with tokens, token sums) per cluster × model.
        let mut sums = vec![(0usize, 0.0f64, 0.0f64, 0usize, [0.0f64; 2]); k * models];
        let mut sizes = vec![0usize; k];
        for (record, &label) in records.iter().zip(labels) {
            let cluster = label as usize;
            sizes[cluster] += 1;
            for m in 0..models {
                if let Some(score) = record.scores[m] {
                    let cell = &mut sums[cluster * models + m];
                    cell.0 += 1;
                    cell.1 += score;
                    cell.2 += record.costs[m].unwrap_or(0.0);
                    if let Some([prompt, completion]) = record.tokens.get(m).copied().flatten() {
                        cell.3 += 1;
                        cell.4[0] += prompt;
                        cell.4[1] += completion;
                    }
                }
            }
        }
        let any_tokens = sums.iter().any(|cell| cell.3 > 0);
        sizes
            .into_iter()
            .enumerate()
            .map(|(c, size)| {
                let cells = &sums[c * models..(c + 1) * models];
                let mean = |sum: f64, n: usize| (n > 0).then(|| sum / n as f64);
                ClusterStats {
                    size,
                    count: cells.iter().map(|cell| cell.0).collect(),
                    accuracy: cells.iter().map(|cell| mean(cell.1, cell.0)).collect(),
                    cost: cells.iter().map(|cell| mean(cell.2, cell.0)).collect(),
                    tokens: match any_tokens {
                        true => cells.iter().map(Self::mean_tokens).collect(),
                        false => Vec::new(),
                    },
                }
            })
            .collect()
    }

    /// A cell's mean tokens, when every evaluated answer in it had token counts.
    fn mean_tokens(cell: &(usize, f64, f64, usize, [f64; 2])) -> Option<[f64; 2]> {
        let &(evaluated, _, _, with_tokens, [prompt, completion]) = cell;
        (evaluated > 0 && with_tokens == evaluated)
            .then(|| [prompt / evaluated as f64, completion / evaluated as f64])
    }
}

/// Each model's mean accuracy and cost over every training query it was evaluated on: what a
/// cluster's noisy estimates are shrunk toward.
#[derive(Debug, Clone, PartialEq)]
pub struct Priors {
    pub accuracy: Vec<Option<f64>>,
    pub cost: Vec<Option<f64>>,
}

impl Priors {
    /// The global means, from one clustering's statistics (its clusters partition the training
    /// queries, so their counts and means add back up to the whole).
    pub fn of(clusters: &[ClusterStats]) -> Self {
        let models = clusters.first().map_or(0, |c| c.count.len());
        let global = |values: fn(&ClusterStats) -> &Vec<Option<f64>>| -> Vec<Option<f64>> {
            (0..models)
                .map(|m| {
                    let (sum, n) =
                        clusters
                            .iter()
                            .fold((0.0, 0usize), |(sum, n), c| match values(c)[m] {
                                Some(v) => (sum + v * c.count[m] as f64, n + c.count[m]),
                                None => (sum, n),
                            });
                    (n > 0).then(|| sum / n as f64)
                })
                .collect()
        };
        Self {
            accuracy: global(|c| &c.accuracy),
            cost: global(|c| &c.cost),
        }
    }
}

/// One cluster's point estimates per model, in the router's model order: what scoring turns
/// into votes. `None` where a model has no data there (it then gets no vote from the cluster).
#[derive(Debug, Clone, PartialEq)]
pub struct Estimates {
    pub accuracy: Vec<Option<f64>>,
    pub cost: Vec<Option<f64>>,
}

impl ClusterStats {
    /// The estimates routing uses: the training means, with what was `learned` since training
    /// taken in (the outcomes in this cluster's cells, and each model's accuracy shift applied
    /// to its training means), shrunk toward `priors` (shifted alike) with strength `m`
    /// (pseudo-answers at the global mean): `(n·mean + m·global) / (n + m)` for accuracy and for
    /// cost, `n` counting training answers and observed outcomes alike. A model without answers
    /// in the cluster then gets its global means (a vote) instead of none; one without any
    /// answer in training votes only where outcomes were observed. `m = 0` without outcomes
    /// gives the training means untouched: the paper's estimator.
    pub fn estimates(
        &self,
        priors: &Priors,
        m: f64,
        learned: Option<ClusterEvidence<'_>>,
    ) -> Estimates {
        let shrink = |(n, mean): (f64, Option<f64>), global: Option<f64>| match global {
            Some(global) if m > 0.0 => Some((mean.unwrap_or(0.0) * n + m * global) / (n + m)),
            _ => mean,
        };
        let models = self.count.len();
        Estimates {
            accuracy: (0..models)
                .map(|i| match relearned(learned, i) {
                    Some(profile) => {
                        shrink(Self::outcomes(i, learned), Some(profile)).or(Some(profile))
                    }
                    None => {
                        let global = shifted(priors.accuracy[i], learned, i);
                        shrink(self.accuracy_evidence(i, learned), global)
                    }
                })
                .collect(),
            cost: (0..models)
                .map(|i| shrink(self.cost_evidence(i, learned), priors.cost[i]))
                .collect(),
        }
    }

    /// Each model's accuracy posterior in this cluster, as Beta `(a, b)` pseudo-counts: the
    /// answers and outcomes counted by [`ClusterStats::estimates`] (a score `s` counting `s`
    /// successes and `1 − s` failures), the `m` pseudo-answers at the global mean, and half a
    /// success and half a failure (Jeffreys' prior) so that no count is zero. Its mean is the
    /// shrunk estimate up to that half; `None` where the model has no estimate.
    pub fn accuracy_posterior(
        &self,
        priors: &Priors,
        m: f64,
        learned: Option<ClusterEvidence<'_>>,
    ) -> Vec<Option<(f64, f64)>> {
        (0..self.count.len())
            .map(|i| {
                let (n, mean) = match relearned(learned, i) {
                    Some(_) => Self::outcomes(i, learned),
                    None => self.accuracy_evidence(i, learned),
                };
                let global = relearned(learned, i).or(shifted(priors.accuracy[i], learned, i));
                let (prior_n, global) = match global {
                    Some(global) if m > 0.0 => (m, global),
                    _ => (0.0, 0.0),
                };
                if mean.is_none() && prior_n == 0.0 {
                    return None;
                }
                let mean = mean.unwrap_or(0.0);
                Some((
                    n * mean + prior_n * global + 0.5,
                    n * (1.0 - mean) + prior_n * (1.0 - global) + 0.5,
                ))
            })
            .collect()
    }

    /// Model `i`'s accuracy answers (their mean shifted) and outcomes: (count, mean). The
    /// outcomes count once their mean stands [`SHIFT_SIGNIFICANCE`] standard errors out of the
    /// answers' (the same bar as a model's shift): outcomes reach only the model that was
    /// chosen, and moving its cells by their sampling noise while the other models' stay as
    /// trained tilts decisions toward whichever model's noise ran high (docs/EVALUATION.md, "A
    /// router that learns").
    fn accuracy_evidence(
        &self,
        i: usize,
        learned: Option<ClusterEvidence<'_>>,
    ) -> (f64, Option<f64>) {
        let mean = shifted(self.accuracy[i], learned, i);
        let outcomes = learned.map(|l| &l.cells[i].accuracy);
        match (outcomes, mean) {
            (Some(outcomes), Some(trained)) if !stands_out(outcomes, self.count[i], trained) => {
                (self.count[i] as f64, mean)
            }
            _ => Self::with_learned(self.count[i], mean, outcomes),
        }
    }

    /// Model `i`'s outcomes alone: (weight, mean).
    fn outcomes(i: usize, learned: Option<ClusterEvidence<'_>>) -> (f64, Option<f64>) {
        Self::with_learned(0, None, learned.map(|l| &l.cells[i].accuracy))
    }

    fn cost_evidence(&self, i: usize, learned: Option<ClusterEvidence<'_>>) -> (f64, Option<f64>) {
        Self::with_learned(
            self.count[i],
            self.cost[i],
            learned.map(|l| &l.cells[i].cost),
        )
    }

    /// The training answers' count and mean with the evidence learned since (untouched
    /// evidence leaves the training mean bit for bit as it was).
    fn with_learned(n: usize, mean: Option<f64>, learned: Option<&Evidence>) -> (f64, Option<f64>) {
        match learned {
            Some(evidence) if !evidence.is_untouched() => evidence.combine(n as f64, mean),
            _ => (n as f64, mean),
        }
    }
}

/// Whether the mean of `outcomes` stands [`SHIFT_SIGNIFICANCE`] standard errors out of the mean
/// `trained` of `answers` training answers, each seen with the variance of one answer there.
fn stands_out(outcomes: &Evidence, answers: usize, trained: f64) -> bool {
    if outcomes.weight <= 0.0 {
        return false;
    }
    let variance = answer_variance(trained) * (1.0 / outcomes.weight + 1.0 / answers.max(1) as f64);
    (outcomes.sum / outcomes.weight - trained).abs() >= SHIFT_SIGNIFICANCE * variance.sqrt()
}

/// The variance of one right/wrong answer where the mean is `mean`, kept off zero so that no
/// cluster is taken as certain.
pub(super) fn answer_variance(mean: f64) -> f64 {
    let p = mean.clamp(0.05, 0.95);
    p * (1.0 - p)
}

/// Model `i`'s accuracy here learned again from its outcomes, if it changed.
fn relearned(learned: Option<ClusterEvidence<'_>>, i: usize) -> Option<f64> {
    learned.and_then(|l| l.relearned.get(i).copied().flatten())
}

/// An accuracy moved by model `i`'s learned shift of log-odds (untouched without one).
fn shifted(accuracy: Option<f64>, learned: Option<ClusterEvidence<'_>>, i: usize) -> Option<f64> {
    match learned.map(|l| l.shifts[i]) {
        Some(shift) if shift != 0.0 => accuracy.map(|a| shift_accuracy(a, shift)),
        _ => accuracy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::online::{logit_shift, CellEvidence};

    fn cluster(count: &[usize], accuracy: &[Option<f64>], cost: &[Option<f64>]) -> ClusterStats {
        ClusterStats {
            size: count.iter().copied().max().unwrap_or(0),
            count: count.to_vec(),
            accuracy: accuracy.to_vec(),
            cost: cost.to_vec(),
            tokens: Vec::new(),
        }
    }

    #[test]
    fn shrinkage_by_hand() {
        // Model 0: 2 answers (1, 1) in cluster A, 6 answers (3 right) in B → global 5/8.
        // Model 1: no answers in A, 4 answers (1 right) in B → global 1/4.
        // Model 2: never evaluated.
        let a = cluster(
            &[2, 0, 0],
            &[Some(1.0), None, None],
            &[Some(0.02), None, None],
        );
        let b = cluster(
            &[6, 4, 0],
            &[Some(0.5), Some(0.25), None],
            &[Some(0.01), Some(0.004), None],
        );
        let priors = Priors::of(&[a.clone(), b.clone()]);
        assert_eq!(priors.accuracy, vec![Some(5.0 / 8.0), Some(0.25), None]);
        let global_cost_0 = (2.0 * 0.02 + 6.0 * 0.01) / 8.0;
        assert!((priors.cost[0].unwrap() - global_cost_0).abs() < 1e-15);

        let shrunk = a.estimates(&priors, 2.0, None);
        // (2·1 + 2·5/8) / (2 + 2) = 13/16; a model absent from the cluster gets its global mean.
        assert_eq!(shrunk.accuracy, vec![Some(13.0 / 16.0), Some(0.25), None]);
        assert!((shrunk.cost[0].unwrap() - (2.0 * 0.02 + 2.0 * global_cost_0) / 4.0).abs() < 1e-15);
        assert_eq!(shrunk.cost[1], Some(0.004));

        // Strength 0 is the paper's estimator: the training means as they are.
        let paper = b.estimates(&priors, 0.0, None);
        assert_eq!(
            (paper.accuracy, paper.cost),
            (b.accuracy.clone(), b.cost.clone())
        );

        // Outcomes observed after training count like answers: model 1 gets 2 outcomes of
        // score 1 in A (where it had none), model 2 (never trained) 1 outcome of 0.5.
        let mut cells = vec![CellEvidence::default(); 3];
        cells[1].accuracy.add(2.0, 1.0, None);
        cells[2].accuracy.add(1.0, 0.5, None);
        let no_shift = [0.0; 3];
        let evidence = |shifts| ClusterEvidence {
            cells: &cells,
            shifts,
            relearned: &[],
        };
        let learned = a.estimates(&priors, 2.0, Some(evidence(&no_shift)));
        // (2·1 + 2·1/4) / (2 + 2); model 2 has no global mean to shrink toward.
        assert_eq!(
            learned.accuracy,
            vec![Some(13.0 / 16.0), Some(0.625), Some(0.5)]
        );
        // No cost was observed: the costs are as before.
        assert_eq!(learned.cost, shrunk.cost);
        // A shift of log-odds for model 0 moves its training mean and its global mean alike;
        // this one takes the global mean 5/8 to 3/8.
        let shift = logit_shift(0.625, -0.25);
        let shifted = a.estimates(&priors, 2.0, Some(evidence(&[shift, 0.0, 0.0])));
        let expected = (2.0 * shift_accuracy(1.0, shift) + 2.0 * 0.375) / 4.0;
        assert!((shifted.accuracy[0].unwrap() - expected).abs() < 1e-12);
        assert!(shift_accuracy(1.0, shift) < 1.0);
        assert_eq!(shifted.accuracy[1], learned.accuracy[1]);
    }
}
