//! `-` as an input file: standard input, spooled to a temporary file named for its format (the
//! readers choose a format by extension, and `kroute embed` reads its input twice: once to
//! validate every row, once to embed). Errors about the spooled file name `<stdin>`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Standard input as an input path on the command line.
pub const STDIN: &str = "-";
/// Standard input as errors and summaries name it.
pub const STDIN_NAME: &str = "<stdin>";
/// Bytes copied at a time; the first chunk decides the format.
const CHUNK_BYTES: usize = 64 * 1024;

pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == STDIN
}

/// Standard input, read to its end into a temporary file (removed when this is dropped).
pub struct SpooledStdin {
    file: tempfile::TempPath,
}

impl SpooledStdin {
    pub fn read() -> Result<Self> {
        let mut stdin = std::io::stdin().lock();
        let mut next_chunk = |chunk: &mut Vec<u8>| -> Result<usize> {
            chunk.clear();
            (&mut stdin)
                .take(CHUNK_BYTES as u64)
                .read_to_end(chunk)
                .map_err(|e| Error::io(STDIN_NAME, e))
        };
        // The first chunk tells the format (through gzip too); the input is copied a chunk at a
        // time, so a large one is never held in memory.
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        next_chunk(&mut chunk)?;
        let mut file = tempfile::Builder::new()
            .prefix("kroute-stdin-")
            .suffix(suffix_for(&chunk))
            .tempfile()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        while !chunk.is_empty() {
            file.write_all(&chunk)
                .map_err(|e| Error::io(file.path(), e))?;
            next_chunk(&mut chunk)?;
        }
        Ok(Self {
            file: file.into_temp_path(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.file
    }

    /// `error`, naming `<stdin>` where it names the spooled file.
    pub fn rename(&self, error: Error) -> Error {
        let own = |path: &mut PathBuf| {
            if path.as_path() == self.path() {
                *path = PathBuf::from(STDIN_NAME);
            }
        };
        match error {
            Error::Input(mut e) => {
                own(&mut e.path);
                Error::Input(e)
            }
            Error::Io { mut path, source } => {
                own(&mut path);
                Error::Io { path, source }
            }
            other => other,
        }
    }
}

/// The extension that tells the readers how `bytes` are laid out: Parquet and Arrow by their
/// magic, gzip by its own (then the same rules on what it holds), JSON lines when the first
/// character that is not white space opens an object, plain lines otherwise.
fn suffix_for(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"PAR1") {
        return ".parquet";
    }
    if bytes.starts_with(b"ARROW1") || bytes.starts_with(&[0xff, 0xff, 0xff, 0xff]) {
        return ".arrow";
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut head = vec![0u8; 4096];
        let read = flate2::read::MultiGzDecoder::new(bytes)
            .read(&mut head)
            .unwrap_or(0);
        return if opens_json(&head[..read]) {
            ".jsonl.gz"
        } else {
            ".txt.gz"
        };
    }
    if opens_json(bytes) {
        ".jsonl"
    } else {
        ".txt"
    }
}

fn opens_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_their_first_bytes() {
        assert_eq!(suffix_for(b"PAR1\x15\x04"), ".parquet");
        assert_eq!(suffix_for(b"ARROW1\0\0"), ".arrow");
        assert_eq!(suffix_for(b"\n  {\"query\": \"hi\"}\n"), ".jsonl");
        assert_eq!(suffix_for(b"what is 2 + 2?\n"), ".txt");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"query\": \"hi\"}\n").unwrap();
        assert_eq!(suffix_for(&gz.finish().unwrap()), ".jsonl.gz");
    }
}
