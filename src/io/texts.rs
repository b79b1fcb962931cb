//! Texts to embed, from line files (`.txt`, `.jsonl`, optionally gzipped) or columnar ones
//! (Parquet files or a directory of them, Arrow IPC), validated row by row: a bad row is an
//! error naming the file, the line or row, and the field or column.

use std::path::Path;

use super::columnar;
use super::lines::{open_lines, Line};
use super::rows::{IdKind, Location, RawRow, RawRows, RowId, TextFormat, TextReaderOptions};
use crate::error::{Error, InputError, Result};

/// One valid input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub text: String,
    pub id: Option<RowId>,
}

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
