//! The router directory: `centroids.safetensors` (tensor `centroids`, `(bag·clusters, dim)` f32)
//! and `router.json` (models, per-cluster statistics, routing defaults, the embedding model it
//! was trained with, training provenance, and the outcomes learned since training). Written to a
//! temporary directory and renamed into place.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::online::{CellEvidence, Evidence, FeedbackSource, Learned, Residuals};
use super::{ClusterStats, PoolChange, RouteParams, Router, TrainingInfo};
use crate::embed::EmbeddingInfo;
use crate::error::{Error, InputError, Result};
use crate::io::StagedDir;

pub const ROUTER_FILE: &str = "router.json";
const CENTROIDS_FILE: &str = "centroids.safetensors";
const CENTROIDS_TENSOR: &str = "centroids";
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct RouterFile {
    format: u32,
    kroute_version: String,
    embedding: EmbeddingInfo,
    models: Vec<String>,
    routing: RouteParams,
    training: TrainingInfo,
    /// k-means solutions held; `clusters` lists each one's clusters in turn.
    #[serde(default = "one")]
    bag: usize,
    clusters: Vec<ClusterStats>,
    /// Outcomes taken in since training; absent before any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    feedback: Option<FeedbackFile>,
    /// Models added, removed or repriced since training, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pool: Vec<PoolChange>,
}

fn one() -> usize {
    1
}

/// [`Learned`] as stored: the cells that changed, each naming its model.
#[derive(Serialize, Deserialize)]
struct FeedbackFile {
    observations: u64,
    sources: Vec<FeedbackSource>,
    cells: Vec<CellFile>,
    /// Per model, `[weight, sum, sum of squares, expected, worth finding]` of its outcomes'
    /// residuals, of what training expected of them and the log-likelihood ratio of a change
    /// worth finding (see `online::Residuals`). Files with the first two alone are read at the
    /// largest variance and at the model's training mean, and files without the last as no
    /// evidence either way about such a change.
    #[serde(default)]
    shifts: std::collections::BTreeMap<String, Vec<f64>>,
}

#[derive(Serialize, Deserialize)]
struct CellFile {
    cluster: usize,
    model: String,
    /// `[kept, weight, sum]`: see [`Evidence`].
    accuracy: [f64; 3],
    cost: [f64; 3],
}

impl FeedbackFile {
    fn of(learned: &Learned, models: &[String]) -> Option<Self> {
        if learned.observations == 0 && learned.cells().is_empty() {
            return None;
        }
        let triple = |e: &Evidence| [e.kept, e.weight, e.sum];
        let cells = learned
            .cells()
            .iter()
            .enumerate()
            .filter(|(_, cell)| !cell.is_untouched())
            .map(|(i, cell)| CellFile {
                cluster: i / models.len(),
                model: models[i % models.len()].clone(),
                accuracy: triple(&cell.accuracy),
                cost: triple(&cell.cost),
            })
            .collect();
        let shifts = learned
            .shift_evidence()
            .iter()
            .zip(models)
            .filter(|(r, _)| r.weight > 0.0)
            .map(|(r, model)| {
                let stored = vec![r.weight, r.sum, r.squares, r.expected, r.worth_finding];
                (model.clone(), stored)
            })
            .collect();
        Some(Self {
            observations: learned.observations,
            sources: learned.sources.clone(),
            cells,
            shifts,
        })
    }

