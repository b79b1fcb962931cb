//! Shadow evaluation (`kroute replay`): logged traffic re-decided with another router or
//! setting, before it goes live.
//!
//! A decision is re-decided from its logged votes when the router has the clusters it was made
//! with (a router that learned, or had models added or repriced since, keeps them), else from
//! its logged text (`--log-queries`) embedded afresh; the models it chooses among are those the
//! decision ranked (the tenant's policy as it applied then) that the router has. Costs are the
//! router's expected costs for the query (vote-weighted cell estimates) for both choices, so
//! that a change is measured on one scale; where outcomes were posted, the logged choice's
//! accuracy is the observed score and a changed choice's the router's expected accuracy.

use std::collections::{BTreeMap, HashMap};

use candle_core::Tensor;
use serde::Serialize;

use crate::error::Result;
use crate::router::{ModelMask, RouteParams, Router};
use crate::state::decision_log::{DecisionRow, LoggedDecisions};
use crate::Embedder;

/// One tenant's (or all tenants') replayed traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplayTotals {
    /// Decisions logged.
    pub decisions: usize,
    /// Re-decided (the rest had neither the router's clusters nor a logged text, or no model
    /// the router has).
    pub replayed: usize,
    /// Re-decided to another model.
    pub changed: usize,
    /// Expected dollars of the logged choices and of the replayed ones, over the replayed.
    pub expected_cost_before: f64,
    pub expected_cost_after: f64,
    /// Dollars the logged answers cost, where the log has them.
    pub logged_cost: f64,
    /// Replayed decisions with an outcome for the model that answered.
    pub with_outcomes: usize,
    /// Their mean observed score, and the mean with changed choices at the router's expected
    /// accuracy.
    pub accuracy_before: Option<f64>,
    pub accuracy_after: Option<f64>,
}

/// What a replay found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    pub tenants: BTreeMap<String, ReplayTotals>,
    pub total: ReplayTotals,
    /// Re-decided from their votes, and from their texts.
    pub by_votes: usize,
    pub by_text: usize,
    /// Not re-decided: other clusters and no text logged.
    pub without_text: usize,
    /// Not re-decided: none of the models ranked is in the router.
    pub no_common_model: usize,
    /// Per model: how often it was chosen before and after.
    pub chosen_before: BTreeMap<String, usize>,
    pub chosen_after: BTreeMap<String, usize>,
}

/// How the router re-decides.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplaySettings {
    /// α instead of each decision's own.
    pub alpha: Option<f64>,
}

struct Sums {
    totals: ReplayTotals,
    accuracy_before: f64,
    accuracy_after: f64,
}

