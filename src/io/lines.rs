use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, InputError, Result};

/// One line of an input file: its 1-based number and its text (line ending removed).
pub struct Line {
    pub number: usize,
    pub text: String,
}

/// Lines of a plain or gzip-compressed (`.gz`) file. Invalid UTF-8 is reported with its line.
pub fn open_lines(path: &Path) -> Result<impl Iterator<Item = Result<Line>> + Send> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader: Box<dyn Read + Send> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(LineReader {
        path: path.to_path_buf(),
        reader: BufReader::with_capacity(1 << 20, reader),
        number: 0,
        buf: Vec::new(),
        done: false,
    })
}

struct LineReader {
    path: PathBuf,
    reader: BufReader<Box<dyn Read + Send>>,
    number: usize,
    buf: Vec<u8>,
    done: bool,
}

impl Iterator for LineReader {
    type Item = Result<Line>;

    fn next(&mut self) -> Option<Result<Line>> {
        if self.done {
            return None;
        }
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(_) => {
                self.number += 1;
                if self.buf.ends_with(b"\n") {
                    self.buf.pop();
                    if self.buf.ends_with(b"\r") {
                        self.buf.pop();
                    }
                }
                Some(match String::from_utf8(std::mem::take(&mut self.buf)) {
                    Ok(text) => Ok(Line {
                        number: self.number,
                        text,
                    }),
                    Err(e) => {
                        self.done = true;
                        Err(InputError::new(
                            &self.path,
                            format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
                        )
                        .at_line(self.number)
                        .into())
                    }
                })
            }
            Err(e) => {
                self.done = true;
                Some(Err(Error::io(&self.path, e)))
            }
        }
    }
}
