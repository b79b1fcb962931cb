//! The router directory: `centroids.safetensors` (tensor `centroids`, `(clusters, dim)` f32) and
//! `router.json` (models, per-cluster statistics, routing defaults, the embedding model it was
//! trained with, training provenance). Written to a temporary directory and renamed into place.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ClusterStats, RouteParams, Router, TrainingInfo};
use crate::embed::{Embedder, Pooling};
use crate::error::{Error, InputError, Result};

pub const ROUTER_FILE: &str = "router.json";
const CENTROIDS_FILE: &str = "centroids.safetensors";
const CENTROIDS_TENSOR: &str = "centroids";
const FORMAT: u32 = 1;

/// What makes one embedding model's vectors comparable with another's: a router only works
/// with queries embedded the way its training queries were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingInfo {
    pub model: String,
    pub revision: Option<String>,
    pub weights_sha256: String,
    pub dim: usize,
    pub normalized: bool,
    pub pooling: Pooling,
    pub max_seq_length: usize,
}

impl EmbeddingInfo {
    pub fn of(embedder: &Embedder) -> Self {
        let model = embedder.model();
        Self {
            model: model.id.clone(),
            revision: model.revision.clone(),
            weights_sha256: model.weights_sha256.clone(),
            dim: embedder.dim(),
            normalized: embedder.normalize(),
            pooling: embedder.pooling(),
            max_seq_length: embedder.max_seq_length(),
        }
    }

    /// Refuses an embedder whose vectors are not the router's kind.
    pub fn check(&self, embedder: &Embedder) -> Result<()> {
        let used = Self::of(embedder);
        let mismatch = if used.weights_sha256 != self.weights_sha256 {
            Some(format!(
                "weights {} (sha256 {}) but the router was trained with {} (sha256 {}); pass --model {}",
                used.model, used.weights_sha256, self.model, self.weights_sha256, self.model
            ))
        } else if used.dim != self.dim || used.pooling != self.pooling {
            Some(format!(
                "{}-d {} pooling but the router expects {}-d {} pooling",
                used.dim,
                used.pooling.as_str(),
                self.dim,
                self.pooling.as_str()
            ))
        } else if used.normalized != self.normalized {
            Some("different L2 normalisation from the router's".to_string())
        } else if used.max_seq_length != self.max_seq_length {
            Some(format!(
                "max_seq_length {} but the router was trained with {}; pass --max-seq-length {}",
                used.max_seq_length, self.max_seq_length, self.max_seq_length
            ))
        } else {
            None
        };
        match mismatch {
            Some(why) => Err(Error::Invalid(format!(
                "embedding model mismatch: the model in use has {why}"
            ))),
            None => Ok(()),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RouterFile {
    format: u32,
    kroute_version: String,
    embedding: EmbeddingInfo,
    models: Vec<String>,
    routing: RouteParams,
    training: TrainingInfo,
    clusters: Vec<ClusterStats>,
}

impl Router {
    /// Writes the router directory; an existing router there is replaced only once the new one
    /// is complete. A non-empty directory that is not a router is never touched.
    pub fn save(&self, dir: &Path) -> Result<()> {
        if dir.exists() && !is_replaceable(dir) {
            return Err(Error::Invalid(format!(
                "{} exists and is not a kroute router directory (no {ROUTER_FILE}); refusing to overwrite it",
                dir.display()
            )));
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let staging = tempfile::Builder::new()
            .prefix(".kroute-tmp-")
            .tempdir_in(parent)
            .map_err(|e| Error::io(parent, e))?;
        let file = RouterFile {
            format: FORMAT,
            kroute_version: env!("CARGO_PKG_VERSION").to_string(),
            embedding: self.embedding.clone(),
            models: self.models.clone(),
            routing: self.defaults,
            training: self.training.clone(),
            clusters: self.clusters.clone(),
        };
        let json = serde_json::to_string_pretty(&file).expect("router serialises");
        let json_path = staging.path().join(ROUTER_FILE);
        std::fs::write(&json_path, json + "\n").map_err(|e| Error::io(&json_path, e))?;
        let centroids = self.centroids.to_device(&candle_core::Device::Cpu)?;
        candle_core::safetensors::save(
            &[(CENTROIDS_TENSOR.to_string(), centroids)]
                .into_iter()
                .collect(),
            staging.path().join(CENTROIDS_FILE),
        )?;
        replace_dir(staging, dir)
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
        let m = file.models.len();
        if let Some(c) = file
            .clusters
            .iter()
            .position(|s| s.count.len() != m || s.accuracy.len() != m || s.cost.len() != m)
        {
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
        Ok(Self {
            models: file.models,
            centroids: centroids.to_dtype(candle_core::DType::F32)?,
            clusters: file.clusters,
            embedding: file.embedding,
            defaults: file.routing,
            training: file.training,
        })
    }
}

/// An empty directory or an earlier router.
fn is_replaceable(dir: &Path) -> bool {
    dir.is_dir()
        && (dir.join(ROUTER_FILE).is_file()
            || std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none()))
}

/// Renames the finished `staging` directory to `target`, moving an existing `target` aside
/// first and deleting it only after the new one is in place.
fn replace_dir(staging: tempfile::TempDir, target: &Path) -> Result<()> {
    let parent = staging
        .path()
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let old = if target.exists() {
        let aside = tempfile::Builder::new()
            .prefix(".kroute-old-")
            .tempdir_in(&parent)
            .map_err(|e| Error::io(&parent, e))?;
        // Only a unique name is wanted: the (empty) directory itself makes way for `target`.
        let aside_path = aside.keep();
        std::fs::remove_dir(&aside_path).map_err(|e| Error::io(&aside_path, e))?;
        std::fs::rename(target, &aside_path).map_err(|e| Error::io(target, e))?;
        Some(aside_path)
    } else {
        None
    };
    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, target) {
        let _ = std::fs::remove_dir_all(&staged);
        if let Some(old) = &old {
            let _ = std::fs::rename(old, target);
        }
        return Err(Error::io(target, e));
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}
