use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::AtomicFile;
use crate::error::{Error, InputError, Result};

/// Output layout, chosen by the output file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingFormat {
    /// One f32 tensor `embeddings` of shape `(n, dim)`, model details in the metadata.
    Safetensors,
    /// A NumPy `.npy` array, little-endian f32, `(n, dim)`.
    Npy,
    /// `{"index": i, "embedding": [...]}` per line.
    Jsonl,
}

impl EmbeddingFormat {
    pub fn from_path(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Ok(Self::Safetensors),
            Some("npy") => Ok(Self::Npy),
            Some("jsonl") => Ok(Self::Jsonl),
            _ => Err(InputError::new(
                path,
                "unknown output type: expected .safetensors, .npy or .jsonl",
            )
            .into()),
        }
    }
}

/// String metadata stored in safetensors outputs (model id, revision, dim, normalisation…).
pub type OutputMetadata = BTreeMap<String, String>;

/// Reads the `embeddings` tensor and the metadata of a `.safetensors` file written by
/// [`EmbeddingWriter`] (`kroute embed`), onto `device`.
pub fn read_embeddings(
    path: &Path,
    device: &candle_core::Device,
) -> Result<(candle_core::Tensor, OutputMetadata)> {
    if EmbeddingFormat::from_path(path)? != EmbeddingFormat::Safetensors {
        return Err(InputError::new(
            path,
            "expected a .safetensors file from `kroute embed` (it carries the model's identity)",
        )
        .into());
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |e: &dyn std::fmt::Display| {
        Error::from(InputError::new(
            path,
            format!("not a safetensors file: {e}"),
        ))
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(&e))?;
    let metadata: OutputMetadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| bad(&e))?;
    let embeddings = tensors
        .remove("embeddings")
        .ok_or_else(|| Error::from(InputError::new(path, "no `embeddings` tensor")))?;
    Ok((embeddings.to_dtype(candle_core::DType::F32)?, metadata))
}

/// Streams `(n, dim)` f32 rows into an [`AtomicFile`]. The row count is fixed up front so
/// headers can be written first and nothing is held in memory.
pub struct EmbeddingWriter {
    file: AtomicFile,
    format: EmbeddingFormat,
    rows: usize,
    dim: usize,
    written: usize,
    /// Reused buffer for JSONL rows.
    line: Vec<u8>,
}

impl EmbeddingWriter {
    pub fn create(path: &Path, rows: usize, dim: usize, metadata: &OutputMetadata) -> Result<Self> {
        let format = EmbeddingFormat::from_path(path)?;
        let mut file = AtomicFile::create(path)?;
        let header = match format {
            EmbeddingFormat::Safetensors => safetensors_header(rows, dim, metadata),
            EmbeddingFormat::Npy => npy_header(rows, dim),
            EmbeddingFormat::Jsonl => Vec::new(),
        };
        file.write_all(&header).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            file,
            format,
            rows,
            dim,
            written: 0,
            line: Vec::new(),
        })
    }

    /// Appends rows given as a flat row-major slice.
    pub fn write_rows(&mut self, data: &[f32]) -> Result<()> {
        let n = data.len() / self.dim.max(1);
        if data.len() != n * self.dim || self.written + n > self.rows {
            return Err(Error::Invalid(format!(
                "{}: got {} values for rows of {} with {} of {} rows written",
                self.file.target().display(),
                data.len(),
                self.dim,
                self.written,
                self.rows
            )));
        }
        let target = self.file.target().to_path_buf();
        match self.format {
            EmbeddingFormat::Safetensors | EmbeddingFormat::Npy => {
                let mut bytes = Vec::with_capacity(data.len() * 4);
                for v in data {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                self.file
                    .write_all(&bytes)
                    .map_err(|e| Error::io(&target, e))?;
            }
            EmbeddingFormat::Jsonl => {
                for (i, row) in data.chunks(self.dim).enumerate() {
                    self.line.clear();
                    let row = JsonlRow {
                        index: self.written + i,
                        embedding: row,
                    };
                    serde_json::to_writer(&mut self.line, &row).expect("rows serialize");
                    self.line.push(b'\n');
                    self.file
                        .write_all(&self.line)
                        .map_err(|e| Error::io(&target, e))?;
                }
            }
        }
        self.written += n;
        Ok(())
    }

    /// Checks that every row arrived, then renames the file into place.
    pub fn finish(self) -> Result<()> {
        if self.written != self.rows {
            return Err(Error::Invalid(format!(
                "{}: {} of {} rows written",
                self.file.target().display(),
                self.written,
                self.rows
            )));
        }
        self.file.commit()
    }
}

/// A JSONL output row; f32 values print in their shortest f32 form.
#[derive(serde::Serialize)]
struct JsonlRow<'a> {
    index: usize,
    embedding: &'a [f32],
}

/// safetensors: u64 header length, JSON header padded with spaces to 8 bytes, raw data.
fn safetensors_header(rows: usize, dim: usize, metadata: &OutputMetadata) -> Vec<u8> {
    let header = serde_json::json!({
        "__metadata__": metadata,
        "embeddings": {
            "dtype": "F32",
            "shape": [rows, dim],
            "data_offsets": [0, rows * dim * 4],
        }
    });
    let mut json = header.to_string().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

/// npy v1.0: magic, version, u16 header length, a Python dict literal padded to 64 bytes.
fn npy_header(rows: usize, dim: usize) -> Vec<u8> {
    let mut dict =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned() {
        for rows in [0, 1, 12345, 10_000_000] {
            assert_eq!(npy_header(rows, 384).len() % 64, 0);
        }
    }

    #[test]
    fn safetensors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.safetensors");
        let mut meta = OutputMetadata::new();
        meta.insert("model".into(), "m".into());
        let mut w = EmbeddingWriter::create(&path, 2, 3, &meta).unwrap();
        w.write_rows(&[1.0, 2.0, 3.0]).unwrap();
        w.write_rows(&[4.0, 5.0, 6.0]).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("embeddings").unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        let values: Vec<f32> = t
            .data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["model"], "m");
    }

    #[test]
    fn short_output_is_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.npy");
        let mut w = EmbeddingWriter::create(&path, 2, 2, &OutputMetadata::new()).unwrap();
        w.write_rows(&[1.0, 2.0]).unwrap();
        assert!(w.finish().is_err());
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
