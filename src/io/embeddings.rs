use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::rows::{IdKind, RowId};
use super::AtomicFile;
use crate::error::{Error, InputError, Result};

/// Output layout, chosen by the output file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingFormat {
    /// One f32 tensor `embeddings` of shape `(n, dim)`, model details in the metadata.
    Safetensors,
    /// A NumPy `.npy` array, little-endian f32, `(n, dim)`.
    Npy,
    /// `{"index": i, ["id": …,] "embedding": [...]}` per line.
    Jsonl,
    /// Parquet: `[id,] embedding` (`FixedSizeList<Float32, dim>`), model details in the file's
    /// key-value metadata, written row group by row group.
    Parquet,
}

impl EmbeddingFormat {
    pub fn from_path(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Ok(Self::Safetensors),
            Some("npy") => Ok(Self::Npy),
            Some("jsonl") => Ok(Self::Jsonl),
            Some("parquet") => Ok(Self::Parquet),
            _ => Err(InputError::new(
                path,
                "unknown output type: expected .safetensors, .npy, .jsonl or .parquet",
            )
            .into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::Npy => "npy",
            Self::Jsonl => "jsonl",
            Self::Parquet => "parquet",
        }
    }

    /// Whether the format can carry an id per row.
    pub fn holds_ids(self) -> bool {
        matches!(self, Self::Jsonl | Self::Parquet)
    }
}

/// What an output holds: its rows, their dimension and, optionally, an id column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLayout {
    pub rows: usize,
    pub dim: usize,
    pub ids: Option<IdKind>,
}

/// Rows per Parquet row group: a few MB of vectors buffered at a time.
const PARQUET_ROW_GROUP: usize = 16_384;

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

/// Streams `(n, dim)` f32 rows (and their ids) into an [`AtomicFile`]. The row count is fixed up
/// front so headers can be written first and nothing is held in memory.
pub struct EmbeddingWriter {
    sink: Sink,
    target: std::path::PathBuf,
    layout: OutputLayout,
    written: usize,
    /// Reused buffer for JSONL rows.
    line: Vec<u8>,
}

enum Sink {
    /// safetensors, npy and JSONL: bytes appended to the file.
    Bytes(AtomicFile, EmbeddingFormat),
    Parquet(Box<ArrowWriter<AtomicFile>>, Arc<Schema>),
}

impl EmbeddingWriter {
    /// A writer whose temporary file sits beside `path`.
    pub fn create(path: &Path, layout: OutputLayout, metadata: &OutputMetadata) -> Result<Self> {
        Self::create_with(AtomicFile::create(path)?, layout, metadata)
    }

    /// A writer whose temporary file sits in `staging` (on the same file system as `path`), so
    /// that an interrupted write leaves nothing beside the output.
    pub fn create_in(
        path: &Path,
        staging: &Path,
        layout: OutputLayout,
        metadata: &OutputMetadata,
    ) -> Result<Self> {
        Self::create_with(AtomicFile::create_in(path, staging)?, layout, metadata)
    }

