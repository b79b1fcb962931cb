//! Picking α for a target on a validation set carved out of the training data (never the test
//! split): the cheapest α that reaches an accuracy, or the most accurate α within a budget.

use candle_core::Tensor;
use serde::Serialize;

use super::{rows_of, score_at, EvalConfig, PolicyMetrics, TestSet};
use crate::error::{Error, Result};
use crate::records::RoutingData;
use crate::router::{EmbeddingInfo, Router};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Highest validation accuracy whose cost per query is at most this many dollars.
    CostPerQuery(f64),
    /// Lowest validation cost whose average accuracy is at least this.
    Accuracy(f64),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::CostPerQuery(budget) => write!(f, "cost per query ≤ ${budget}"),
            Target::Accuracy(level) => write!(f, "average accuracy ≥ {level}"),
        }
    }
}

/// The chosen α, the validation sweep it came from, and the router trained on the training
/// rows minus the validation rows.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub alpha: f64,
    pub validation: Vec<(f64, PolicyMetrics)>,
    pub validation_queries: usize,
    pub router: Router,
}

impl Calibration {
    /// The validation metrics at the chosen α.
    pub fn chosen(&self) -> &PolicyMetrics {
        &self
            .validation
            .iter()
            .find(|(a, _)| *a == self.alpha)
            .expect("the chosen α was swept")
            .1
    }
}

/// Carves `validation_ratio` of each dataset's training rows into a validation set (seeded by
/// `config.seeds[0]`), trains on the rest, routes the validation rows at every α of
/// `config.alphas` and picks α for `target`. `embeddings` row j belongs to record `rows[j]`.
pub fn calibrate(
    data: &RoutingData,
    rows: &[usize],
    embeddings: &Tensor,
    embedding: &EmbeddingInfo,
    config: &EvalConfig,
    target: Target,
    validation_ratio: f64,
) -> Result<Calibration> {
    if !(validation_ratio > 0.0 && validation_ratio < 1.0) {
        return Err(Error::Invalid(format!(
            "--validation-ratio must be in (0, 1), got {validation_ratio}"
        )));
    }
    let seed = config.seeds.first().copied().unwrap_or(42);
    let carved = data.carve(rows, 1.0 - validation_ratio, seed);
    if carved.test.is_empty() || carved.train.len() < config.kmeans.k {
        return Err(Error::Invalid(format!(
            "{} training rows are too few to carve a validation set and still fit {} clusters",
            rows.len(),
            config.kmeans.k
        )));
    }
    // Positions of the carved rows among `rows`, to pick their embeddings.
    let position = |subset: &[usize]| -> Vec<usize> {
        subset
            .iter()
            .map(|r| rows.binary_search(r).expect("carved from rows"))
            .collect()
    };
    let kmeans = crate::cluster::KMeansConfig {
        seed,
        ..config.kmeans.clone()
    };
    let router = Router::fit_bagged(
        &rows_of(embeddings, &position(&carved.train))?,
        data,
        &carved.train,
        &kmeans,
        config.bag,
        embedding.clone(),
        config.routing,
    )?;
    let validation_embeddings = rows_of(embeddings, &position(&carved.test))?;
    let validation_set = TestSet::new(data, carved.test.clone());
    let validation = config
        .alphas
        .iter()
        .map(|&alpha| {
            let metrics = score_at(
                &router,
                &validation_embeddings,
                &validation_set,
                config.routing,
                alpha,
            )?;
            Ok((alpha, metrics))
        })
        .collect::<Result<Vec<_>>>()?;
    let alpha = pick(&validation, target)?;
    Ok(Calibration {
        alpha,
        validation,
        validation_queries: carved.test.len(),
        router,
    })
}

/// The α that meets `target` best; ties go to the smaller α.
pub(crate) fn pick(sweep: &[(f64, PolicyMetrics)], target: Target) -> Result<f64> {
    let chosen = match target {
        Target::Accuracy(level) => sweep
            .iter()
            .filter(|(_, m)| m.average_accuracy >= level)
            .min_by(|a, b| a.1.cost.total_cmp(&b.1.cost)),
        Target::CostPerQuery(budget) => sweep
            .iter()
            .filter(|(_, m)| m.cost_per_query <= budget)
            .max_by(|a, b| {
                a.1.average_accuracy
                    .total_cmp(&b.1.average_accuracy)
                    .then(b.1.cost.total_cmp(&a.1.cost))
                    .then(b.0.total_cmp(&a.0))
            }),
    };
    chosen.map(|(alpha, _)| *alpha).ok_or_else(|| {
        let (best_accuracy, least_cost) = sweep.iter().fold((0f64, f64::MAX), |(a, c), (_, m)| {
            (a.max(m.average_accuracy), c.min(m.cost_per_query))
        });
        Error::Invalid(match target {
            Target::Accuracy(level) => format!(
                "no α reaches average accuracy {level} on the validation set (the best is {best_accuracy:.4})"
            ),
            Target::CostPerQuery(budget) => format!(
                "no α costs at most ${budget} per query on the validation set (the cheapest is ${least_cost:.6})"
            ),
        })
    })
}
