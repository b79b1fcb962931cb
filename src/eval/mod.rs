//! Evaluation: the accuracy–cost frontier of the router against every single model and the
//! oracle, over a sweep of α and several seeds.
//!
//! All queries are embedded once by the caller; each seed trains one router (k-means seed, and
//! the split when the records have no `split` field) and routes its test queries at every α.
//! Routing is cheap, so the sweep never re-embeds or re-clusters.

mod calibrate;
mod curve;
mod metrics;
mod plot;
pub mod replay;
mod report;
mod tune;

use candle_core::Tensor;
use serde::Serialize;

pub use calibrate::{calibrate, Calibration, Target};
pub use curve::{frontier, frontier_area, CurveAreas};
pub use metrics::{PolicyMetrics, TestSet};
pub use plot::write_plots;
pub use report::{CurveSummary, Headlines, Point, Report, Row, RowKind, Stat, REPORT_FILE};
pub use tune::{tune, Settings, Trial, TuneConfig, TuneGrid, Tuning};

use crate::cluster::KMeansConfig;
use crate::error::{Error, Result};
use crate::records::{RoutingData, SplitOptions};
use crate::router::{EmbeddingInfo, RouteParams, Router};

/// The α grid of sweeps and calibration: `given`, or `0, 0.05, …, 1` when empty.
pub fn alpha_grid(given: &[f64]) -> Vec<f64> {
    if given.is_empty() {
        (0..=20).map(|i| i as f64 / 20.0).collect()
    } else {
        given.to_vec()
    }
}

/// What to sweep and how to train.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub alphas: Vec<f64>,
    pub seeds: Vec<u64>,
    /// k-means settings; the seed is replaced by each run's.
    pub kmeans: KMeansConfig,
    /// k-means solutions per router (bagging; 1 is the paper's router).
    pub bag: usize,
    /// Routing settings; α is replaced by each sweep point's (see [`crate::router::Scoring::at_alpha`]).
    pub routing: RouteParams,
    /// Split settings; the seed is replaced by each run's.
    pub split: SplitOptions,
    /// Evaluate on this share of each dataset's training rows, held out from training, instead
    /// of on the test split: for choosing settings without looking at the test split.
    pub validation_ratio: Option<f64>,
}

/// One seed's results on its test set.
#[derive(Debug, Clone, Serialize)]
pub struct SeedRun {
    pub seed: u64,
    pub train_queries: usize,
    pub test_queries: usize,
    /// Always model m, in model order.
    pub singles: Vec<PolicyMetrics>,
    pub oracle: PolicyMetrics,
    /// The router at each α of the sweep.
    pub router: Vec<PolicyMetrics>,
    /// Areas under the router's, the single models' and the oracle's frontiers.
    pub curve: CurveAreas,
}

/// Every number of an evaluation, per seed.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// `test`, or `validation` when [`EvalConfig::validation_ratio`] held out training rows.
    pub holdout: &'static str,
    pub models: Vec<String>,
    pub datasets: Vec<String>,
    pub alphas: Vec<f64>,
    pub runs: Vec<SeedRun>,
}

/// Seeds closer than the k-means restarts share most of their restarts and train nearly the
/// same routers, so the spread over them would understate the clustering's own.
fn warn_of_shared_restarts(config: &EvalConfig) {
    for (i, &a) in config.seeds.iter().enumerate() {
        let fit = KMeansConfig {
            seed: a,
            ..config.kmeans.clone()
        };
        if let Some((b, shared)) = config.seeds[i + 1..]
            .iter()
            .map(|&b| (b, fit.shared_restarts(b)))
            .find(|&(_, shared)| shared > 0)
        {
            tracing::warn!(
                "seeds {a} and {b} share {shared} of their {} k-means restarts (restart r of \
                 seed s starts from seed s + r), so their routers are nearly the same and the \
                 spread over seeds understates the clustering's; space the seeds by at least \
                 --n-init (e.g. 42,142,242)",
                fit.restarts()
            );
            return;
        }
    }
}

