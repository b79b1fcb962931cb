//! Scoring a routing policy on test queries the way the paper and the AvengersPro code do:
//! accuracy per dataset, their unweighted mean, and the dollars spent.

use serde::Serialize;

use crate::records::RoutingData;

/// How one policy (always-model-X, the oracle, or the router at one α) did on a test set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyMetrics {
    /// Mean score of the chosen models per dataset, in [`TestSet::datasets`] order.
    pub accuracy_by_dataset: Vec<f64>,
    /// Mean over datasets (not over queries), as in the paper.
    pub average_accuracy: f64,
    /// Dollars of the chosen models over the test set.
    pub cost: f64,
    pub cost_per_query: f64,
    /// Mean seconds of the chosen answers that have a latency (`usages.<model>.latency_s`);
    /// `None` when none has.
    pub latency_per_query: Option<f64>,
    /// Choices of a model whose score is null on that query: left out of accuracy (there is no
    /// evidence either way) but their cost, when known, is counted.
    pub unscored: usize,
    /// Share of the test queries sent to each model, in model order.
    pub selection: Vec<f64>,
}

/// The test queries of a split, grouped by dataset.
#[derive(Debug, Clone)]
pub struct TestSet<'a> {
    pub data: &'a RoutingData,
    /// Positions in `data.records`.
    pub rows: Vec<usize>,
    /// Datasets that have test queries, in order of first appearance.
    pub datasets: Vec<String>,
    /// Index into `datasets` of each row.
    dataset_of: Vec<usize>,
}

impl<'a> TestSet<'a> {
    pub fn new(data: &'a RoutingData, rows: Vec<usize>) -> Self {
        let mut datasets: Vec<String> = Vec::new();
        let dataset_of = rows
            .iter()
            .map(|&i| {
                let name = &data.records[i].dataset;
                datasets.iter().position(|d| d == name).unwrap_or_else(|| {
                    datasets.push(name.clone());
                    datasets.len() - 1
                })
            })
            .collect();
        Self {
            data,
            rows,
            datasets,
            dataset_of,
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Metrics of choosing `choices[j]` (a model index) for test row `j`.
    pub fn score(&self, choices: &[usize]) -> PolicyMetrics {
        assert_eq!(choices.len(), self.rows.len(), "one choice per test query");
        let models = self.data.models.len();
        let mut sums = vec![(0.0f64, 0usize); self.datasets.len()];
        let (mut cost, mut unscored) = (0.0, 0);
        let (mut latency, mut timed) = (0.0, 0usize);
        let mut selection = vec![0.0; models];
        for ((&row, &dataset), &m) in self.rows.iter().zip(&self.dataset_of).zip(choices) {
            let record = &self.data.records[row];
            selection[m] += 1.0;
            cost += record.costs[m].unwrap_or(0.0);
            if let Some(seconds) = record.latencies[m] {
                latency += seconds;
                timed += 1;
            }
            match record.scores[m] {
                Some(score) => {
                    sums[dataset].0 += score;
                    sums[dataset].1 += 1;
                }
                None => unscored += 1,
            }
        }
        let accuracy_by_dataset: Vec<f64> = sums
            .iter()
            .map(|&(sum, n)| if n > 0 { sum / n as f64 } else { 0.0 })
            .collect();
        let n = self.rows.len().max(1) as f64;
        PolicyMetrics {
            average_accuracy: accuracy_by_dataset.iter().sum::<f64>()
                / accuracy_by_dataset.len().max(1) as f64,
            accuracy_by_dataset,
            cost,
            cost_per_query: cost / n,
            latency_per_query: (timed > 0).then(|| latency / timed as f64),
            unscored,
            selection: selection.into_iter().map(|s| s / n).collect(),
        }
    }

    /// Always model `m`.
    pub fn single(&self, m: usize) -> PolicyMetrics {
        self.score(&vec![m; self.rows.len()])
    }

    /// Per query, the cheapest of the models with the best score (model order among equals).
    pub fn oracle(&self) -> PolicyMetrics {
        let choices: Vec<usize> = self
            .rows
            .iter()
            .map(|&row| {
                oracle_choice(
                    &self.data.records[row].scores,
                    &self.data.records[row].costs,
                )
            })
            .collect();
        self.score(&choices)
    }
}

fn oracle_choice(scores: &[Option<f64>], costs: &[Option<f64>]) -> usize {
    let cost = |m: usize| costs[m].unwrap_or(0.0);
    let mut best: Option<usize> = None;
    for (m, score) in scores.iter().enumerate() {
        let Some(score) = score else { continue };
        best = match best {
            Some(b) => {
                let b_score = scores[b].expect("best is scored");
                if *score > b_score || (*score == b_score && cost(m) < cost(b)) {
                    Some(m)
                } else {
                    Some(b)
                }
            }
            None => Some(m),
        };
    }
    best.unwrap_or(0)
}
