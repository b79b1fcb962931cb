//! What `kroute check` reports about a records file.

use serde::Serialize;

use super::{RoutingData, Split};

#[derive(Debug, Clone, Serialize)]
pub struct DataSummary {
    pub path: String,
    pub queries: usize,
    /// (name, queries) in order of first appearance.
    pub datasets: Vec<(String, usize)>,
    /// (train, test) counts of the file's own `split` field, if it has one.
    pub split: Option<(usize, usize)>,
    pub models: Vec<ModelSummary>,
    /// Evaluated answers whose missing cost was counted as 0.
    pub missing_costs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub name: String,
    /// Queries with a score for this model.
    pub evaluated: usize,
    /// `evaluated / queries`.
    pub coverage: f64,
    /// Mean score over the evaluated queries.
    pub mean_accuracy: Option<f64>,
    /// Dollars over the evaluated queries.
    pub total_cost: f64,
    /// Evaluated answers with prompt and completion token counts.
    pub with_tokens: usize,
    /// Sums of the other numeric `usages` fields (e.g. token counts), by name.
    pub usage_totals: serde_json::Map<String, serde_json::Value>,
}

pub(super) fn summarize(data: &RoutingData) -> DataSummary {
    let queries = data.records.len();
    let datasets = data
        .datasets()
        .into_iter()
        .map(|name| {
            let n = data.records.iter().filter(|r| r.dataset == name).count();
            (name, n)
        })
        .collect();
    let split = data.has_split_field().then(|| {
        let train = data
            .records
            .iter()
            .filter(|r| r.split == Some(Split::Train))
            .count();
        (train, queries - train)
    });
    let models = data
        .models
        .iter()
        .enumerate()
        .map(|(m, name)| {
            let (mut evaluated, mut score_sum, mut total_cost) = (0, 0.0, 0.0);
            let mut with_tokens = 0;
            let mut usage_totals = std::collections::BTreeMap::<String, f64>::new();
            for record in &data.records {
                let Some(score) = record.scores[m] else {
                    continue;
                };
                evaluated += 1;
                score_sum += score;
                total_cost += record.costs[m].unwrap_or(0.0);
                with_tokens += usize::from(record.tokens[m].is_some());
                for (key, value) in &record.usage_extras[m] {
                    if let Some(x) = value.as_f64() {
                        *usage_totals.entry(key.clone()).or_default() += x;
                    }
                }
            }
            ModelSummary {
                name: name.clone(),
                evaluated,
                coverage: evaluated as f64 / queries as f64,
                mean_accuracy: (evaluated > 0).then(|| score_sum / evaluated as f64),
                total_cost,
                with_tokens,
                usage_totals: usage_totals
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::json!(v)))
                    .collect(),
            }
        })
        .collect();
    DataSummary {
        path: data.path.display().to_string(),
        queries,
        datasets,
        split,
        models,
        missing_costs: data.missing_costs,
    }
}
