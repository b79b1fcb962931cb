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
    /// Per model, `[weight, sum]` of its outcomes' residuals (see `online::Learned::shift`).
    #[serde(default)]
    shifts: std::collections::BTreeMap<String, [f64; 2]>,
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
            .map(|(r, model)| (model.clone(), [r.weight, r.sum]))
            .collect();
        Some(Self {
            observations: learned.observations,
            sources: learned.sources.clone(),
            cells,
            shifts,
        })
    }

    fn learned(self, models: &[String], clusters: usize) -> std::result::Result<Learned, String> {
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
        for (model, [weight, sum]) in self.shifts {
            let i = models
                .iter()
                .position(|m| *m == model)
                .ok_or_else(|| format!("feedback.shifts: model `{model}` is not in `models`"))?;
            if !(weight.is_finite() && sum.is_finite() && weight >= 0.0) {
                return Err(format!(
                    "feedback.shifts.{model}: expected [weight ≥ 0, sum], finite"
                ));
            }
            shifts[i] = Residuals { weight, sum };
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
        let learned = match file.feedback {
            Some(feedback) => feedback
                .learned(&file.models, file.clusters.len())
                .map_err(bad)?,
            None => Learned::default(),
        };
        Ok(Self {
            models: file.models,
            centroids: centroids.to_dtype(candle_core::DType::F32)?,
            clusters: file.clusters,
            bag: file.bag,
            embedding: file.embedding,
            defaults: file.routing,
            training: file.training,
            learned,
            pool: file.pool,
            votes: Default::default(),
        })
    }
}