    /// The evidence as routing keeps it; `trained` is each model's training mean accuracy.
    fn learned(
        self,
        models: &[String],
        clusters: usize,
        trained: &[Option<f64>],
    ) -> std::result::Result<Learned, String> {
        let mut cells = vec![CellEvidence::default(); clusters * models.len()];
        for (i, cell) in self.cells.into_iter().enumerate() {
            let model = models
                .iter()
                .position(|m| *m == cell.model)
                .ok_or_else(|| {
                    format!(
                        "feedback.cells[{i}]: model `{}` is not in `models`",
                        cell.model
                    )
                })?;
            if cell.cluster >= clusters {
                return Err(format!(
                    "feedback.cells[{i}]: cluster {} of a router with {clusters}",
                    cell.cluster
                ));
            }
            let evidence = |[kept, weight, sum]: [f64; 3], what: &str| {
                if [kept, weight, sum].iter().all(|x| x.is_finite()) && kept >= 0.0 && weight >= 0.0
                {
                    Ok(Evidence { kept, weight, sum })
                } else {
                    Err(format!(
                        "feedback.cells[{i}].{what}: expected [kept ≥ 0, weight ≥ 0, sum], finite"
                    ))
                }
            };
            cells[cell.cluster * models.len() + model] = CellEvidence {
                accuracy: evidence(cell.accuracy, "accuracy")?,
                cost: evidence(cell.cost, "cost")?,
            };
        }
        let mut shifts = vec![Residuals::default(); models.len()];
        for (model, residuals) in self.shifts {
            let i = models
                .iter()
                .position(|m| *m == model)
                .ok_or_else(|| format!("feedback.shifts: model `{model}` is not in `models`"))?;
            let stored = match residuals[..] {
                [weight, sum, squares, expected, worth] => [weight, sum, squares, expected, worth],
                [weight, sum, squares, expected] => [weight, sum, squares, expected, 0.0],
                [weight, sum] => {
                    let spread = match weight > 0.0 {
                        true => 0.25 * weight + sum * sum / weight,
                        false => 0.0,
                    };
                    [weight, sum, spread, weight * trained[i].unwrap_or(0.5), 0.0]
                }
                _ => [f64::NAN; 5],
            };
            let [weight, sum, squares, expected, worth_finding] = stored;
            if !(stored.iter().all(|x| x.is_finite()) && weight >= 0.0) {
                return Err(format!(
                    "feedback.shifts.{model}: expected [weight ≥ 0, sum, sum of squares, \
                     expected, worth finding], finite"
                ));
            }
            shifts[i] = Residuals {
                weight,
                sum,
                squares,
                expected,
                worth_finding,
            };
        }
        Ok(Learned::from_cells(
            self.observations,
            self.sources,
            cells,
            shifts,
            clusters,
        ))
    }
}