/// Runs the sweep. `embeddings` has one L2-normalised row per record of `data`, on the device
/// the routers should use; `on_run` is told after each seed.
pub fn evaluate(
    data: &RoutingData,
    embeddings: &Tensor,
    embedding: &EmbeddingInfo,
    config: &EvalConfig,
    mut on_run: impl FnMut(&SeedRun),
) -> Result<Evaluation> {
    if config.alphas.is_empty() || config.seeds.is_empty() {
        return Err(Error::Invalid(
            "evaluation needs at least one α and one seed".into(),
        ));
    }
    if let Some(alpha) = config.alphas.iter().find(|a| !(0.0..=1.0).contains(*a)) {
        return Err(Error::Invalid(format!(
            "--alphas: {alpha} is outside [0, 1]"
        )));
    }
    warn_of_shared_restarts(config);
    let mut datasets: Option<Vec<String>> = None;
    let mut runs = Vec::new();
    for &seed in &config.seeds {
        let mut split = data.split(&SplitOptions {
            seed,
            ..config.split.clone()
        })?;
        if let Some(ratio) = config.validation_ratio {
            if !(ratio > 0.0 && ratio < 1.0) {
                return Err(Error::Invalid(format!(
                    "--validation-ratio must be in (0, 1), got {ratio}"
                )));
            }
            split = data.carve(&split.train, 1.0 - ratio, seed);
        }
        if split.test.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no test queries (every record is training data)",
                data.path.display()
            )));
        }
        let kmeans = KMeansConfig {
            seed,
            ..config.kmeans.clone()
        };
        let router = Router::fit_bagged(
            &rows_of(embeddings, &split.train)?,
            data,
            &split.train,
            &kmeans,
            config.bag,
            embedding.clone(),
            config.routing,
        )?;
        let test = TestSet::new(data, split.test.clone());
        match &datasets {
            Some(names) if *names != test.datasets => {
                return Err(Error::Invalid(format!(
                "seed {seed} gives test queries from datasets {:?}, another seed from {names:?}; \
                     use a `split` field or a larger --train-ratio margin",
                test.datasets
            )))
            }
            Some(_) => {}
            None => datasets = Some(test.datasets.clone()),
        }
        let test_embeddings = rows_of(embeddings, &split.test)?;
        let router_points = config
            .alphas
            .iter()
            .map(|&alpha| score_at(&router, &test_embeddings, &test, config.routing, alpha))
            .collect::<Result<Vec<_>>>()?;
        let singles: Vec<PolicyMetrics> = (0..data.models.len()).map(|m| test.single(m)).collect();
        let oracle = test.oracle();
        let run = SeedRun {
            seed,
            train_queries: split.train.len(),
            test_queries: test.len(),
            curve: CurveAreas::of(&singles, &oracle, &router_points),
            singles,
            oracle,
            router: router_points,
        };
        on_run(&run);
        runs.push(run);
    }
    Ok(Evaluation {
        holdout: if config.validation_ratio.is_some() {
            "validation"
        } else {
            "test"
        },
        models: data.models.clone(),
        datasets: datasets.unwrap_or_default(),
        alphas: config.alphas.clone(),
        runs,
    })
}

/// Routes `embeddings` (one row per query of `queries`) at sweep point `alpha` of `routing`'s
/// scoring and scores the chosen models.
pub fn score_at(
    router: &Router,
    embeddings: &Tensor,
    queries: &TestSet,
    routing: RouteParams,
    alpha: f64,
) -> Result<PolicyMetrics> {
    let params = RouteParams {
        scoring: routing.scoring.at_alpha(alpha),
        ..routing
    };
    let routed = router.route(embeddings, &params)?;
    let choices: Vec<usize> = (0..routed.len()).map(|i| routed.best(i)).collect();
    Ok(queries.score(&choices))
}

/// The rows `rows` of a `(records, dim)` tensor.
pub(crate) fn rows_of(embeddings: &Tensor, rows: &[usize]) -> Result<Tensor> {
    let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let index = Tensor::new(index, embeddings.device())?;
    Ok(embeddings.index_select(&index, 0)?)
}
