//! sentence-transformers' model configuration: which pooling and how many tokens.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::ModelFiles;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean of the token states under the attention mask (MiniLM, e5).
    Mean,
    /// The `[CLS]` token's state (bge).
    Cls,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        }
    }
}

/// The parts of a sentence-transformers model directory that change what an embedding is.
#[derive(Debug, Clone)]
pub struct SentenceConfig {
    pub pooling: Pooling,
    /// Tokens kept per input, special tokens included (`sentence_bert_config.json`).
    pub max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    path: String,
}

#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertFile {
    max_seq_length: Option<usize>,
}

impl SentenceConfig {
    /// Reads `modules.json` → the pooling module's `config.json`, and `sentence_bert_config.json`.
    /// A model without them (a plain BERT checkpoint) gets mean pooling and the model's limit.
    pub fn read(model: &ModelFiles) -> Result<Self> {
        let pooling_dir = match read_json::<Vec<Module>>(&model.path("modules.json"))? {
            Some(modules) => modules
                .into_iter()
                .find(|m| m.kind.ends_with("models.Pooling"))
                .map(|m| m.path),
            None => None,
        }
        .unwrap_or_else(|| "1_Pooling".into());
        let pooling_path = model.dir.join(&pooling_dir).join("config.json");
        let pooling = match read_json::<PoolingFile>(&pooling_path)? {
            Some(p) if p.pooling_mode_cls_token => Pooling::Cls,
            Some(p) if p.pooling_mode_mean_tokens => Pooling::Mean,
            Some(_) => {
                return Err(Error::Invalid(format!(
                    "{}: only mean and CLS pooling are supported",
                    pooling_path.display()
                )))
            }
            None => Pooling::Mean,
        };
        let max_seq_length =
            read_json::<SentenceBertFile>(&model.path("sentence_bert_config.json"))?
                .and_then(|c| c.max_seq_length);
        Ok(Self {
            pooling,
            max_seq_length,
        })
    }
}

/// Parses a JSON file, `None` when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}
