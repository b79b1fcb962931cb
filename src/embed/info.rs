//! Identity of an embedding model's vectors, for checking that two sets of embeddings (a
//! router's training queries and the queries routed with it) are comparable.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::models::Architecture;
use super::{Embedder, Pooling};
use crate::error::{Error, InputError, Result};
use crate::io::OutputMetadata;

/// Everything that changes what vector a text gets: a router only works with queries embedded
/// the way its training queries were. The dtype is not part of it (f16 on a GPU gives the same
/// model's vectors, up to rounding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingInfo {
    pub model: String,
    pub revision: Option<String>,
    pub weights_sha256: String,
    /// `config.json`'s `model_type` (routers and files from before it was recorded ran BERT).
    #[serde(default = "bert")]
    pub architecture: Architecture,
    pub dim: usize,
    pub normalized: bool,
    pub pooling: Pooling,
    /// Text prepended to every input ("" for none).
    #[serde(default)]
    pub prompt: String,
    pub max_seq_length: usize,
}

fn bert() -> Architecture {
    Architecture::Bert
}

impl EmbeddingInfo {
    pub fn of(embedder: &Embedder) -> Self {
        let model = embedder.model();
        Self {
            model: model.id.clone(),
            revision: model.revision.clone(),
            weights_sha256: model.weights_sha256.clone(),
            architecture: embedder.encoder().architecture(),
            dim: embedder.dim(),
            normalized: embedder.normalize(),
            pooling: embedder.pooling(),
            prompt: embedder.prompt().to_string(),
            max_seq_length: embedder.max_seq_length(),
        }
    }

    /// As string metadata (stored in the embedding files of `kroute embed`).
    pub fn to_metadata(&self) -> OutputMetadata {
        [
            ("model", self.model.clone()),
            ("revision", self.revision.clone().unwrap_or_default()),
            ("weights_sha256", self.weights_sha256.clone()),
            ("architecture", self.architecture.as_str().to_string()),
            ("dim", self.dim.to_string()),
            ("normalized", self.normalized.to_string()),
            ("pooling", self.pooling.as_str().to_string()),
            ("prompt", self.prompt.clone()),
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
            architecture: match metadata.get("architecture") {
                Some(name) => Architecture::from_model_type(name)
                    .ok_or_else(|| parse_error("architecture"))?,
                None => Architecture::Bert,
            },
            dim: field("dim")?.parse().map_err(|_| parse_error("dim"))?,
            normalized: field("normalized")?
                .parse()
                .map_err(|_| parse_error("normalized"))?,
            pooling: field("pooling")?
                .parse()
                .map_err(|_| parse_error("pooling"))?,
            prompt: metadata.get("prompt").cloned().unwrap_or_default(),
            max_seq_length: field("max_seq_length")?
                .parse()
                .map_err(|_| parse_error("max_seq_length"))?,
        })
    }

    /// Refuses an embedder whose vectors are not of this kind; `expected_by` says whose
    /// identity this is ("the router", a file), and the error names the first field that differs
    /// and the flag that sets it.
    pub fn check(&self, embedder: &Embedder, expected_by: &str) -> Result<()> {
        match self.difference(&Self::of(embedder), expected_by) {
            None => Ok(()),
            Some(why) => Err(Error::Invalid(format!("embedding model mismatch in {why}"))),
        }
    }

    /// How `used` differs from `self`, first differing field only: "`field`: {expected_by}
    /// expects A, the model in use has B; pass --flag A".
    pub fn difference(&self, used: &Self, expected_by: &str) -> Option<String> {
        self.first_difference(used).map(|d| {
            format!(
                "`{}`: {expected_by} expects {}, the model in use has {}{}",
                d.field,
                d.expected,
                d.found,
                d.fix.map(|fix| format!("; pass {fix}")).unwrap_or_default()
            )
        })
    }

    /// The first field in which `used` differs from `self`, in the order that explains most.
    fn first_difference(&self, used: &Self) -> Option<Difference> {
        let differ = |field, expected: String, found: String, fix: Option<String>| {
            (expected != found).then_some(Difference {
                field,
                expected,
                found,
                fix,
            })
        };
        let quoted = |prompt: &str| {
            if prompt.is_empty() {
                "no prompt".to_string()
            } else {
                format!("{prompt:?}")
            }
        };
        differ(
            "weights_sha256",
            format!("{} (sha256 {})", self.model, self.weights_sha256),
            format!("{} (sha256 {})", used.model, used.weights_sha256),
            Some(format!("--model {}", self.model)),
        )
        .or_else(|| {
            differ(
                "architecture",
                self.architecture.as_str().into(),
                used.architecture.as_str().into(),
                None,
            )
        })
        .or_else(|| {
            differ(
                "pooling",
                self.pooling.as_str().into(),
                used.pooling.as_str().into(),
                Some(format!("--pooling {}", self.pooling.as_str())),
            )
        })
        .or_else(|| {
            differ(
                "prompt",
                quoted(&self.prompt),
                quoted(&used.prompt),
                Some(format!("--prompt {:?}", self.prompt)),
            )
        })
        .or_else(|| {
            differ(
                "max_seq_length",
                self.max_seq_length.to_string(),
                used.max_seq_length.to_string(),
                Some(format!("--max-seq-length {}", self.max_seq_length)),
            )
        })
        .or_else(|| {
            differ(
                "normalized",
                self.normalized.to_string(),
                used.normalized.to_string(),
                None,
            )
        })
        .or_else(|| {
            differ(
                "dim",
                self.dim.to_string(),
                used.dim.to_string(),
                Some(format!("--dimensions {}", self.dim)),
            )
        })
    }
}

struct Difference {
    field: &'static str,
    expected: String,
    found: String,
    fix: Option<String>,
}
