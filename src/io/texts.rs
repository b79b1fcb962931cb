//! Texts to embed, from line files (`.txt`, `.jsonl`, optionally gzipped) or columnar ones
//! (Parquet files or a directory of them, Arrow IPC), validated row by row: a bad row is an
//! error naming the file, the line or row, and the field or column.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::columnar;
use super::lines::{open_lines, Line};
use crate::error::{Error, InputError, Result};

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

/// One valid input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub text: String,
    pub id: Option<RowId>,
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

/// Summary of a validating pass over an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub texts: usize,
    pub skipped: usize,
    /// The ids' type, when `--id-field` is given.
    pub id_kind: Option<IdKind>,
}

/// The valid rows of an input. Yields `Err` at the first bad row and stops.
pub struct TextReader {
    format: TextFormat,
    options: TextReaderOptions,
    rows: RawRows,
    texts: usize,
    skipped: usize,
    id_kind: Option<IdKind>,
    failed: bool,
}

impl TextReader {
    pub fn open(path: &Path, options: TextReaderOptions) -> Result<Self> {
        let format = TextFormat::from_path(path)?;
        let rows: RawRows = match format {
            TextFormat::Lines | TextFormat::Jsonl => {
                let path = path.to_path_buf();
                let options = options.clone();
                Box::new(
                    open_lines(&path)?.map(move |line| parse_line(&path, format, &options, line?)),
                )
            }
            TextFormat::Parquet | TextFormat::Arrow => columnar::open(path, format, &options)?,
        };
        Ok(Self {
            format,
            options,
            rows,
            texts: 0,
            skipped: 0,
            id_kind: None,
            failed: false,
        })
    }

    pub fn format(&self) -> TextFormat {
        self.format
    }

    /// Reads the whole input once, validating every row. Fails on an input without texts, so a
    /// run can refuse bad input before doing any work.
    pub fn scan(path: &Path, options: TextReaderOptions) -> Result<Scan> {
        let mut reader = Self::open(path, options)?;
        for record in reader.by_ref() {
            record?;
        }
        if reader.texts == 0 {
            let (unit, whole) = if reader.format.is_columnar() {
                ("rows", "input")
            } else {
                ("lines", "file")
            };
            let why = if reader.skipped > 0 {
                format!("no texts: all {} {unit} are empty", reader.skipped)
            } else {
                format!("no texts: the {whole} is empty")
            };
            return Err(InputError::new(path, why).into());
        }
        Ok(Scan {
            texts: reader.texts,
            skipped: reader.skipped,
            id_kind: reader.id_kind,
        })
    }

    /// Only the texts.
    pub fn texts(self) -> impl Iterator<Item = Result<String>> + Send {
        self.map(|record| record.map(|r| r.text))
    }

    fn validate(&mut self, row: RawRow) -> Result<Option<Record>> {
        let field = &self.options.field;
        let blank = row.text.as_deref().is_none_or(|t| t.trim().is_empty());
        if blank {
            if self.options.skip_empty {
                self.skipped += 1;
                return Ok(None);
            }
            let what = if row.text.is_none() {
                "null"
            } else {
                "empty text"
            };
            let name = row.from_field.then_some(field.as_str());
            return Err(row
                .error(
                    format!("{what} (pass --skip-empty to skip such rows)"),
                    name,
                )
                .into());
        }
        if let (Some(id), Some(id_field)) = (&row.id, &self.options.id_field) {
            match self.id_kind {
                Some(kind) if kind != id.kind() => {
                    return Err(row
                        .error(
                            format!("an id of another type than the first row's ({:?})", kind),
                            Some(id_field),
                        )
                        .into())
                }
                _ => self.id_kind = Some(id.kind()),
            }
        }
        self.texts += 1;
        Ok(Some(Record {
            text: row.text.unwrap_or_default(),
            id: row.id,
        }))
    }
}

impl Iterator for TextReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.failed {
            return None;
        }
        loop {
            let row = match self.rows.next()? {
                Ok(row) => row,
                Err(e) => return Some(self.fail(e)),
            };
            match self.validate(row) {
                Ok(Some(record)) => return Some(Ok(record)),
                Ok(None) => continue,
                Err(e) => return Some(self.fail(e)),
            }
        }
    }
}

impl TextReader {
    fn fail(&mut self, e: Error) -> Result<Record> {
        self.failed = true;
        Err(e)
    }
}

/// A line of a `.txt` or `.jsonl` file as a row.
fn parse_line(
    path: &Path,
    format: TextFormat,
    options: &TextReaderOptions,
    line: Line,
) -> Result<RawRow> {
    let mut row = RawRow {
        path: path.to_path_buf(),
        at: Location::Line(line.number),
        text: None,
        id: None,
        from_field: false,
    };
    if format == TextFormat::Lines || line.text.trim().is_empty() {
        row.text = Some(if format == TextFormat::Lines {
            line.text
        } else {
            String::new()
        });
        return Ok(row);
    }
    let value: serde_json::Value = serde_json::from_str(&line.text)
        .map_err(|e| row.error(format!("malformed JSON: {e}"), None))?;
    let object = value
        .as_object()
        .ok_or_else(|| row.error("expected a JSON object", None))?;
    let field = &options.field;
    row.from_field = true;
    row.text = match object.get(field) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Null) => None,
        Some(other) => {
            return Err(row
                .error(
                    format!("expected a string, found {}", json_kind(other)),
                    Some(field),
                )
                .into())
        }
        None => return Err(row.error("missing", Some(field)).into()),
    };
    if let Some(id_field) = &options.id_field {
        row.id = Some(match object.get(id_field) {
            Some(serde_json::Value::String(s)) => RowId::Str(s.clone()),
            Some(serde_json::Value::Number(n)) if n.is_i64() => {
                RowId::Int(n.as_i64().expect("checked"))
            }
            Some(other) => {
                return Err(row
                    .error(
                        format!(
                            "expected an integer or a string id, found {}",
                            json_kind(other)
                        ),
                        Some(id_field),
                    )
                    .into())
            }
            None => return Err(row.error("missing", Some(id_field)).into()),
        });
    }
    Ok(row)
}

pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
