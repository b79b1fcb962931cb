//! Columnar inputs: Parquet files (one, or a directory of them in name order) and Arrow IPC
//! files or streams, read record batch by record batch with only the text (and id) columns
//! decoded, so memory stays flat for any number of rows.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Schema};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::ChunkReader;

use super::rows::{Location, RawRow, RawRows, RowId, TextFormat, TextReaderOptions};
use crate::error::{Error, InputError, Result};

/// Rows decoded at a time.
const BATCH_ROWS: usize = 4096;

type Batches = Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>;

/// Runs a third-party decoder on untrusted bytes, turning a panic into an error: arrow-ipc
/// slices buffers at lengths read from the file before it checks them (a corrupted Arrow file
/// panics "the offset of the new Buffer cannot exceed the existing length"). The panic's
/// message is kept for the error and not printed.
fn guarded<T>(
    decode: impl FnOnce() -> std::result::Result<T, ArrowError>,
) -> std::result::Result<T, ArrowError> {
    thread_local! {
        static DECODING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !DECODING.with(|d| d.get()) {
                previous(info);
            }
        }));
    });
    DECODING.with(|d| d.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode));
    DECODING.with(|d| d.set(false));
    outcome.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the decoder failed");
        Err(ArrowError::ParseError(format!(
            "malformed data ({message})"
        )))
    })
}

/// Record batches decoded under [`guarded`].
struct Guarded(Batches);

impl Iterator for Guarded {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        guarded(|| Ok(self.0.next())).unwrap_or_else(|e| Some(Err(e)))
    }
}

/// The rows of a Parquet input (a file or a directory of `.parquet` files) or an Arrow IPC file.
pub(crate) fn open(
    path: &Path,
    format: TextFormat,
    options: &TextReaderOptions,
) -> Result<RawRows> {
    let files = match format {
        TextFormat::Parquet if path.is_dir() => parquet_files(path)?,
        _ => vec![path.to_path_buf()],
    };
    let options = options.clone();
    // Each file is opened when the previous one is exhausted.
    Ok(Box::new(files.into_iter().flat_map(
        move |file| match FileRows::open(&file, format, &options) {
            Ok(rows) => Box::new(rows) as RawRows,
            Err(e) => Box::new(std::iter::once(Err(e))),
        },
    )))
}

/// The `.parquet` files of a directory, in name order.
pub(crate) fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(InputError::new(
            dir,
            "a directory input must hold .parquet files; it has none",
        )
        .into());
    }
    Ok(files)
}

struct FileRows {
    path: PathBuf,
    batches: Batches,
    options: TextReaderOptions,
    batch: Option<RecordBatch>,
    /// Next row of `batch`.
    next: usize,
    /// Rows of the file before `batch`.
    before: usize,
}

impl FileRows {
    fn open(path: &Path, format: TextFormat, options: &TextReaderOptions) -> Result<Self> {
        let unreadable = |kind: &str, e: &dyn std::fmt::Display| {
            Error::from(InputError::new(
                path,
                format!("not a readable {kind} file: {e}"),
            ))
        };
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let batches: Batches = match format {
            TextFormat::Parquet => {
                let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
                // Small files are read whole: the decoder's many small reads of a page header
                // are then memory reads, not system calls (a corrupted header listing a huge
                // number of fields took half a second to skip through a file handle).
                let batches = if len <= IN_MEMORY_PARQUET_BYTES {
                    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                    parquet_batches(bytes::Bytes::from(bytes), path, options)
                } else {
                    parquet_batches(file, path, options)
                };
                batches.map_err(|e| match e {
                    Error::Input(_) => e,
                    other => unreadable("Parquet", &other),
                })?
            }
            _ => arrow_ipc(path, file, options).map_err(|e| match e {
                Error::Input(e) => Error::Input(e),
                other => unreadable("Arrow IPC", &other),
            })?,
        };
        Ok(Self {
            path: path.to_path_buf(),
            batches: Box::new(Guarded(batches)),
            options: options.clone(),
            batch: None,
            next: 0,
            before: 0,
        })
    }

