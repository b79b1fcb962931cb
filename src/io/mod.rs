//! Files in and out: readers for `.txt`/`.jsonl`/`.jsonl.gz` and Parquet/Arrow inputs that
//! report bad input by file, line or row, and field or column; embedding writers (safetensors,
//! npy, JSONL, Parquet) that stream to a temporary file and rename it into place only when
//! complete.

mod atomic;
mod columnar;
mod embeddings;
mod lines;
mod rows;
mod stdin;
mod texts;
mod thrift;

pub use atomic::{AtomicFile, StagedDir};
pub(crate) use columnar::parquet_files;
pub use embeddings::{
    read_embeddings, EmbeddingFormat, EmbeddingWriter, OutputLayout, OutputMetadata,
};
pub use lines::{open_lines, Line};
pub use rows::{IdKind, RowId, TextFormat, TextReaderOptions};
pub use stdin::{is_stdin, SpooledStdin, STDIN, STDIN_NAME};
pub(crate) use texts::json_kind;
pub use texts::{Record, Scan, TextReader};
