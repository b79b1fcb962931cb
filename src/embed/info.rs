//! Identity of an embedding model's vectors, for checking that two sets of embeddings (a
//! router's training queries and the queries routed with it) are comparable.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Embedder, Pooling};
use crate::error::{Error, InputError, Result};
use crate::io::OutputMetadata;

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

    /// As string metadata (stored in safetensors outputs of `kroute embed`).
    pub fn to_metadata(&self) -> OutputMetadata {
        [
            ("model", self.model.clone()),
            ("revision", self.revision.clone().unwrap_or_default()),
            ("weights_sha256", self.weights_sha256.clone()),
            ("dim", self.dim.to_string()),
            ("normalized", self.normalized.to_string()),
            ("pooling", self.pooling.as_str().to_string()),
            ("max_seq_length", self.max_seq_length.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Reads [`EmbeddingInfo::to_metadata`] back; `source` names the file in errors.
    pub fn from_metadata(metadata: &OutputMetadata, source: &Path) -> Result<Self> {
        let field = |key: &str| -> Result<&String> {
            metadata.get(key).ok_or_else(|| {
                InputError::new(
                    source,
                    "no embedding-model metadata (write it with `kroute embed`)",
                )
                .field(key)
                .into()
            })
        };
        let parse_error = |key: &str| InputError::new(source, "unreadable metadata").field(key);
        Ok(Self {
            model: field("model")?.clone(),
            revision: Some(field("revision")?.clone()).filter(|r| !r.is_empty()),
            weights_sha256: field("weights_sha256")?.clone(),
            dim: field("dim")?.parse().map_err(|_| parse_error("dim"))?,
            normalized: field("normalized")?
                .parse()
                .map_err(|_| parse_error("normalized"))?,
            pooling: match field("pooling")?.as_str() {
                "mean" => Pooling::Mean,
                "cls" => Pooling::Cls,
                _ => return Err(parse_error("pooling").into()),
            },
            max_seq_length: field("max_seq_length")?
                .parse()
                .map_err(|_| parse_error("max_seq_length"))?,
        })
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