    fn row(&self, batch: &RecordBatch, i: usize) -> Result<RawRow> {
        let mut row = RawRow {
            path: self.path.clone(),
            at: Location::Row(self.before + i + 1),
            text: None,
            id: None,
            from_field: true,
        };
        let text = batch
            .column_by_name(&self.options.field)
            .expect("projected column");
        row.text = string_at(text.as_ref(), i).map(str::to_owned);
        if let Some(id_field) = &self.options.id_field {
            let ids = batch.column_by_name(id_field).expect("projected column");
            row.id =
                Some(id_at(ids.as_ref(), i).ok_or_else(|| row.error("null id", Some(id_field)))?);
        }
        Ok(row)
    }
}

impl Iterator for FileRows {
    type Item = Result<RawRow>;

    fn next(&mut self) -> Option<Result<RawRow>> {
        loop {
            if let Some(batch) = &self.batch {
                if self.next < batch.num_rows() {
                    let row = self.row(batch, self.next);
                    self.next += 1;
                    return Some(row);
                }
                self.before += batch.num_rows();
            }
            match self.batches.next()? {
                Ok(batch) => {
                    self.batch = Some(batch);
                    self.next = 0;
                }
                Err(e) => {
                    self.batch = None;
                    return Some(Err(InputError::new(
                        &self.path,
                        format!("unreadable after row {}: {e}", self.before),
                    )
                    .into()));
                }
            }
        }
    }
}

/// Parquet files up to this size are decoded from memory.
const IN_MEMORY_PARQUET_BYTES: u64 = 64 << 20;

/// The record batches of a Parquet input, projected to the wanted columns.
fn parquet_batches<R: ChunkReader + 'static>(
    reader: R,
    path: &Path,
    options: &TextReaderOptions,
) -> Result<Batches> {
    check_parquet_footer(path, &reader)?;
    let invalid = |e: ArrowError| Error::Invalid(e.to_string());
    let metadata = guarded(|| {
        ArrowReaderMetadata::load(&reader, ArrowReaderOptions::default()).map_err(ArrowError::from)
    })
    .map_err(invalid)?;
    let indices = check_columns(path, metadata.schema(), options)?;
    let mask = ProjectionMask::roots(metadata.parquet_schema(), indices);
    check_parquet_pages(path, &reader, metadata.metadata(), &mask)?;
    Ok(Box::new(
        ParquetRecordBatchReaderBuilder::new_with_metadata(reader, metadata)
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| invalid(ArrowError::from(e)))?,
    ))
}

/// Walks the page headers of every column chunk the projection reads with
/// [`super::thrift::page_header`], for the reason the footer is walked
/// ([`check_parquet_footer`]). A chunk whose range lies outside the file is left to the
/// decoder, which says so.
fn check_parquet_pages<R: ChunkReader>(
    path: &Path,
    reader: &R,
    metadata: &ParquetMetaData,
    mask: &ProjectionMask,
) -> Result<()> {
    /// Bytes read for a page header at first; more when it is longer.
    const HEADER_READ: u64 = 16 << 10;
    let file_len = reader.len();
    for (group, row_group) in metadata.row_groups().iter().enumerate() {
        for (leaf, column) in row_group.columns().iter().enumerate() {
            if !mask.leaf_included(leaf) {
                continue;
            }
            let start = column
                .dictionary_page_offset()
                .unwrap_or(column.data_page_offset());
            let (Ok(start), Ok(len)) = (
                u64::try_from(start),
                u64::try_from(column.compressed_size()),
            ) else {
                continue;
            };
            let end = match start.checked_add(len) {
                Some(end) if end <= file_len => end,
                _ => continue,
            };
            let corrupted = |at: u64, problem: String| -> Error {
                InputError::new(
                    path,
                    format!(
                        "corrupted Parquet page header (row group {group}, column {}, byte \
                         {at}): {problem}",
                        column.column_path()
                    ),
                )
                .into()
            };
            let mut at = start;
            while at < end {
                let mut want = HEADER_READ.min(end - at);
                let (header_len, page_len) = loop {
                    let bytes = reader
                        .get_bytes(at, want as usize)
                        .map_err(|e| corrupted(at, e.to_string()))?;
                    match super::thrift::page_header(&bytes) {
                        Ok(header) => break header,
                        // It may only be longer than what was read.
                        Err(_) if want < end - at => want = (want * 4).min(end - at),
                        Err(problem) => return Err(corrupted(at, problem)),
                    }
                };
                at = at
                    .saturating_add(header_len as u64)
                    .saturating_add(page_len);
            }
        }
    }
    Ok(())
}

