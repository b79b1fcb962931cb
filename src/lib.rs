//! kroute: local sentence embeddings and Avengers-Pro LLM routing on CPU, CUDA or Metal.
//!
//! The crate is organised by concern:
//! - [`device`]: picking a compute device and dtype from user input;
//! - [`model`]: the registry of known embedding models and resolving a model id to verified files;
//! - [`embed`]: the encoders (one file per architecture behind one trait), tokenization, prompts
//!   and token-budget batching ([`Embedder`]);
//! - [`cluster`]: k-means on the device as tensor ops;
//! - [`kernels`]: fused CUDA kernels for the hot paths, each with its CPU reference;
//! - [`records`]: routing records (JSONL) with file/line/field errors, splits and summaries;
//! - [`router`]: per-cluster statistics, scoring, batched routing and the router directory;
//! - [`eval`]: the α sweep against single models and the oracle, calibration, reports, plots;
//! - [`mod@bench`]: throughput per device (`kroute bench`);
//! - [`engine`]: serving's model side (queue, dynamic batcher, model thread) and the router's
//!   learning while it serves (decisions, outcomes, exploration, router swaps);
//! - [`state`]: a server's durable state: the outcome log, snapshots of the learned router and
//!   the spend ledger;
//! - [`budget`]: pacing a tenant's spend through its budget period;
//! - [`serve`]: serving's HTTP side (`kroute serve`, OpenAI-compatible);
//! - [`io`]: reading texts (with file/line/field errors) and writing outputs atomically;
//! - [`job`]: batch embedding of a file (`kroute embed`): shards, checkpoints, resume;
//! - [`settings`]: the settings groups that the CLI's flags and the Python package share.
//!
//! ```no_run
//! use kroute::{Embedder, device::DeviceSpec};
//! let device = DeviceSpec::Cpu.open()?;
//! let embedder = Embedder::load("sentence-transformers/all-MiniLM-L6-v2", &device, None)?;
//! let vectors = embedder.embed_vecs(&["How do I route LLM queries?"])?;
//! assert_eq!(vectors[0].len(), 384);
//! # Ok::<(), kroute::Error>(())
//! ```

pub mod bench;
pub mod budget;
pub mod cluster;
pub mod device;
pub mod embed;
pub mod engine;
pub mod error;
pub mod eval;
pub mod io;
pub mod job;
pub mod kernels;
pub mod model;
pub mod records;
pub mod router;
pub mod serve;
pub mod settings;
pub mod state;

pub use embed::{default_batch_tokens, EmbedStats, Embedder, EmbedderOptions};
pub use error::{Error, Result};
