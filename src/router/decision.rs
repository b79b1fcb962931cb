//! One query's routing decision as JSON: what `kroute route` prints per line and what the
//! Python package returns.

use serde_json::{json, Map, Value};

use super::{RouteParams, RoutedBatch, Router, Scoring};

impl Router {
    /// Query `i` of `routed` as `{"model", "ranked": [{"model", "score"}…]}` (the `max_models`
    /// best, all when `None`), plus with `explain` the nearest clusters that voted: distance,
    /// weight, size and each model's (shrunk) score there with the accuracy and cost estimates
    /// it is made of, with reference scoring its votes, and the models whose scores come from
    /// a declared prior alone (`prior_only`).
    pub fn decision_json(
        &self,
        routed: &RoutedBatch,
        i: usize,
        params: &RouteParams,
        max_models: Option<usize>,
        explain: bool,
    ) -> Map<String, Value> {
        let totals = routed.totals(i);
        let ranked: Vec<Value> = routed
            .ranking(i)
            .into_iter()
            .take(max_models.unwrap_or(usize::MAX))
            .map(|m| json!({"model": self.models[m], "score": totals[m]}))
            .collect();
        let mut line = Map::new();
        line.insert("model".into(), json!(self.models[routed.best(i)]));
        line.insert("ranked".into(), Value::Array(ranked));
        if explain {
            let clusters = routed
                .nearest(i)
                .map(|(cluster, distance, weight)| {
                    self.cluster_json(cluster, distance, weight, params)
                })
                .collect();
            line.insert("clusters".into(), Value::Array(clusters));
            let prior_only = self.prior_only_models();
            if !prior_only.is_empty() {
                // Their scores come from a declared prior, not from evaluations.
                line.insert("prior_only".into(), json!(prior_only));
            }
        }
        line
    }

    fn cluster_json(
        &self,
        cluster: usize,
        distance: f32,
        weight: f32,
        params: &RouteParams,
    ) -> Value {
        let stats = &self.clusters[cluster];
        let per_model = |values: Vec<Option<f64>>| -> Map<String, Value> {
            self.models
                .iter()
                .cloned()
                .zip(values.into_iter().map(|v| json!(v)))
                .collect()
        };
        let estimates = self.estimates(cluster, params.prior_strength);
        let mut entry = json!({
            "cluster": cluster,
            "distance": distance,
            "weight": weight,
            "size": stats.size,
            "scores": per_model(params.scoring.cluster_scores(&estimates)),
        });
        if let Scoring::Reference(_) = params.scoring {
            let votes = params
                .scoring
                .cluster_votes(&estimates)
                .into_iter()
                .map(Some)
                .collect();
            entry["votes"] = Value::Object(per_model(votes));
        }
        // What the scores are made of: the accuracy and dollars per query each model is
        // expected to have here (shrunk, with what was learned since training).
        entry["accuracy"] = Value::Object(per_model(estimates.accuracy));
        entry["cost"] = Value::Object(per_model(estimates.cost));
        entry
    }
}