/// An Arrow IPC file (magic `ARROW1`) or stream, projected to the wanted columns.
fn arrow_ipc(path: &Path, mut file: File, options: &TextReaderOptions) -> Result<Batches> {
    let mut magic = [0u8; 6];
    let is_file = file.read_exact(&mut magic).is_ok() && &magic == b"ARROW1";
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    let arrow = |e: ArrowError| Error::Invalid(e.to_string());
    if is_file {
        check_ipc_blocks(path, &mut file)?;
        let schema = guarded(|| arrow_ipc::reader::FileReader::try_new(&mut file, None))
            .map_err(arrow)?
            .schema();
        let indices = check_columns(path, &schema, options)?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(path, e))?;
        Ok(Box::new(
            guarded(|| arrow_ipc::reader::FileReader::try_new(file, Some(indices)))
                .map_err(arrow)?,
        ))
    } else {
        let schema =
            guarded(|| arrow_ipc::reader::StreamReader::try_new(BufReader::new(&mut file), None))
                .map_err(arrow)?
                .schema();
        let indices = check_columns(path, &schema, options)?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(path, e))?;
        Ok(Box::new(
            guarded(|| {
                arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), Some(indices))
            })
            .map_err(arrow)?,
        ))
    }
}

/// Checks a plain Parquet footer's Thrift bytes with [`super::thrift::check_footer`] before
/// the parquet crate decodes them (its Thrift skipper walks a declared list of booleans one by
/// one, at no byte each). Encrypted footers (magic `PARE`) and files too short to
/// have a footer are left to the crate, which names what is wrong with them.
fn check_parquet_footer<R: ChunkReader>(path: &Path, reader: &R) -> Result<()> {
    let file_len = reader.len();
    let trailer = match file_len.checked_sub(8).map(|at| reader.get_bytes(at, 8)) {
        Some(Ok(trailer)) if &trailer[4..] == b"PAR1" => trailer,
        _ => return Ok(()),
    };
    let footer_len = u64::from(u32::from_le_bytes(trailer[..4].try_into().unwrap()));
    let corrupted = |problem: String| -> Error {
        InputError::new(path, format!("corrupted Parquet footer: {problem}")).into()
    };
    if footer_len + 8 > file_len {
        return Err(InputError::new(
            path,
            format!("Parquet footer claims {footer_len} bytes, the file has {file_len}"),
        )
        .into());
    }
    let footer = reader
        .get_bytes(file_len - 8 - footer_len, footer_len as usize)
        .map_err(|e| corrupted(e.to_string()))?;
    super::thrift::check_footer(&footer).map_err(corrupted)
}