    fn create_with(
        mut file: AtomicFile,
        layout: OutputLayout,
        metadata: &OutputMetadata,
    ) -> Result<Self> {
        let target = file.target().to_path_buf();
        let format = EmbeddingFormat::from_path(&target)?;
        if layout.ids.is_some() && !format.holds_ids() {
            return Err(InputError::new(
                &target,
                "ids (--id-field) need a .parquet or .jsonl output; .npy and .safetensors hold vectors only",
            )
            .into());
        }
        let (rows, dim) = (layout.rows, layout.dim);
        let sink = match format {
            EmbeddingFormat::Parquet => {
                let schema = parquet_schema(dim, layout.ids);
                let properties = WriterProperties::builder()
                    .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP))
                    .set_key_value_metadata(Some(
                        metadata
                            .iter()
                            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                            .collect(),
                    ))
                    .build();
                let writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))
                    .map_err(|e| Error::Invalid(format!("{}: {e}", target.display())))?;
                Sink::Parquet(Box::new(writer), schema)
            }
            _ => {
                let header = match format {
                    EmbeddingFormat::Safetensors => safetensors_header(rows, dim, metadata),
                    EmbeddingFormat::Npy => npy_header(rows, dim),
                    _ => Vec::new(),
                };
                file.write_all(&header).map_err(|e| Error::io(&target, e))?;
                Sink::Bytes(file, format)
            }
        };
        Ok(Self {
            sink,
            target,
            layout,
            written: 0,
            line: Vec::new(),
        })
    }

    /// Appends rows given as a flat row-major slice, with one id per row when the layout has
    /// ids.
    pub fn write_rows(&mut self, data: &[f32], ids: &[RowId]) -> Result<()> {
        let dim = self.layout.dim;
        let n = data.len() / dim.max(1);
        let wanted_ids = if self.layout.ids.is_some() { n } else { 0 };
        if data.len() != n * dim || self.written + n > self.layout.rows || ids.len() != wanted_ids {
            return Err(Error::Invalid(format!(
                "{}: got {} values and {} ids for rows of {dim} with {} of {} rows written",
                self.target.display(),
                data.len(),
                ids.len(),
                self.written,
                self.layout.rows
            )));
        }
        let target = &self.target;
        match &mut self.sink {
            Sink::Bytes(file, EmbeddingFormat::Jsonl) => {
                for (i, row) in data.chunks(dim).enumerate() {
                    self.line.clear();
                    let row = JsonlRow {
                        index: self.written + i,
                        id: ids.get(i),
                        embedding: row,
                    };
                    serde_json::to_writer(&mut self.line, &row).expect("rows serialize");
                    self.line.push(b'\n');
                    file.write_all(&self.line)
                        .map_err(|e| Error::io(target, e))?;
                }
            }
            Sink::Bytes(file, _) => {
                let mut bytes = Vec::with_capacity(data.len() * 4);
                for v in data {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                file.write_all(&bytes).map_err(|e| Error::io(target, e))?;
            }
            Sink::Parquet(writer, schema) => {
                let batch = parquet_batch(schema, data, dim, ids)?;
                writer
                    .write(&batch)
                    .map_err(|e| Error::Invalid(format!("{}: {e}", target.display())))?;
            }
        }
        self.written += n;
        Ok(())
    }

    /// Checks that every row arrived, then renames the file into place.
    pub fn finish(self) -> Result<()> {
        if self.written != self.layout.rows {
            return Err(Error::Invalid(format!(
                "{}: {} of {} rows written",
                self.target.display(),
                self.written,
                self.layout.rows
            )));
        }
        match self.sink {
            Sink::Bytes(file, _) => file.commit(),
            Sink::Parquet(writer, _) => writer
                .into_inner()
                .map_err(|e| Error::Invalid(format!("{}: {e}", self.target.display())))?
                .commit(),
        }
    }
}

/// `[id,] embedding` with the vectors as fixed-size lists of f32.
fn parquet_schema(dim: usize, ids: Option<IdKind>) -> Arc<Schema> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let embedding = Field::new(
        "embedding",
        DataType::FixedSizeList(item, dim as i32),
        false,
    );
    let fields: Vec<Field> = match ids {
        Some(IdKind::Int) => vec![Field::new("id", DataType::Int64, false), embedding],
        Some(IdKind::Str) => vec![Field::new("id", DataType::Utf8, false), embedding],
        None => vec![embedding],
    };
    Arc::new(Schema::new(fields))
}

fn parquet_batch(
    schema: &Arc<Schema>,
    data: &[f32],
    dim: usize,
    ids: &[RowId],
) -> Result<RecordBatch> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let values = Arc::new(Float32Array::from(data.to_vec()));
    let vectors: ArrayRef = Arc::new(FixedSizeListArray::try_new(item, dim as i32, values, None)?);
    let mut columns = Vec::with_capacity(2);
    if schema.fields().len() == 2 {
        let id_column: ArrayRef = match schema.field(0).data_type() {
            DataType::Int64 => Arc::new(Int64Array::from_iter_values(ids.iter().map(
                |id| match id {
                    RowId::Int(v) => *v,
                    RowId::Str(_) => unreachable!("ids are checked to share a type"),
                },
            ))),
            _ => Arc::new(StringArray::from_iter_values(ids.iter().map(
                |id| match id {
                    RowId::Str(s) => s.as_str(),
                    RowId::Int(_) => unreachable!("ids are checked to share a type"),
                },
            ))),
        };
        columns.push(id_column);
    }
    columns.push(vectors);
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A JSONL output row; f32 values print in their shortest f32 form.
#[derive(serde::Serialize)]
struct JsonlRow<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RowId>,
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
        let layout = OutputLayout {
            rows: 2,
            dim: 3,
            ids: None,
        };
        let mut w = EmbeddingWriter::create(&path, layout, &meta).unwrap();
        w.write_rows(&[1.0, 2.0, 3.0], &[]).unwrap();
        w.write_rows(&[4.0, 5.0, 6.0], &[]).unwrap();
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
        let layout = OutputLayout {
            rows: 2,
            dim: 2,
            ids: None,
        };
        let mut w = EmbeddingWriter::create(&path, layout, &OutputMetadata::new()).unwrap();
        w.write_rows(&[1.0, 2.0], &[]).unwrap();
        assert!(w.finish().is_err());
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
