//! Choosing a router's settings (clusters, top-p, β, prior strength, bag) by K-fold
//! cross-validation inside the training rows only, maximising the whole-curve metric (the area
//! under the router's accuracy–cost frontier over an α sweep, see `curve.rs`).
//!
//! Queries are embedded once by the caller. Per fold and per cluster count, one bagged router
//! with the largest bag of the grid is fitted; smaller bags are its first members, and top-p,
//! β and the prior strength are routing parameters, so every other setting reuses that k-means.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::curve::CurveAreas;
use super::{rows_of, score_at, Stat, TestSet};
use crate::cluster::KMeansConfig;
use crate::error::{Error, Result};
use crate::records::RoutingData;
use crate::router::{EmbeddingInfo, RouteParams, Router, Scoring};

/// The values tried for each setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneGrid {
    pub clusters: Vec<usize>,
    pub top_p: Vec<usize>,
    pub beta: Vec<f64>,
    pub prior_strength: Vec<f64>,
    pub bag: Vec<usize>,
}

impl Default for TuneGrid {
    fn default() -> Self {
        Self {
            clusters: vec![20, 40, 60, 80],
            top_p: vec![2, 4, 8],
            beta: vec![3.0, 9.0, 27.0],
            prior_strength: vec![0.0, 5.0, 20.0, 50.0],
            bag: vec![1, 3, 5],
        }
    }
}

/// One combination of settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub clusters: usize,
    pub top_p: usize,
    pub beta: f64,
    pub prior_strength: f64,
    pub bag: usize,
}

impl Settings {
    /// These settings' routing parameters on top of `base` (scoring kept).
    pub fn routing(&self, base: RouteParams) -> RouteParams {
        RouteParams {
            top_p: self.top_p,
            beta: self.beta,
            prior_strength: self.prior_strength,
            ..base
        }
    }
}

#[derive(Debug, Clone)]
pub struct TuneConfig {
    pub grid: TuneGrid,
    pub folds: usize,
    /// Fold assignment and k-means seed.
    pub seed: u64,
    /// The α sweep each setting's frontier is drawn from.
    pub alphas: Vec<f64>,
    /// k-means restarts, iterations and tolerance (k and seed are set per trial).
    pub kmeans: KMeansConfig,
    /// The scoring rule (its α is swept).
    pub scoring: Scoring,
}

/// One setting's result: the router's frontier area on each held-out fold.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub settings: Settings,
    /// Mean and spread over the folds.
    pub area: Stat,
    /// Per fold: the router's area minus the single models' (so folds are comparable).
    pub gain_over_singles: Stat,
}

/// Every trial, best first.
#[derive(Debug, Clone, Serialize)]
pub struct Tuning {
    pub folds: usize,
    pub training_queries: usize,
    pub grid: TuneGrid,
    pub trials: Vec<Trial>,
}

impl Tuning {
    pub fn best(&self) -> &Trial {
        &self.trials[0]
    }
}