impl Router {
    /// Writes the router directory; an existing router there is replaced only once the new one
    /// is complete. A non-empty directory that is not a router is never touched.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_with(dir, &[])
    }

    /// [`Router::save`] with `extra` files (name, contents) written into the directory in the
    /// same atomic step (a server's state beside its snapshot).
    pub fn save_with(&self, dir: &Path, extra: &[(&str, &[u8])]) -> Result<()> {
        let staged = StagedDir::create(dir, ROUTER_FILE, "kroute router directory")?;
        for (name, contents) in extra {
            staged.write(name, contents)?;
        }
        let file = RouterFile {
            format: FORMAT,
            kroute_version: env!("CARGO_PKG_VERSION").to_string(),
            embedding: self.embedding.clone(),
            models: self.models.clone(),
            routing: self.defaults,
            training: self.training.clone(),
            bag: self.bag,
            clusters: self.clusters.clone(),
            feedback: FeedbackFile::of(&self.learned, &self.models),
            pool: self.pool.clone(),
        };
        let json = serde_json::to_string_pretty(&file).expect("router serialises");
        staged.write(ROUTER_FILE, (json + "\n").as_bytes())?;
        let centroids = self.centroids.to_device(&candle_core::Device::Cpu)?;
        candle_core::safetensors::save(
            &[(CENTROIDS_TENSOR.to_string(), centroids)]
                .into_iter()
                .collect(),
            staged.path(CENTROIDS_FILE),
        )?;
        staged.commit()
    }

    /// Reads a router directory onto `device`, checking that its parts agree.
    pub fn load(dir: &Path, device: &candle_core::Device) -> Result<Self> {
        let json_path = dir.join(ROUTER_FILE);
        let text = std::fs::read_to_string(&json_path).map_err(|e| Error::io(&json_path, e))?;
        let file: RouterFile = serde_json::from_str(&text).map_err(|e| {
            InputError::new(&json_path, format!("not a kroute router file: {e}")).at_line(e.line())
        })?;
        let bad = |message: String| Error::from(InputError::new(&json_path, message));
        if file.format != FORMAT {
            return Err(bad(format!(
                "router format {} is not supported by this kroute (format {FORMAT}); retrain the router",
                file.format
            )));
        }
        if file.clusters.is_empty() || file.models.is_empty() {
            return Err(bad(
                "a router needs at least one cluster and one model".into()
            ));
        }
        if file.bag == 0 || !file.clusters.len().is_multiple_of(file.bag) {
            return Err(bad(format!(
                "{} clusters cannot be {} equal k-means solutions (`bag`)",
                file.clusters.len(),
                file.bag
            )));
        }
        let m = file.models.len();
        if let Some(c) = file.clusters.iter().position(|s| {
            s.count.len() != m
                || s.accuracy.len() != m
                || s.cost.len() != m
                || !(s.tokens.is_empty() || s.tokens.len() == m)
        }) {
            return Err(bad(format!(
                "cluster {c}: statistics for a different number of models than the {m} listed"
            )));
        }
        let centroids_path = dir.join(CENTROIDS_FILE);
        let mut tensors = candle_core::safetensors::load(&centroids_path, device)
            .map_err(|e| bad(format!("{}: {e}", centroids_path.display())))?;
        let centroids = tensors.remove(CENTROIDS_TENSOR).ok_or_else(|| {
            Error::from(InputError::new(
                &centroids_path,
                format!("no `{CENTROIDS_TENSOR}` tensor"),
            ))
        })?;
        let expected = [file.clusters.len(), file.embedding.dim];
        if centroids.dims() != expected {
            return Err(InputError::new(
                &centroids_path,
                format!(
                    "centroids have shape {:?}, router.json says {expected:?}",
                    centroids.dims()
                ),
            )
            .into());
        }
        let mut router = Self {
            models: file.models,
            centroids: centroids.to_dtype(candle_core::DType::F32)?,
            clusters: file.clusters,
            bag: file.bag,
            embedding: file.embedding,
            defaults: file.routing,
            training: file.training,
            learned: Learned::default(),
            pool: file.pool,
            votes: Default::default(),
            profiles: Default::default(),
            relearned: Default::default(),
        };
        if let Some(feedback) = file.feedback {
            // Older files lack what training expected of a model's outcomes: its global mean
            // stands in.
            let trained = router.priors().accuracy;
            router.learned = feedback
                .learned(&router.models, router.clusters.len(), &trained)
                .map_err(bad)?;
        }
        Ok(router)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_stored_without_their_squares_read_at_the_largest_variance() {
        let file: FeedbackFile = serde_json::from_str(
            r#"{"observations": 12, "sources": [], "cells": [],
                "shifts": {"a": [12.0, 3.6], "b": [12.0, 3.6, 1.08, 6.0]}}"#,
        )
        .unwrap();
        let learned = file
            .learned(&["a".into(), "b".into()], 1, &[Some(0.7), Some(0.4)])
            .unwrap();
        let [a, b] = [learned.shift_evidence()[0], learned.shift_evidence()[1]];
        assert_eq!((a.weight, a.sum), (12.0, 3.6));
        assert!((a.variance() - 0.25).abs() < 1e-12, "{}", a.variance());
        assert!((a.level().unwrap() - 0.7).abs() < 1e-12);
        // Twelve residuals of 0.3 where 0.5 was expected: no spread, the prior's variance alone.
        assert!(b.variance() < 0.1, "{}", b.variance());
        assert_eq!(b.level(), Some(0.5));
        // Stored before the likelihood ratio was: no evidence either way about a change.
        assert_eq!((a.worth_finding, b.worth_finding), (0.0, 0.0));
        let bad: FeedbackFile = serde_json::from_str(
            r#"{"observations": 1, "sources": [], "cells": [], "shifts": {"a": [1.0]}}"#,
        )
        .unwrap();
        let error = bad.learned(&["a".into()], 1, &[None]).unwrap_err();
        assert!(error.contains("feedback.shifts.a"), "{error}");
    }
}
