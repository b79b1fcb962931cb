//! Files in and out: line-numbered readers for `.txt`/`.jsonl`/`.jsonl.gz` that report bad input
//! by file, line and field; embedding writers that stream to a temporary file and rename it
//! into place only when complete.

mod atomic;
mod embeddings;
mod lines;
mod texts;

pub use atomic::{AtomicFile, StagedDir};
pub use embeddings::{read_embeddings, EmbeddingFormat, EmbeddingWriter, OutputMetadata};
pub use lines::{open_lines, Line};
pub(crate) use texts::json_kind;
pub use texts::{TextFormat, TextReader, TextReaderOptions};
