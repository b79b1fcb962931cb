//! Files in and out: line-numbered readers for `.txt`/`.jsonl`/`.jsonl.gz` that report bad input
//! by file, line and field; embedding writers that stream to a temporary file and rename it
//! into place only when complete.

mod atomic;
mod lines;
mod texts;
mod writer;

pub use atomic::AtomicFile;
pub use lines::{open_lines, Line};
pub(crate) use texts::json_kind;
pub use texts::{TextFormat, TextReader, TextReaderOptions};
pub use writer::{EmbeddingFormat, EmbeddingWriter, OutputMetadata};
