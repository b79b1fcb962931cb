//! Per-cluster, per-model statistics of the training records, and their shrinkage toward each
//! model's global means.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

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
        // (evaluated, score sum, cost sum) per cluster × model.
        let mut sums = vec![(0usize, 0.0f64, 0.0f64); k * models];
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
                }
            }
        }
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
                }
            })
            .collect()
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

impl ClusterStats {
    /// The statistics shrunk toward `priors` with strength `m` (pseudo-answers at the global
    /// mean): `(n·mean + m·global) / (n + m)` for accuracy and for cost. A model without answers
    /// in the cluster then gets its global means (a vote) instead of none; one without any
    /// answer in training stays without. `m = 0` returns the statistics untouched, which is the
    /// paper's estimator exactly.
    pub fn shrunk(&self, priors: &Priors, m: f64) -> Cow<'_, ClusterStats> {
        if m == 0.0 {
            return Cow::Borrowed(self);
        }
        let shrink = |means: &[Option<f64>], globals: &[Option<f64>]| -> Vec<Option<f64>> {
            means
                .iter()
                .zip(globals)
                .zip(&self.count)
                .map(|((mean, global), &n)| {
                    let global = (*global)?;
                    let n = n as f64;
                    Some((mean.unwrap_or(0.0) * n + m * global) / (n + m))
                })
                .collect()
        };
        Cow::Owned(ClusterStats {
            size: self.size,
            count: self.count.clone(),
            accuracy: shrink(&self.accuracy, &priors.accuracy),
            cost: shrink(&self.cost, &priors.cost),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(count: &[usize], accuracy: &[Option<f64>], cost: &[Option<f64>]) -> ClusterStats {
        ClusterStats {
            size: count.iter().copied().max().unwrap_or(0),
            count: count.to_vec(),
            accuracy: accuracy.to_vec(),
            cost: cost.to_vec(),
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

        let shrunk = a.shrunk(&priors, 2.0);
        // (2·1 + 2·5/8) / (2 + 2) = 13/16; a model absent from the cluster gets its global mean.
        assert_eq!(shrunk.accuracy, vec![Some(13.0 / 16.0), Some(0.25), None]);
        assert!((shrunk.cost[0].unwrap() - (2.0 * 0.02 + 2.0 * global_cost_0) / 4.0).abs() < 1e-15);
        assert_eq!(shrunk.cost[1], Some(0.004));
        assert_eq!(shrunk.count, a.count);

        // Strength 0 is the paper's estimator, untouched (not recomputed).
        assert!(matches!(a.shrunk(&priors, 0.0), Cow::Borrowed(_)));
        assert_eq!(*b.shrunk(&priors, 0.0), b);
    }
}