/// Checks that every block an Arrow IPC file's footer lists lies inside the file: arrow-ipc
/// allocates (and zeroes) a block's claimed length before it reads it, so a corrupted footer
/// claiming gigabytes costs seconds and memory before the short read fails.
fn check_ipc_blocks(path: &Path, file: &mut File) -> Result<()> {
    let invalid = |message: String| -> Error { InputError::new(path, message).into() };
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut trailer = [0u8; 10];
    file.seek(SeekFrom::End(-10))
        .and_then(|_| file.read_exact(&mut trailer))
        .map_err(|_| invalid("truncated Arrow file (no footer)".into()))?;
    let footer_len = arrow_ipc::reader::read_footer_length(trailer)
        .map_err(|e| invalid(format!("bad Arrow footer: {e}")))?;
    if footer_len as u64 + 10 > file_len {
        return Err(invalid(format!(
            "Arrow footer claims {footer_len} bytes, the file has {file_len}"
        )));
    }
    let mut footer = vec![0u8; footer_len];
    file.seek(SeekFrom::End(-10 - footer_len as i64))
        .and_then(|_| file.read_exact(&mut footer))
        .map_err(|e| Error::io(path, e))?;
    let footer = arrow_ipc::root_as_footer(&footer)
        .map_err(|e| invalid(format!("bad Arrow footer: {e}")))?;
    let blocks = footer.recordBatches().into_iter().flatten();
    let dictionaries = footer.dictionaries().into_iter().flatten();
    for (i, block) in blocks.chain(dictionaries).enumerate() {
        let end = u64::try_from(block.offset())
            .ok()
            .zip(u64::try_from(block.metaDataLength()).ok())
            .zip(u64::try_from(block.bodyLength()).ok())
            .and_then(|((offset, meta), body)| offset.checked_add(meta)?.checked_add(body));
        if end.is_none_or(|end| end > file_len) {
            return Err(invalid(format!(
                "Arrow block {i} lies outside the file ({file_len} bytes)"
            )));
        }
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// Indices of the text (and id) columns, checked to exist and to hold strings (ids: integers
/// or strings); errors name the column and list the file's columns.
fn check_columns(path: &Path, schema: &Schema, options: &TextReaderOptions) -> Result<Vec<usize>> {
    let find = |name: &str| -> Result<(usize, &DataType)> {
        schema
            .fields()
            .iter()
            .position(|f| f.name() == name)
            .map(|i| (i, schema.field(i).data_type()))
            .ok_or_else(|| {
                let columns: Vec<&str> =
                    schema.fields().iter().map(|f| f.name().as_str()).collect();
                InputError::new(
                    path,
                    format!("no such column (columns: {})", columns.join(", ")),
                )
                .column(name)
                .into()
            })
    };
    let (text, text_type) = find(&options.field)?;
    if !is_string(text_type) {
        return Err(
            InputError::new(path, format!("expected a string column, found {text_type}"))
                .column(&options.field)
                .into(),
        );
    }
    let mut indices = vec![text];
    if let Some(id_field) = &options.id_field {
        let (id, id_type) = find(id_field)?;
        if !is_string(id_type) && !id_type.is_integer() {
            return Err(InputError::new(
                path,
                format!("expected an integer or string id column, found {id_type}"),
            )
            .column(id_field)
            .into());
        }
        if id != text {
            indices.push(id);
        }
    }
    indices.sort();
    Ok(indices)
}

fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// The string at row `i`, `None` when null.
fn string_at(array: &dyn Array, i: usize) -> Option<&str> {
    if array.is_null(i) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(i),
        DataType::LargeUtf8 => array.as_string::<i64>().value(i),
        DataType::Utf8View => array.as_string_view().value(i),
        other => unreachable!("checked to be a string column, found {other}"),
    })
}

/// The id at row `i`, `None` when null.
fn id_at(array: &dyn Array, i: usize) -> Option<RowId> {
    if array.is_null(i) {
        return None;
    }
    let int = |v: i64| Some(RowId::Int(v));
    match array.data_type() {
        DataType::Int8 => int(array.as_primitive::<Int8Type>().value(i).into()),
        DataType::Int16 => int(array.as_primitive::<Int16Type>().value(i).into()),
        DataType::Int32 => int(array.as_primitive::<Int32Type>().value(i).into()),
        DataType::Int64 => int(array.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => int(array.as_primitive::<UInt8Type>().value(i).into()),
        DataType::UInt16 => int(array.as_primitive::<UInt16Type>().value(i).into()),
        DataType::UInt32 => int(array.as_primitive::<UInt32Type>().value(i).into()),
        DataType::UInt64 => {
            let value = array.as_primitive::<UInt64Type>().value(i);
            // Past i64 an id can only be kept as text (and the column then mixes types, which
            // the reader refuses).
            Some(i64::try_from(value).map_or_else(|_| RowId::Str(value.to_string()), RowId::Int))
        }
        _ => string_at(array, i).map(|s| RowId::Str(s.to_owned())),
    }
}
