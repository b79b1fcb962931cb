//! Per-cluster, per-model statistics of the training records.

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
