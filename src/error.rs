//! Typed errors. Every error a user can cause names what to fix: the file, line and field for bad
//! input, every source tried for a missing model, the feature to enable for a missing device.

use std::fmt;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad user input: a malformed file, a missing field, an empty text. (Boxed: it is the
    /// largest variant.)
    #[error("{0}")]
    Input(Box<InputError>),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A device the build or the machine does not have.
    #[error("{0}")]
    Device(String),

    /// A model that could not be found, fetched or verified from any source.
    #[error("{0}")]
    Model(#[from] ModelError),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("{0}")]
    Invalid(String),

    #[error("interrupted")]
    Interrupted,

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl From<InputError> for Error {
    fn from(e: InputError) -> Self {
        Error::Input(Box::new(e))
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// A problem in an input file, located as precisely as we can: `file:line: field `x`: message`
/// for line-based files, `file: row N: column `x`: message` for columnar ones (Parquet, Arrow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub path: PathBuf,
    pub line: Option<usize>,
    /// 1-based row of a columnar file.
    pub row: Option<usize>,
    pub field: Option<String>,
    pub column: Option<String>,
    pub message: String,
}

impl InputError {
    pub fn new(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            row: None,
            field: None,
            column: None,
            message: message.into(),
        }
    }

    pub fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }

    pub fn at_row(mut self, row: usize) -> Self {
        self.row = Some(row);
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn column(mut self, column: impl Into<String>) -> Self {
        self.column = Some(column.into());
        self
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(row) = self.row {
            write!(f, ": row {row}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        if let Some(column) = &self.column {
            write!(f, ": column `{column}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for InputError {}

/// Every source tried for a model and why each failed.
#[derive(Debug, Clone)]
pub struct ModelError {
    pub model: String,
    pub attempts: Vec<(String, String)>,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "model `{}` could not be loaded; tried:", self.model)?;
        for (source, why) in &self.attempts {
            write!(f, "\n  - {source}: {why}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ModelError {}
