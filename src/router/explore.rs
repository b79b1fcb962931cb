//! Leaving the greedy choice now and then: a model that got better after training is only
//! found again if it is sometimes chosen and its outcomes observed.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_distr::{Beta, Distribution};

use super::{Estimates, RouteParams, RoutedBatch, Router};
use crate::error::{Error, Result};

/// How a routed query may leave the greedy choice.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Exploration {
    /// Always the greedy choice.
    #[default]
    Off,
    /// Thompson sampling: every voting cluster's accuracy per model is drawn from its
    /// posterior ([`super::ClusterStats::accuracy_posterior`]), the query's totals are
    /// recomputed with the drawn values, and the models are ranked by them.
    Thompson,
    /// With this probability a uniformly drawn other model goes first.
    Epsilon(f64),
}

impl FromStr for Exploration {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "off" => Ok(Exploration::Off),
            "thompson" => Ok(Exploration::Thompson),
            _ => match s.strip_prefix("epsilon:").map(str::parse::<f64>) {
                Some(Ok(e)) if (0.0..=1.0).contains(&e) => Ok(Exploration::Epsilon(e)),
                _ => Err(Error::Invalid(format!(
                    "exploration `{s}`: expected off, thompson or epsilon:E with E in [0, 1]"
                ))),
            },
        }
    }
}

impl fmt::Display for Exploration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exploration::Off => f.write_str("off"),
            Exploration::Thompson => f.write_str("thompson"),
            Exploration::Epsilon(e) => write!(f, "epsilon:{e}"),
        }
    }
}

impl Router {
    /// Query `i` of `routed` ranked under `exploration` (model index and total, best first), or
    /// `None` when it keeps the greedy ranking.
    pub fn explore(
        &self,
        routed: &RoutedBatch,
        i: usize,
        params: &RouteParams,
        exploration: Exploration,
        rng: &mut impl Rng,
    ) -> Option<Vec<(usize, f32)>> {
        let greedy = routed.ranking(i);
        let totals = routed.totals(i);
        let ranking: Vec<(usize, f32)> = match exploration {
            Exploration::Off => return None,
            Exploration::Epsilon(e) => {
                if self.models.len() < 2 || !rng.random_bool(e) {
                    return None;
                }
                // Any model but the greedy one, then the greedy order for fallbacks.
                let pick = greedy[rng.random_range(1..greedy.len())];
                std::iter::once(pick)
                    .chain(greedy.iter().copied().filter(|&m| m != pick))
                    .map(|m| (m, totals[m]))
                    .collect()
            }
            Exploration::Thompson => {
                let sampled = self.sampled_totals(routed, i, params, rng);
                let mut order: Vec<usize> = (0..self.models.len()).collect();
                order.sort_by(|&a, &b| sampled[b].total_cmp(&sampled[a]));
                order.into_iter().map(|m| (m, sampled[m] as f32)).collect()
            }
        };
        (ranking[0].0 != greedy[0]).then_some(ranking)
    }

    /// Query `i`'s totals with each voting cluster's accuracies drawn from their posteriors
    /// (costs at their estimates).
    fn sampled_totals(
        &self,
        routed: &RoutedBatch,
        i: usize,
        params: &RouteParams,
        rng: &mut impl Rng,
    ) -> Vec<f64> {
        let priors = self.priors();
        let mut totals = vec![0.0; self.models.len()];
        for (cluster, _, weight) in routed.nearest(i) {
            let learned = self.learned.cluster(cluster, self.models.len());
            let stats = &self.clusters[cluster];
            let posterior = stats.accuracy_posterior(&priors, params.prior_strength, learned);
            let estimates = Estimates {
                accuracy: posterior
                    .into_iter()
                    .map(|ab| {
                        ab.map(|(a, b)| {
                            Beta::new(a, b).map_or(a / (a + b), |beta| beta.sample(rng))
                        })
                    })
                    .collect(),
                cost: stats
                    .estimates(&priors, params.prior_strength, learned)
                    .cost,
            };
            for (total, vote) in totals
                .iter_mut()
                .zip(params.scoring.cluster_votes(&estimates))
            {
                *total += weight as f64 * vote;
            }
        }
        totals
    }
}
