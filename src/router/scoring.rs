//! How a cluster's statistics become each model's vote in that cluster.

use serde::{Deserialize, Serialize};

use super::stats::Estimates;
use crate::error::{Error, Result};

/// A scoring rule. Both are exact reproductions: `Paper` of the paper's formula, `Reference` of
/// the AvengersPro code's `balance_cluster_router.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Scoring {
    /// `α·p̃ + (1−α)·(1−q̃)` with accuracy p̃ and cost q̃ min-max normalised over the models with
    /// data in the cluster (a term on which all those models tie is 1 for all). A query's total
    /// for a model is `Σ_c w_c · score_c`.
    Paper { alpha: f64 },
    /// `w_perf·(acc−min)/(max−min) + w_cost·(1 − cost/max_cost)`, 0 for models under
    /// `min_accuracy`; the accuracy term is 1 when all accuracies are equal and the cost term is
    /// 1 when the highest cost is 0. Models are ranked by that score in each cluster (ties in
    /// model order) and a query's total is `Σ_c w_c / (rank_c + 1)`.
    Reference(ReferenceScoring),
}

/// The knobs of [`Scoring::Reference`], with the AvengersPro code's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReferenceScoring {
    pub performance_weight: f64,
    pub cost_sensitivity: f64,
    pub min_accuracy: f64,
}

impl Default for ReferenceScoring {
    fn default() -> Self {
        Self {
            performance_weight: 0.7,
            cost_sensitivity: 0.3,
            min_accuracy: 0.0,
        }
    }
}

impl Default for Scoring {
    fn default() -> Self {
        Scoring::Paper {
            alpha: Self::DEFAULT_ALPHA,
        }
    }
}

impl Scoring {
    /// Halfway between the most accurate and the cheapest routing.
    pub const DEFAULT_ALPHA: f64 = 0.5;

    /// This rule with its accuracy–cost trade-off set to `alpha` (1: most accurate, 0:
    /// cheapest). Reference scoring takes `performance_weight = α`, `cost_sensitivity = 1 − α`.
    pub fn at_alpha(self, alpha: f64) -> Scoring {
        match self {
            Scoring::Paper { .. } => Scoring::Paper { alpha },
            Scoring::Reference(reference) => Scoring::Reference(ReferenceScoring {
                performance_weight: alpha,
                cost_sensitivity: 1.0 - alpha,
                ..reference
            }),
        }
    }

    /// The accuracy–cost trade-off, as [`Scoring::at_alpha`] sets it.
    pub fn alpha(&self) -> f64 {
        match self {
            Scoring::Paper { alpha } => *alpha,
            Scoring::Reference(reference) => reference.performance_weight,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let in_unit = |name: &str, x: f64| {
            if (0.0..=1.0).contains(&x) {
                Ok(())
            } else {
                Err(Error::Invalid(format!("{name} must be in [0, 1], got {x}")))
            }
        };
        match *self {
            Scoring::Paper { alpha } => in_unit("--alpha", alpha),
            Scoring::Reference(ReferenceScoring {
                performance_weight,
                cost_sensitivity,
                min_accuracy,
            }) => {
                in_unit("--performance-weight", performance_weight)?;
                in_unit("--cost-sensitivity", cost_sensitivity)?;
                in_unit("--min-accuracy", min_accuracy)
            }
        }
    }

    /// Each model's score within one cluster, in model order; `None` where the model has no
    /// data there (it then gets no vote from the cluster).
    pub fn cluster_scores(&self, stats: &Estimates) -> Vec<Option<f64>> {
        let known =
            |values: &[Option<f64>]| -> Vec<f64> { values.iter().flatten().copied().collect() };
        let (accuracies, costs) = (known(&stats.accuracy), known(&stats.cost));
        let range = |values: &[f64]| {
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (min, max)
        };
        let (min_acc, max_acc) = range(&accuracies);
        let (min_cost, max_cost) = range(&costs);
        let accuracy_term = |acc: f64| {
            if max_acc > min_acc {
                (acc - min_acc) / (max_acc - min_acc)
            } else {
                1.0
            }
        };
        stats
            .accuracy
            .iter()
            .zip(&stats.cost)
            .map(|(acc, cost)| {
                let (acc, cost) = (acc.as_ref()?, cost.as_ref()?);
                Some(match *self {
                    Scoring::Paper { alpha } => {
                        let cost_term = if max_cost > min_cost {
                            1.0 - (cost - min_cost) / (max_cost - min_cost)
                        } else {
                            1.0
                        };
                        alpha * accuracy_term(*acc) + (1.0 - alpha) * cost_term
                    }
                    Scoring::Reference(ReferenceScoring {
                        performance_weight,
                        cost_sensitivity,
                        min_accuracy,
                    }) => {
                        if *acc < min_accuracy {
                            0.0
                        } else {
                            let cost_term = if max_cost > 0.0 {
                                1.0 - cost / max_cost
                            } else {
                                1.0
                            };
                            performance_weight * accuracy_term(*acc) + cost_sensitivity * cost_term
                        }
                    }
                })
            })
            .collect()
    }

    /// What each model adds to a query's total per unit of cluster weight, in model order:
    /// the score itself (`Paper`) or `1/(rank+1)` (`Reference`); 0 without data.
    pub fn cluster_votes(&self, stats: &Estimates) -> Vec<f64> {
        let scores = self.cluster_scores(stats);
        match self {
            Scoring::Paper { .. } => scores.iter().map(|s| s.unwrap_or(0.0)).collect(),
            Scoring::Reference(_) => {
                let mut ranked: Vec<usize> =
                    (0..scores.len()).filter(|&m| scores[m].is_some()).collect();
                // Stable: equal scores keep model order.
                ranked.sort_by(|&a, &b| scores[b].unwrap().total_cmp(&scores[a].unwrap()));
                let mut votes = vec![0.0; scores.len()];
                for (rank, m) in ranked.into_iter().enumerate() {
                    votes[m] = 1.0 / (rank as f64 + 1.0);
                }
                votes
            }
        }
    }
}
