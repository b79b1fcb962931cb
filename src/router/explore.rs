//! Leaving the greedy choice now and then: a model that got better after training is only
//! found again if it is sometimes chosen and its outcomes observed.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_distr::{Beta, Distribution, Normal};

use super::{
    logit_shift, shift_accuracy, Estimates, ModelMask, Priors, RouteParams, RoutedBatch, Router,
};
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
    /// Optimism where it is uncertain: every model's shift is taken at the upper end of what
    /// its outcomes allow (their posterior mean plus [`OPTIMISM`] standard errors), applied as
    /// the learned shift is (in log-odds), and the models are ranked by the totals that gives.
    /// A model with few outcomes since training gets a large lift, one observed often a small
    /// one, and one whose first outcomes beat its training means a larger one still; the
    /// decision explores when the lift changes the choice. The exploring thus goes to the model
    /// whose possible improvement would matter most, less and less as its outcomes settle it
    /// (no draws: each query's ranking is deterministic).
    Optimistic,
    /// Optimism that gives up: only a model whose outcomes do not yet rule out that it improved
    /// by [`CHANGE_WORTH_FINDING`] is lifted (by its optimistic bound), and a decision explores
    /// only when a lifted model goes first. Such a change is ruled out (`None`) once the
    /// model's optimistic bound falls below it, which one outcome no better than its training
    /// level does (a run of good ones keeps it in), or (`Some(R)`) once its outcomes, each
    /// score a Bernoulli outcome, are R times likelier without it than with it: at R = 4, one
    /// failure where the model was strong, two where it was middling. Exploring thus screens
    /// each model in a few outcomes and stops once all are screened, instead of returning to
    /// those nearly as good as the greedy choice while their bounds shrink; larger odds miss
    /// fewer changes and cost more looks. A change found (the model's shift applies) is not
    /// looked at again: the model is learned from the outcomes it gets as the greedy choice.
    Screen(Option<f64>),
}

/// Standard errors of a model's shift that [`Exploration::Optimistic`] lifts it by.
pub const OPTIMISM: f64 = 2.0;
/// The smallest change of a model's accuracy that [`Exploration::Screen`] looks for: just within
/// the optimistic bound of a model with no outcomes (2 × [`super::SHIFT_SPREAD`]).
pub const CHANGE_WORTH_FINDING: f64 = 0.3;

impl FromStr for Exploration {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "off" => Ok(Exploration::Off),
            "thompson" => Ok(Exploration::Thompson),
            "optimistic" => Ok(Exploration::Optimistic),
            "screen" => Ok(Exploration::Screen(None)),
            _ => {
                let invalid = || {
                    Error::Invalid(format!(
                        "exploration `{s}`: expected off, thompson, optimistic, screen, screen:R \
                         with odds R > 1 or epsilon:E with E in [0, 1]"
                    ))
                };
                if let Some(odds) = s.strip_prefix("screen:") {
                    match odds.parse::<f64>() {
                        Ok(r) if r > 1.0 && r.is_finite() => Ok(Exploration::Screen(Some(r))),
                        _ => Err(invalid()),
                    }
                } else {
                    match s.strip_prefix("epsilon:").map(str::parse::<f64>) {
                        Some(Ok(e)) if (0.0..=1.0).contains(&e) => Ok(Exploration::Epsilon(e)),
                        _ => Err(invalid()),
                    }
                }
            }
        }
    }
}

impl fmt::Display for Exploration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exploration::Off => f.write_str("off"),
            Exploration::Thompson => f.write_str("thompson"),
            Exploration::Optimistic => f.write_str("optimistic"),
            Exploration::Screen(None) => f.write_str("screen"),
            Exploration::Screen(Some(odds)) => write!(f, "screen:{odds}"),
            Exploration::Epsilon(e) => write!(f, "epsilon:{e}"),
        }
    }
}