/// Cross-validates every setting of `config.grid` on `rows` (the training rows only; nothing
/// else of `data` is read). `embeddings` row j belongs to record `rows[j]`. `on_fold` is told
/// after each fold.
pub fn tune(
    data: &RoutingData,
    rows: &[usize],
    embeddings: &Tensor,
    embedding: &EmbeddingInfo,
    config: &TuneConfig,
    mut on_fold: impl FnMut(usize),
) -> Result<Tuning> {
    let grid = &config.grid;
    let empty = [
        ("clusters", grid.clusters.is_empty()),
        ("top-p", grid.top_p.is_empty()),
        ("beta", grid.beta.is_empty()),
        ("prior strength", grid.prior_strength.is_empty()),
        ("bag", grid.bag.is_empty()),
        ("alphas", config.alphas.is_empty()),
    ];
    if let Some((name, _)) = empty.iter().find(|(_, e)| *e) {
        return Err(Error::Invalid(format!(
            "the tuning grid has no {name} values"
        )));
    }
    if config.folds < 2 {
        return Err(Error::Invalid(format!(
            "--folds must be at least 2, got {}",
            config.folds
        )));
    }
    let folds = data.folds(rows, config.folds, config.seed);
    let smallest_train = rows.len() - folds.iter().map(Vec::len).max().unwrap_or(0);
    if let Some(&k) = grid
        .clusters
        .iter()
        .find(|&&k| k == 0 || k > smallest_train)
    {
        return Err(Error::Invalid(format!(
            "{k} clusters cannot be fitted on a fold's {smallest_train} training queries"
        )));
    }
    let max_bag = *grid.bag.iter().max().expect("checked non-empty");
    // Position of each record among `rows`, to pick its embedding.
    let position = |subset: &[usize]| -> Vec<usize> {
        subset
            .iter()
            .map(|r| rows.binary_search(r).expect("folds come from rows"))
            .collect()
    };
    let mut sorted_rows = rows.to_vec();
    sorted_rows.sort_unstable();
    if sorted_rows != rows {
        return Err(Error::Invalid("tune: rows must be sorted".into()));
    }

    let settings: Vec<Settings> = grid
        .clusters
        .iter()
        .flat_map(|&clusters| {
            grid.bag.iter().flat_map(move |&bag| {
                grid.top_p.iter().flat_map(move |&top_p| {
                    grid.beta.iter().flat_map(move |&beta| {
                        grid.prior_strength
                            .iter()
                            .map(move |&prior_strength| Settings {
                                clusters,
                                top_p,
                                beta,
                                prior_strength,
                                bag,
                            })
                    })
                })
            })
        })
        .collect();
    // (area, gain) per setting, per fold.
    let mut scores = vec![Vec::with_capacity(config.folds); settings.len()];
    for (f, held_out) in folds.iter().enumerate() {
        let train: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|r| held_out.binary_search(r).is_err())
            .collect();
        let train_embeddings = rows_of(embeddings, &position(&train))?;
        let validation_embeddings = rows_of(embeddings, &position(held_out))?;
        let validation = TestSet::new(data, held_out.clone());
        let singles: Vec<_> = (0..data.models.len())
            .map(|m| validation.single(m))
            .collect();
        let oracle = validation.oracle();
        for &clusters in &grid.clusters {
            let kmeans = KMeansConfig {
                k: clusters,
                seed: config.seed,
                ..config.kmeans.clone()
            };
            let bagged = Router::fit_bagged(
                &train_embeddings,
                data,
                &train,
                &kmeans,
                max_bag,
                embedding.clone(),
                RouteParams::default(),
            )?;
            for &bag in &grid.bag {
                let router = bagged.first_members(bag)?;
                for (i, s) in settings.iter().enumerate() {
                    if s.clusters != clusters || s.bag != bag {
                        continue;
                    }
                    let params = s.routing(RouteParams {
                        scoring: config.scoring,
                        ..RouteParams::default()
                    });
                    let points = config
                        .alphas
                        .iter()
                        .map(|&alpha| {
                            score_at(&router, &validation_embeddings, &validation, params, alpha)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let areas = CurveAreas::of(&singles, &oracle, &points);
                    scores[i].push((areas.router, areas.router - areas.singles));
                }
            }
        }
        on_fold(f);
    }
    let mut trials: Vec<Trial> = settings
        .into_iter()
        .zip(scores)
        .map(|(settings, folds)| Trial {
            settings,
            area: Stat::of(folds.iter().map(|s| s.0)),
            gain_over_singles: Stat::of(folds.iter().map(|s| s.1)),
        })
        .collect();
    // Best mean area first; among equals the simpler setting (grid order) stays ahead.
    trials.sort_by(|a, b| b.area.mean.total_cmp(&a.area.mean));
    Ok(Tuning {
        folds: config.folds,
        training_queries: rows.len(),
        grid: grid.clone(),
        trials,
    })
}
