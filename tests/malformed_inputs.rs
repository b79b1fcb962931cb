//! Inputs that once crashed a reader, replayed as ordinary tests: each must give an error that
//! names the file, never a panic.

use std::path::Path;

use kroute::io::{TextReader, TextReaderOptions};

fn read_all(path: &Path, options: TextReaderOptions) -> kroute::Result<usize> {
    let mut rows = 0;
    for record in TextReader::open(path, options)? {
        record?;
        rows += 1;
    }
    Ok(rows)
}

#[test]
fn corrupted_arrow_files_are_errors_naming_the_file() {
    // Buffer lengths and offsets in the record batch's metadata point past the body: arrow-ipc
    // panicked slicing them ("the offset of the new Buffer cannot exceed the existing length").
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/malformed");
    for name in ["arrow-buffer-length.arrow", "arrow-buffer-offset.arrow"] {
        let path = fixtures.join(name);
        let options = TextReaderOptions {
            id_field: Some("id".into()),
            ..TextReaderOptions::default()
        };
        let error = read_all(&path, options).expect_err(name).to_string();
        assert!(error.contains(name), "{error}");
        assert!(error.contains("malformed data"), "{error}");
    }
}

#[test]
fn arrow_footer_blocks_past_the_end_are_refused_before_reading() {
    // The footer claims a record batch of about a gigabyte in a 938-byte file: arrow-ipc
    // allocates and zeroes a block's claimed length before the read fails (found by the
    // columnar fuzz target as a 3-second timeout).
    let name = "arrow-block-length.arrow";
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/malformed")
        .join(name);
    let options = TextReaderOptions {
        field: "text".into(),
        ..TextReaderOptions::default()
    };
    let error = read_all(&path, options).expect_err(name).to_string();
    assert!(error.contains(name), "{error}");
    assert!(error.contains("lies outside the file"), "{error}");
}

#[test]
fn parquet_footers_the_decoder_would_walk_slowly_are_refused_before_decoding() {
    // Both corrupted footers hold a list of millions of booleans where the parquet crate will
    // skip a field: its Thrift skipper walks them one by one at no byte each (0.14-0.5 s of
    // CPU, over 1 s under AddressSanitizer; found by the columnar fuzz target as timeouts).
    // In the second the list is only there as the crate reads the bytes: a field it knows is
    // encoded as another type, and it reads the type it knows.
    for name in [
        "parquet-footer-bool-list.parquet",
        "parquet-footer-divergent.parquet",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/malformed")
            .join(name);
        let options = TextReaderOptions {
            field: "text".into(),
            skip_empty: true,
            ..TextReaderOptions::default()
        };
        let error = read_all(&path, options).expect_err(name).to_string();
        assert!(error.contains(name), "{error}");
        assert!(error.contains("corrupted Parquet footer"), "{error}");
    }
}

#[test]
fn parquet_page_headers_with_lists_longer_than_the_page_are_refused() {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pages.parquet");
    let texts: ArrayRef = Arc::new(StringArray::from(vec!["a question"; 50]));
    let batch = RecordBatch::try_from_iter([("text", texts)]).unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let options = || TextReaderOptions {
        field: "text".into(),
        ..TextReaderOptions::default()
    };
    assert_eq!(read_all(&path, options()).unwrap(), 50);

    // The first page header now opens with field 15, a list of 2^28 booleans: the parquet
    // crate's Thrift skipper would walk them one by one at no byte each.
    let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let column = reader.metadata().row_group(0).column(0);
    let header = column
        .dictionary_page_offset()
        .unwrap_or(column.data_page_offset()) as usize;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[header..header + 7].copy_from_slice(&[0xf9, 0xf1, 0x80, 0x80, 0x80, 0x80, 0x01]);
    std::fs::write(&path, bytes).unwrap();
    let error = read_all(&path, options()).unwrap_err().to_string();
    assert!(error.contains("pages.parquet"), "{error}");
    assert!(error.contains("corrupted Parquet page header"), "{error}");
    assert!(error.contains(&format!("byte {header}")), "{error}");
    assert!(error.contains("declares 268435456 elements"), "{error}");
}
