use std::path::{Path, PathBuf};

use super::lines::{open_lines, Line};
use crate::error::{Error, InputError, Result};

/// How texts are laid out in an input file, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// `.txt` (or `.txt.gz`): one text per line.
    Lines,
    /// `.jsonl`/`.ndjson` (optionally `.gz`): one JSON object per line, text in a field.
    Jsonl,
}

impl TextFormat {
    pub fn from_path(path: &Path) -> Result<Self> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let name = name.strip_suffix(".gz").unwrap_or(name);
        if name.ends_with(".txt") {
            Ok(TextFormat::Lines)
        } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
            Ok(TextFormat::Jsonl)
        } else {
            Err(InputError::new(
                path,
                "unknown input type: expected .txt, .jsonl or .jsonl.gz",
            )
            .into())
        }
    }
}

#[derive(Debug, Clone)]
pub struct TextReaderOptions {
    /// JSONL field holding the text.
    pub field: String,
    /// Skip empty texts instead of failing on them.
    pub skip_empty: bool,
}

impl Default for TextReaderOptions {
    fn default() -> Self {
        Self {
            field: "query".into(),
            skip_empty: false,
        }
    }
}

/// Texts of an input file, validated line by line. Yields `Err` at the first bad line (naming
/// file, line and field) and stops.
pub struct TextReader {
    path: PathBuf,
    format: TextFormat,
    options: TextReaderOptions,
    lines: Box<dyn Iterator<Item = Result<Line>> + Send>,
    texts: usize,
    skipped: usize,
    failed: bool,
}

impl TextReader {
    pub fn open(path: &Path, options: TextReaderOptions) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            format: TextFormat::from_path(path)?,
            options,
            lines: Box::new(open_lines(path)?),
            texts: 0,
            skipped: 0,
            failed: false,
        })
    }

    /// Reads the whole file once, validating every line: returns (texts, skipped empty).
    /// Fails on an empty file, so a run can refuse bad input before doing any work.
    pub fn scan(path: &Path, options: TextReaderOptions) -> Result<(usize, usize)> {
        let mut reader = Self::open(path, options)?;
        for text in reader.by_ref() {
            text?;
        }
        if reader.texts == 0 {
            let why = if reader.skipped > 0 {
                format!("no texts: all {} lines are empty", reader.skipped)
            } else {
                "no texts: the file is empty".to_string()
            };
            return Err(InputError::new(path, why).into());
        }
        Ok((reader.texts, reader.skipped))
    }

    fn parse(&self, line: &Line) -> Result<String> {
        let at = |message: String| InputError::new(&self.path, message).at_line(line.number);
        match self.format {
            TextFormat::Lines => Ok(line.text.clone()),
            TextFormat::Jsonl => {
                if line.text.trim().is_empty() {
                    return Ok(String::new());
                }
                let value: serde_json::Value = serde_json::from_str(&line.text)
                    .map_err(|e| at(format!("malformed JSON: {e}")))?;
                let object = value
                    .as_object()
                    .ok_or_else(|| at("expected a JSON object".into()))?;
                let field = &self.options.field;
                match object.get(field) {
                    Some(serde_json::Value::String(s)) => Ok(s.clone()),
                    Some(other) => {
                        Err(at(format!("expected a string, found {}", json_kind(other)))
                            .field(field)
                            .into())
                    }
                    None => Err(at("missing".into()).field(field).into()),
                }
            }
        }
    }
}

impl Iterator for TextReader {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        if self.failed {
            return None;
        }
        loop {
            let line = match self.lines.next()? {
                Ok(line) => line,
                Err(e) => return Some(self.fail(e)),
            };
            let text = match self.parse(&line) {
                Ok(text) => text,
                Err(e) => return Some(self.fail(e)),
            };
            if text.trim().is_empty() {
                if self.options.skip_empty {
                    self.skipped += 1;
                    continue;
                }
                let mut err = InputError::new(
                    &self.path,
                    "empty text (pass --skip-empty to skip empty lines)",
                )
                .at_line(line.number);
                if self.format == TextFormat::Jsonl && !line.text.trim().is_empty() {
                    err = err.field(&self.options.field);
                }
                return Some(self.fail(err.into()));
            }
            self.texts += 1;
            return Some(Ok(text));
        }
    }
}

impl TextReader {
    fn fail(&mut self, e: Error) -> Result<String> {
        self.failed = true;
        Err(e)
    }
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
