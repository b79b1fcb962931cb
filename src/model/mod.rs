//! Embedding models: the registry of known models (`models/registry.json`) and resolving a
//! `--model` value (a local directory or a Hugging Face repo id) to files on disk whose
//! checksums match the registry.

mod pooling;
mod pypi;
mod registry;
mod resolve;

pub use pooling::Pooling;
pub use registry::{find_card, registry, Mirror, ModelCard, Wheel};
pub use resolve::{
    resolve, sha256_file, weight_files, weights_digest, ModelFiles, ModelSource, WEIGHTS,
    WEIGHTS_INDEX,
};

/// The model used when `--model` is not given.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";
