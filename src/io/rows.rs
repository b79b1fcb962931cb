//! The shapes of input rows shared by the line readers (`texts.rs`) and the columnar ones
//! (`columnar.rs`): formats, reader options, ids, and a row as read with its place in its file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{InputError, Result};

/// How texts are laid out in an input, chosen by its extension (a directory: Parquet files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// `.txt` (or `.txt.gz`): one text per line.
    Lines,
    /// `.jsonl`/`.ndjson` (optionally `.gz`): one JSON object per line, text in a field.
    Jsonl,
    /// `.parquet`, or a directory of `.parquet` files read in name order: text in a column.
    Parquet,
    /// `.arrow`/`.ipc`/`.feather` (Arrow IPC file or stream): text in a column.
    Arrow,
}

impl TextFormat {
    pub fn from_path(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Ok(TextFormat::Parquet);
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let name = name.strip_suffix(".gz").unwrap_or(name);
        let extension = name.rsplit('.').next().unwrap_or("");
        match extension {
            "txt" => Ok(TextFormat::Lines),
            "jsonl" | "ndjson" => Ok(TextFormat::Jsonl),
            "parquet" => Ok(TextFormat::Parquet),
            "arrow" | "ipc" | "feather" => Ok(TextFormat::Arrow),
            _ => Err(InputError::new(
                path,
                "unknown input type: expected .txt, .jsonl(.gz), .parquet (or a directory of \
                 them) or .arrow",
            )
            .into()),
        }
    }

    /// Whether texts sit in named columns (`--field` names a column) rather than lines.
    pub fn is_columnar(self) -> bool {
        matches!(self, TextFormat::Parquet | TextFormat::Arrow)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextReaderOptions {
    /// JSONL field or column holding the text.
    pub field: String,
    /// JSONL field or column holding an id to carry into the output.
    pub id_field: Option<String>,
    /// Skip empty texts (and nulls) instead of failing on them.
    pub skip_empty: bool,
}

impl Default for TextReaderOptions {
    fn default() -> Self {
        Self {
            field: "query".into(),
            id_field: None,
            skip_empty: false,
        }
    }
}

/// An id carried from the input to the output: an integer or a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RowId {
    Int(i64),
    Str(String),
}

impl RowId {
    pub fn kind(&self) -> IdKind {
        match self {
            RowId::Int(_) => IdKind::Int,
            RowId::Str(_) => IdKind::Str,
        }
    }
}

/// The type of an id column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdKind {
    Int,
    Str,
}

/// Where a row sits in its file, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Location {
    Line(usize),
    Row(usize),
}

/// A row as read, before the empty/null rule: its file, place, text (`None` for null) and id.
pub(crate) struct RawRow {
    pub path: PathBuf,
    pub at: Location,
    pub text: Option<String>,
    pub id: Option<RowId>,
    /// Whether the text came from a named field or column (not from a plain or blank line), so
    /// errors about it name the field.
    pub from_field: bool,
}

impl RawRow {
    /// An [`InputError`] at this row, naming `name` as the field or column it is about.
    pub fn error(&self, message: impl Into<String>, name: Option<&str>) -> InputError {
        let err = InputError::new(&self.path, message);
        match (self.at, name) {
            (Location::Line(n), Some(field)) => err.at_line(n).field(field),
            (Location::Line(n), None) => err.at_line(n),
            (Location::Row(n), Some(column)) => err.at_row(n).column(column),
            (Location::Row(n), None) => err.at_row(n),
        }
    }
}

pub(crate) type RawRows = Box<dyn Iterator<Item = Result<RawRow>> + Send>;