/// Re-decides every logged decision with `router`; `embedder` (the router's model) is needed
/// only for decisions made on other clusters.
pub fn replay(
    log: &LoggedDecisions,
    router: &Router,
    embedder: Option<&Embedder>,
    settings: ReplaySettings,
) -> Result<ReplayReport> {
    let clusters = crate::state::clusters_id(router)?;
    // The latest outcome per (decision, model).
    let outcomes: HashMap<(&str, &str), f64> = log
        .outcomes
        .iter()
        .filter_map(|o| Some(((o.decision_id.as_deref()?, o.model.as_str()), o.score)))
        .collect();
    let mut report = ReplayReport::default();
    let mut sums: BTreeMap<String, Sums> = BTreeMap::new();
    let texts: Vec<&str> = log
        .decisions
        .iter()
        .filter(|d| d.router_clusters != clusters)
        .filter_map(|d| d.query.as_deref())
        .collect();
    let embedded = match (texts.is_empty(), embedder) {
        (false, Some(embedder)) => Some(embedder.embed(&texts)?),
        _ => None,
    };
    let mut next_text = 0;
    for decision in &log.decisions {
        let tenant = sums.entry(decision.tenant.clone()).or_insert(Sums {
            totals: ReplayTotals::default(),
            accuracy_before: 0.0,
            accuracy_after: 0.0,
        });
        tenant.totals.decisions += 1;
        let indices: Vec<usize> = decision
            .ranked_models
            .iter()
            .filter_map(|name| router.models.iter().position(|m| m == name))
            .collect();
        if indices.is_empty() {
            report.no_common_model += 1;
            continue;
        }
        let allowed = ModelMask::of(indices.iter().copied())?;
        let params = params_of(decision, router, settings);
        let (totals, votes) = if decision.router_clusters == clusters {
            let votes: Votes = decision
                .clusters
                .iter()
                .map(|&c| c as usize)
                .zip(decision.cluster_weights.iter().copied())
                .collect();
            report.by_votes += 1;
            (router.revote(&votes, &params, allowed)?, votes)
        } else {
            let query = match (&embedded, &decision.query) {
                (Some(embedded), Some(_)) => {
                    next_text += 1;
                    embedded.narrow(0, next_text - 1, 1)?
                }
                _ => {
                    report.without_text += 1;
                    continue;
                }
            };
            report.by_text += 1;
            decide_on_text(router, &query, &params, allowed)?
        };
        let best = indices.iter().copied().fold(indices[0], |best, m| {
            if totals[m] > totals[best] {
                m
            } else {
                best
            }
        });
        let expected = router.expected(&votes, params.prior_strength);
        let logged = decision
            .answered
            .as_deref()
            .or(decision.ranked_models.first().map(String::as_str))
            .unwrap_or_default();
        let before = router.models.iter().position(|m| m == logged);
        let after = &router.models[best];
        let changed = before != Some(best);
        let t = &mut tenant.totals;
        t.replayed += 1;
        t.changed += changed as usize;
        let cost_of = |m: Option<usize>| m.and_then(|m| expected.cost[m]);
        t.expected_cost_before += cost_of(before).or(decision.cost_usd).unwrap_or(0.0);
        t.expected_cost_after += cost_of(Some(best)).unwrap_or(0.0);
        t.logged_cost += decision.cost_usd.unwrap_or(0.0);
        *report.chosen_before.entry(logged.to_string()).or_default() += 1;
        *report.chosen_after.entry(after.clone()).or_default() += 1;
        let observed = decision
            .decision_id
            .as_deref()
            .and_then(|id| outcomes.get(&(id, logged)));
        if let Some(&score) = observed {
            let replayed = match changed {
                false => Some(score),
                true => expected.accuracy[best],
            };
            if let Some(replayed) = replayed {
                t.with_outcomes += 1;
                tenant.accuracy_before += score;
                tenant.accuracy_after += replayed;
            }
        }
    }
    let mut all = Sums {
        totals: ReplayTotals::default(),
        accuracy_before: 0.0,
        accuracy_after: 0.0,
    };
    for (name, sums) in sums {
        let t = &sums.totals;
        let a = &mut all.totals;
        a.decisions += t.decisions;
        a.replayed += t.replayed;
        a.changed += t.changed;
        a.expected_cost_before += t.expected_cost_before;
        a.expected_cost_after += t.expected_cost_after;
        a.logged_cost += t.logged_cost;
        a.with_outcomes += t.with_outcomes;
        all.accuracy_before += sums.accuracy_before;
        all.accuracy_after += sums.accuracy_after;
        report.tenants.insert(name, finish(sums));
    }
    report.total = finish(all);
    Ok(report)
}

fn finish(sums: Sums) -> ReplayTotals {
    let n = sums.totals.with_outcomes as f64;
    ReplayTotals {
        accuracy_before: (n > 0.0).then(|| sums.accuracy_before / n),
        accuracy_after: (n > 0.0).then(|| sums.accuracy_after / n),
        ..sums.totals
    }
}

/// The decision's own settings (α replaced when asked) under the router's scoring rule.
fn params_of(decision: &DecisionRow, router: &Router, settings: ReplaySettings) -> RouteParams {
    let alpha = settings.alpha.unwrap_or(decision.alpha);
    RouteParams {
        scoring: router.defaults.scoring.at_alpha(alpha),
        top_p: decision.top_p as usize,
        beta: decision.beta,
        prior_strength: decision.prior_strength,
    }
}

/// `(cluster, weight)` of each voting cluster.
type Votes = Vec<(usize, f32)>;

/// Totals and votes of a query routed afresh.
fn decide_on_text(
    router: &Router,
    query: &Tensor,
    params: &RouteParams,
    allowed: ModelMask,
) -> Result<(Vec<f32>, Votes)> {
    let routed = router.route_among(query, params, allowed)?;
    let votes = routed.nearest(0).map(|(c, _, w)| (c, w)).collect();
    Ok((routed.totals(0).to_vec(), votes))
}
