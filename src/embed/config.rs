//! sentence-transformers' model configuration: which pooling, how many tokens, which prompts.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{ModelCard, ModelFiles, Pooling};

/// The parts of a sentence-transformers model directory that change what an embedding is.
#[derive(Debug, Clone, Default)]
pub struct SentenceConfig {
    /// `None` when the directory does not say (no pooling module).
    pub pooling: Option<Pooling>,
    /// Tokens kept per input, special tokens included (`sentence_bert_config.json`).
    pub max_seq_length: Option<usize>,
    /// Named prompts (`config_sentence_transformers.json`), e.g. `query` → `"query: "`.
    pub prompts: BTreeMap<String, String>,
    /// The prompt applied when none is asked for.
    pub default_prompt_name: Option<String>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    path: String,
}

/// A pooling module's `config.json`, in the layout of sentence-transformers 6 (`pooling_mode`)
/// or of earlier versions (one `pooling_mode_*` flag per mode).
#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode: Option<PoolingModes>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default = "yes")]
    include_prompt: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PoolingModes {
    One(String),
    Several(Vec<String>),
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct SentenceBertFile {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct TokenizerConfigFile {
    model_max_length: Option<f64>,
}

#[derive(Deserialize)]
struct SentenceTransformersFile {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    default_prompt_name: Option<String>,
}

impl SentenceConfig {
    /// Reads `modules.json` → the pooling module's `config.json`, `sentence_bert_config.json` and
    /// `config_sentence_transformers.json`. What the directory leaves out comes from the model's
    /// registry card, if it has one (a partial copy of a registered model still embeds the same
    /// way).
    pub fn read(model: &ModelFiles, card: Option<&ModelCard>) -> Result<Self> {
        let pooling_dir = match read_json::<Vec<Module>>(&model.path("modules.json"))? {
            Some(modules) => modules
                .into_iter()
                .find(|m| m.kind.ends_with(".Pooling"))
                .map(|m| m.path),
            None => None,
        }
        .unwrap_or_else(|| "1_Pooling".into());
        let pooling_path = model.dir.join(&pooling_dir).join("config.json");
        let pooling = match read_json::<PoolingFile>(&pooling_path)? {
            Some(file) => Some(file.pooling(&pooling_path)?),
            None => card.map(|c| c.pooling),
        };
        // sentence-transformers before 6 kept the limit in sentence_bert_config.json, 6 keeps it
        // as the tokenizer's model_max_length (where 1e30 means "unset").
        let max_seq_length =
            read_json::<SentenceBertFile>(&model.path("sentence_bert_config.json"))?
                .and_then(|c| c.max_seq_length)
                .or(
                    read_json::<TokenizerConfigFile>(&model.path("tokenizer_config.json"))?
                        .and_then(|c| c.model_max_length)
                        .filter(|n| (1.0..1e9).contains(n))
                        .map(|n| n as usize),
                )
                .or(card.map(|c| c.max_seq_length));
        let st = read_json::<SentenceTransformersFile>(
            &model.path("config_sentence_transformers.json"),
        )?;
        let (mut prompts, default_prompt_name) = match st {
            Some(st) => (st.prompts, st.default_prompt_name),
            None => Default::default(),
        };
        if prompts.is_empty() {
            prompts = card.map(|c| c.prompts.clone()).unwrap_or_default();
        }
        Ok(Self {
            pooling,
            max_seq_length,
            prompts,
            default_prompt_name: default_prompt_name.filter(|name| !name.is_empty()),
        })
    }

    /// The prompt text to prepend, as sentence-transformers picks it: `prompt` if given (an
    /// empty one means none), else the named prompt, else the model's default prompt, else none.
    pub fn prompt(&self, prompt: Option<&str>, prompt_name: Option<&str>) -> Result<String> {
        if let Some(prompt) = prompt {
            return Ok(prompt.to_string());
        }
        let Some(name) = prompt_name.or(self.default_prompt_name.as_deref()) else {
            return Ok(String::new());
        };
        self.prompts.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.prompts.keys().map(String::as_str).collect();
            Error::Invalid(format!(
                "prompt name `{name}` is not among the model's prompts ({}); pass the text with --prompt",
                if known.is_empty() {
                    "it has none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }
}

impl PoolingFile {
    /// The one supported mode this file names.
    fn pooling(&self, path: &Path) -> Result<Pooling> {
        let unsupported = |what: &str| {
            Error::Invalid(format!(
                "{}: {what} is not supported (mean, CLS and last-token pooling are)",
                path.display()
            ))
        };
        if !self.include_prompt {
            return Err(unsupported(
                "pooling without the prompt tokens (include_prompt: false)",
            ));
        }
        let modes: Vec<&str> = match &self.pooling_mode {
            Some(PoolingModes::One(mode)) => vec![mode.as_str()],
            Some(PoolingModes::Several(modes)) => modes.iter().map(String::as_str).collect(),
            None => [
                (self.pooling_mode_cls_token, "cls"),
                (self.pooling_mode_mean_tokens, "mean"),
                (self.pooling_mode_lasttoken, "lasttoken"),
                (self.pooling_mode_max_tokens, "max"),
                (
                    self.pooling_mode_mean_sqrt_len_tokens,
                    "mean_sqrt_len_tokens",
                ),
                (self.pooling_mode_weightedmean_tokens, "weightedmean"),
            ]
            .into_iter()
            .filter_map(|(on, mode)| on.then_some(mode))
            .collect(),
        };
        match modes.as_slice() {
            ["cls"] => Ok(Pooling::Cls),
            ["mean"] => Ok(Pooling::Mean),
            ["lasttoken"] => Ok(Pooling::Last),
            [] => Err(unsupported("a pooling module with no mode")),
            [other] => Err(unsupported(&format!("`{other}` pooling"))),
            _ => Err(unsupported(&format!(
                "concatenating pooling modes ({})",
                modes.join(", ")
            ))),
        }
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