/// The allowed models by descending total (equal totals keep model order).
fn ranked(totals: Vec<f64>, allowed: ModelMask) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..totals.len()).filter(|&m| allowed.allows(m)).collect();
    order.sort_by(|&a, &b| totals[b].total_cmp(&totals[a]));
    order.into_iter().map(|m| (m, totals[m] as f32)).collect()
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
                if greedy.len() < 2 || !rng.random_bool(e) {
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
                ranked(self.sampled_totals(routed, i, params, rng), routed.allowed)
            }
            Exploration::Optimistic => {
                let (totals, _) = self.optimistic_totals(routed, i, params, exploration);
                ranked(totals, routed.allowed)
            }
            Exploration::Screen(_) => {
                let (totals, lifted) = self.optimistic_totals(routed, i, params, exploration);
                let ranking = ranked(totals, routed.allowed);
                // Lifting one model renormalises the others' scores too: only a lifted model
                // going first is a look at a possible change.
                if !lifted[ranking[0].0] {
                    return None;
                }
                ranking
            }
        };
        (ranking[0].0 != greedy[0]).then_some(ranking)
    }

    /// A shift of model `m`'s accuracy by `delta` as a change of log-odds, at the level of
    /// its outcomes so far (its training mean before any).
    fn logit_of(&self, m: usize, delta: f64, priors: &Priors) -> f64 {
        let level = self.learned.shift_evidence().get(m).and_then(|r| r.level());
        logit_shift(level.or(priors.accuracy[m]).unwrap_or(0.5), delta)
    }

    /// Query `i`'s totals with the shift of every lifted model taken at its optimistic bound,
    /// and which models those are: every model under [`Exploration::Optimistic`]; under
    /// [`Exploration::Screen`], those whose outcomes do not rule out a change of
    /// [`CHANGE_WORTH_FINDING`] and whose change is not found yet.
    fn optimistic_totals(
        &self,
        routed: &RoutedBatch,
        i: usize,
        params: &RouteParams,
        exploration: Exploration,
    ) -> (Vec<f64>, Vec<bool>) {
        let priors = self.priors();
        let mut lifted = vec![false; self.models.len()];
        let lifts: Vec<f64> = (0..self.models.len())
            .map(|m| {
                let (applied, mean, error) = self.learned.shift(m);
                let bound = mean + OPTIMISM * error;
                // A change already found (its shift applies) is learned from the outcomes the
                // model gets where it is now the greedy choice: looking on would only spend
                // requests on its near-ties.
                lifted[m] = match exploration {
                    Exploration::Screen(odds) => {
                        let evidence = self.learned.shift_evidence().get(m);
                        let ruled_out = match odds {
                            None => bound < CHANGE_WORTH_FINDING,
                            Some(odds) => evidence.is_some_and(|r| r.rule_out_change(odds)),
                        };
                        applied == 0.0 && !ruled_out
                    }
                    _ => true,
                };
                match lifted[m] {
                    true => self.logit_of(m, bound, &priors) - applied,
                    false => 0.0,
                }
            })
            .collect();
        let mut totals = vec![0.0; self.models.len()];
        for (cluster, _, weight) in routed.nearest(i) {
            let learned = self.evidence(cluster);
            let priors = self.cluster_priors(cluster, &priors);
            let mut estimates =
                self.clusters[cluster].estimates(&priors, params.prior_strength, learned);
            for (accuracy, &lift) in estimates.accuracy.iter_mut().zip(&lifts) {
                *accuracy = accuracy.map(|a| shift_accuracy(a, lift));
            }
            routed.allowed.restrict(&mut estimates);
            for (total, vote) in totals
                .iter_mut()
                .zip(params.scoring.cluster_votes(&estimates))
            {
                *total += weight as f64 * vote;
            }
        }
        (totals, lifted)
    }

    /// Query `i`'s totals with each voting cluster's accuracies drawn from their posteriors
    /// and each model's shift drawn from its own (one draw per model, shared by the
    /// clusters: a model that changed, changed everywhere); costs at their estimates.
    fn sampled_totals(
        &self,
        routed: &RoutedBatch,
        i: usize,
        params: &RouteParams,
        rng: &mut impl Rng,
    ) -> Vec<f64> {
        let priors = self.priors();
        let shifts: Vec<f64> = (0..self.models.len())
            .map(|m| {
                let (_, _, spread) = self.learned.shift(m);
                let delta = Normal::new(0.0, spread).map_or(0.0, |normal| normal.sample(rng));
                self.logit_of(m, delta, &priors)
            })
            .collect();
        let mut totals = vec![0.0; self.models.len()];
        for (cluster, _, weight) in routed.nearest(i) {
            let learned = self.evidence(cluster);
            let stats = &self.clusters[cluster];
            let priors = self.cluster_priors(cluster, &priors);
            let posterior = stats.accuracy_posterior(&priors, params.prior_strength, learned);
            let mut estimates = Estimates {
                accuracy: posterior
                    .into_iter()
                    .zip(&shifts)
                    .map(|(ab, shift)| {
                        ab.map(|(a, b)| {
                            let p = Beta::new(a, b).map_or(a / (a + b), |beta| beta.sample(rng));
                            shift_accuracy(p, *shift)
                        })
                    })
                    .collect(),
                cost: stats
                    .estimates(&priors, params.prior_strength, learned)
                    .cost,
            };
            routed.allowed.restrict(&mut estimates);
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
