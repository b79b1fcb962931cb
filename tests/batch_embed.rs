//! Batch embedding at scale: Parquet and Arrow in, Parquet out, ids carried through, shards,
//! checkpoints that survive SIGKILL and resume to the exact output, and clear errors for bad
//! columnar input with nothing left behind.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use common::{files_in, fixture_path, kroute_bin, run};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

fn tiny_model() -> String {
    fixture_path("tiny/bert").to_str().unwrap().to_string()
}

/// The first `n` bundled RouterBench queries.
fn queries(n: usize) -> Vec<String> {
    use std::io::BufRead;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/routerbench-3k.jsonl.gz");
    let reader = flate2::read::GzDecoder::new(std::fs::File::open(data).unwrap());
    std::io::BufReader::new(reader)
        .lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            v["query"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A record batch of `id` (i64, 1000 + row), `text` (nullable) and an unrelated `score`.
fn batch(texts: &[Option<&str>], first_id: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("score", DataType::Float64, false),
        Field::new("text", DataType::Utf8, true),
    ]));
    let n = texts.len() as i64;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(first_id..first_id + n)),
        Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
        Arc::new(StringArray::from(texts.to_vec())),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Writes `texts` as a Parquet file with small row groups (so reading crosses them).
fn write_parquet(path: &Path, texts: &[Option<&str>], first_id: i64) {
    let batch = batch(texts, first_id);
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(7))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn write_jsonl(path: &Path, texts: &[String]) {
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": 1000 + i, "text": t}).to_string())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// A Parquet output: ids, vectors and key-value metadata.
#[derive(Debug, PartialEq)]
struct Output {
    ids: Vec<i64>,
    vectors: Vec<Vec<f32>>,
    metadata: Vec<(String, String)>,
}

fn read_output(path: &Path) -> Output {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    let metadata = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|kv| (kv.key, kv.value.unwrap_or_default()))
        .collect();
    let (mut ids, mut vectors) = (Vec::new(), Vec::new());
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        if let Some(id) = batch.column_by_name("id") {
            ids.extend(id.as_primitive::<Int64Type>().values().iter().copied());
        }
        let list = batch
            .column_by_name("embedding")
            .unwrap()
            .as_fixed_size_list();
        for row in 0..list.len() {
            vectors.push(
                list.value(row)
                    .as_primitive::<Float32Type>()
                    .values()
                    .to_vec(),
            );
        }
    }
    Output {
        ids,
        vectors,
        metadata,
    }
}

fn read_npy(path: &Path, dim: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header..]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect::<Vec<_>>()
        .chunks(dim)
        .map(<[f32]>::to_vec)
        .collect()
}

fn embed(input: &Path, output: &Path, extra: &[&str]) -> serde_json::Value {
    let summary = output.with_extension("summary.json");
    let model = tiny_model();
    let mut args = vec![
        "embed",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--model",
        &model,
        "--quiet",
        "--summary",
        summary.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, stderr) = run(&args);
    assert!(ok, "kroute {args:?}: {stderr}");
    serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap()
}

#[test]
fn parquet_in_and_out_keeps_ids_order_and_the_model_identity() {
    let dir = tempfile::tempdir().unwrap();
    let texts = queries(40);
    let refs: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    let input = dir.path().join("in.parquet");
    write_parquet(&input, &refs, 1000);
    let output = dir.path().join("out.parquet");
    let summary = embed(&input, &output, &["--field", "text", "--id-field", "id"]);
    assert_eq!(summary["n"], 40);
    let Output {
        ids,
        vectors,
        metadata,
    } = read_output(&output);
    assert_eq!(ids, (1000..1040).collect::<Vec<i64>>());
    assert_eq!(vectors.len(), 40);
    assert!(vectors.iter().all(|v| v.len() == 32));
    let meta: std::collections::BTreeMap<_, _> = metadata.into_iter().collect();
    assert_eq!(meta["architecture"], "bert");
    assert_eq!(meta["dim"], "32");
    assert_eq!(meta["pooling"], "cls");
    assert_eq!(meta["model"], tiny_model());
    assert_eq!(meta["weights_sha256"].len(), 64);

    // The same texts from JSONL give the same vectors, row for row, in every output format.
    let jsonl = dir.path().join("in.jsonl");
    write_jsonl(&jsonl, &texts);
    let npy = dir.path().join("out.npy");
    embed(&jsonl, &npy, &["--field", "text"]);
    assert_eq!(read_npy(&npy, 32), vectors);
    let with_ids = dir.path().join("ids.jsonl");
    embed(&jsonl, &with_ids, &["--field", "text", "--id-field", "id"]);
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&with_ids)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["id"], 1000);
    assert_eq!(first["index"], 0);

    // A directory of Parquet files reads in name order; Arrow IPC files and streams too.
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    write_parquet(&parts.join("b.parquet"), &refs[25..], 1025);
    write_parquet(&parts.join("a.parquet"), &refs[..25], 1000);
    let from_dir = dir.path().join("dir.parquet");
    embed(&parts, &from_dir, &["--field", "text", "--id-field", "id"]);
    let from_dir = read_output(&from_dir);
    assert_eq!((&from_dir.ids, &from_dir.vectors), (&ids, &vectors));
    for stream in [false, true] {
        let arrow = dir.path().join(format!("in-{stream}.arrow"));
        let file = std::fs::File::create(&arrow).unwrap();
        let b = batch(&refs, 1000);
        if stream {
            let mut w = arrow_ipc::writer::StreamWriter::try_new(file, &b.schema()).unwrap();
            w.write(&b.slice(0, 17)).unwrap();
            w.write(&b.slice(17, 23)).unwrap();
            w.finish().unwrap();
        } else {
            let mut w = arrow_ipc::writer::FileWriter::try_new(file, &b.schema()).unwrap();
            w.write(&b).unwrap();
            w.finish().unwrap();
        }
        let out = dir.path().join(format!("arrow-{stream}.parquet"));
        embed(&arrow, &out, &["--field", "text", "--id-field", "id"]);
        let from_arrow = read_output(&out);
        assert_eq!((&from_arrow.ids, &from_arrow.vectors), (&ids, &vectors));
    }
}

#[test]
fn shards_cover_the_input_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let texts = queries(50);
    let refs: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    let input = dir.path().join("in.parquet");
    write_parquet(&input, &refs, 0);
    let whole = dir.path().join("whole.parquet");
    embed(&input, &whole, &["--field", "text", "--id-field", "id"]);
    let whole = read_output(&whole);

    let (mut ids, mut vectors) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let part = dir.path().join(format!("part-{i}.parquet"));
        let shard = format!("{i}/3");
        let summary = embed(
            &input,
            &part,
            &["--field", "text", "--id-field", "id", "--shard", &shard],
        );
        let part = read_output(&part);
        assert_eq!(summary["n"], part.ids.len());
        assert!(part.metadata.contains(&("shard".into(), shard)));
        ids.extend(part.ids);
        vectors.extend(part.vectors);
    }
    assert_eq!(ids, whole.ids);
    assert_eq!(vectors, whole.vectors);

    let (ok, stderr) = run(&[
        "embed",
        input.to_str().unwrap(),
        "-o",
        "x.npy",
        "--shard",
        "3/3",
    ]);
    assert!(!ok && stderr.contains("--shard `3/3`"), "{stderr}");
}

/// `kroute embed` refused with every needle in its message and nothing left in `dir` but
/// `keep`.
fn assert_refused(dir: &Path, args: &[&str], needles: &[&str], keep: &[&str]) {
    let (ok, stderr) = run(args);
    assert!(!ok, "{args:?} accepted");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    let mut keep: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    keep.sort();
    assert_eq!(files_in(dir), keep, "left behind");
}

#[test]
fn bad_columnar_input_is_named_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    write_parquet(&input, &[Some("fine"), None, Some("also fine")], 1);
    let input_s = input.to_str().unwrap();
    let out = dir.path().join("out.parquet");
    let out_s = out.to_str().unwrap();
    let model = tiny_model();
    let base = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["embed", input_s, "-o", out_s, "--model", &model]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let call = |extra: &[&'static str], needles: &[&str]| {
        let args = base(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_refused(dir.path(), &args, needles, &["in.parquet"]);
    };
    call(
        &["--field", "body"],
        &[
            "in.parquet",
            "column `body`",
            "no such column",
            "columns: id, score, text",
        ],
    );
    call(
        &["--field", "score"],
        &["column `score`", "expected a string column, found Float64"],
    );
    call(
        &["--field", "text"],
        &["in.parquet: row 2: column `text`: null", "--skip-empty"],
    );
    call(
        &["--field", "text", "--id-field", "score"],
        &["column `score`", "integer or string id"],
    );
    // Ids need an output that holds them.
    let npy = dir.path().join("out.npy");
    let (ok, stderr) = run(&[
        "embed",
        input_s,
        "-o",
        npy.to_str().unwrap(),
        "--field",
        "text",
        "--id-field",
        "id",
        "--skip-empty",
        "--model",
        &model,
    ]);
    assert!(
        !ok && stderr.contains(".npy and .safetensors hold vectors only"),
        "{stderr}"
    );

    // Nulls skipped and counted with --skip-empty.
    let summary = embed(
        &input,
        &out,
        &["--field", "text", "--skip-empty", "--id-field", "id"],
    );
    assert_eq!(
        (summary["n"].as_u64(), summary["skipped_empty"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(read_output(&out).ids, vec![1, 3]);
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(out.with_extension("summary.json")).unwrap();

    // Empty and corrupt files name the file.
    let empty = dir.path().join("empty.parquet");
    write_parquet(&empty, &[], 0);
    let corrupt = dir.path().join("corrupt.parquet");
    std::fs::write(&corrupt, b"PAR1 this is not parquet at all").unwrap();
    for (path, needle) in [
        (&empty, "no texts"),
        (&corrupt, "not a readable Parquet file"),
    ] {
        let (ok, stderr) = run(&[
            "embed",
            path.to_str().unwrap(),
            "-o",
            out_s,
            "--field",
            "text",
            "--model",
            &model,
        ]);
        assert!(!ok && stderr.contains(needle), "{stderr}");
        assert!(
            stderr.contains(path.file_name().unwrap().to_str().unwrap()),
            "{stderr}"
        );
    }
    assert!(!out.exists());
    assert!(files_in(dir.path())
        .iter()
        .all(|f| !f.contains("partial") && !f.contains("tmp")));
}

/// A long run killed with SIGKILL leaves no output, only its checkpoint; `--resume` embeds only
/// the missing chunks and writes exactly the bytes an uninterrupted run writes.
#[test]
fn sigkill_then_resume_gives_the_uninterrupted_output() {
    let dir = tempfile::tempdir().unwrap();
    let texts = queries(600);
    let refs: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    let input = dir.path().join("in.parquet");
    write_parquet(&input, &refs, 0);
    let args = |output: &Path| -> Vec<String> {
        // The default model (MiniLM): slow enough on CPU to be killed mid-run.
        [
            "embed",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--field",
            "text",
            "--id-field",
            "id",
            "--chunk-rows",
            "25",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let reference = dir.path().join("reference.parquet");
    let (ok, stderr) = run(&args(&reference)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(ok, "{stderr}");

    let output = dir.path().join("out.parquet");
    let partial: PathBuf = dir.path().join("out.parquet.partial");
    let mut child = kroute_bin()
        .args(args(&output))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let chunks = std::fs::read_dir(&partial)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("chunk-")
                })
                .count()
            })
            .unwrap_or(0);
        if chunks >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no chunks written");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!output.exists(), "a killed run left an output");
    assert!(partial.join("manifest.json").exists());

    // Without --resume the checkpoint is not silently thrown away.
    let (ok, stderr) = run(&args(&output).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && stderr.contains("--resume"), "{stderr}");
    // A resume whose options changed is refused, naming the option.
    let mut changed = args(&output);
    changed.extend(["--skip-empty".to_string(), "--resume".to_string()]);
    let (ok, stderr) = run(&changed.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !ok && stderr.contains("--skip-empty was false, now true"),
        "{stderr}"
    );
    // …and so is one whose model changed, naming the field.
    let mut other_model = args(&output);
    other_model.extend(["--resume", "--prompt", "query: "].map(String::from));
    let (ok, stderr) = run(&other_model.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !ok && stderr.contains("embedding model changed in `prompt`"),
        "{stderr}"
    );

    let mut resume = args(&output);
    let summary = dir.path().join("resume.json");
    resume.extend([
        "--resume".to_string(),
        "--summary".to_string(),
        summary.to_str().unwrap().to_string(),
    ]);
    let (ok, stderr) = run(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let resumed = summary["resumed_rows"].as_u64().unwrap();
    assert!(
        resumed >= 75 && resumed.is_multiple_of(25) && resumed < 600,
        "{summary}"
    );
    assert_eq!(
        std::fs::read(&output).unwrap(),
        std::fs::read(&reference).unwrap(),
        "the resumed output differs from the uninterrupted one"
    );
    assert!(!partial.exists(), "the checkpoint outlived the output");

    // A resume of a run whose input has since changed is refused, naming the file.
    let mut child = kroute_bin()
        .args(args(&output.with_file_name("again.parquet")))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let again = dir.path().join("again.parquet.partial");
    while !again.join("manifest.json").exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    write_parquet(&input, &refs[..599], 0);
    let mut resume = args(&output.with_file_name("again.parquet"));
    resume.push("--resume".into());
    let (ok, stderr) = run(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !ok && stderr.contains("the input changed") && stderr.contains("in.parquet"),
        "{stderr}"
    );
}

/// Every output format resumes to the uninterrupted bytes (the library's job, interrupted
/// in-process after two chunks as Ctrl-C would).
#[test]
fn every_output_format_resumes_to_the_same_bytes() {
    use kroute::io::TextReaderOptions;
    use kroute::job::EmbedJob;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let texts = queries(120);
    let input = dir.path().join("in.jsonl");
    write_jsonl(&input, &texts);
    let files = kroute::model::resolve(&tiny_model()).unwrap();
    let embedder = kroute::Embedder::from_files(
        files,
        &candle_core::Device::Cpu,
        None,
        kroute::EmbedderOptions {
            chunk_size: 16,
            ..Default::default()
        },
    )
    .unwrap();
    for extension in ["npy", "safetensors", "jsonl", "parquet"] {
        let job = |output: &Path, resume: bool| EmbedJob {
            input: input.clone(),
            output: output.to_path_buf(),
            reader: TextReaderOptions {
                field: "text".into(),
                id_field: (extension == "jsonl" || extension == "parquet").then(|| "id".into()),
                skip_empty: false,
            },
            shard: None,
            resume,
        };
        let run = |job: &EmbedJob, stop_after: Option<usize>| {
            let scan = job.validate().unwrap();
            let interrupted = AtomicBool::new(false);
            let mut done = 0;
            job.run(
                &embedder,
                &scan,
                Default::default(),
                |_, _| {},
                |rows| {
                    done += rows;
                    if stop_after.is_some_and(|n| done >= n) {
                        interrupted.store(true, Ordering::SeqCst);
                    }
                },
                &interrupted,
            )
        };
        let reference = dir.path().join(format!("reference.{extension}"));
        run(&job(&reference, false), None).unwrap();

        let output = dir.path().join(format!("out.{extension}"));
        let err = run(&job(&output, false), Some(40)).unwrap_err();
        assert!(matches!(err, kroute::Error::Interrupted), "{err}");
        assert!(!output.exists());
        let summary = run(&job(&output, true), None).unwrap();
        assert!(
            summary.resumed_rows >= 32 && summary.resumed_rows < 120,
            "{extension}"
        );
        assert_eq!(
            std::fs::read(&output).unwrap(),
            std::fs::read(&reference).unwrap(),
            "{extension}"
        );
    }
}

#[test]
fn parquet_files_written_by_pyarrow_are_read_whole() {
    // Written by scripts/make_pyarrow_fixtures.py with each of pyarrow's page and footer
    // options; kroute walks their footers and page headers before decoding them.
    let dir = fixture_path("pyarrow");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 7, "{files:?}");
    for path in files {
        let options = kroute::io::TextReaderOptions {
            field: "query".into(),
            id_field: Some("id".into()),
            ..Default::default()
        };
        let texts: Vec<String> = kroute::io::TextReader::open(&path, options)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .map(|record| record.unwrap().text)
            .collect();
        let expected: Vec<String> = (0..40).map(|i| format!("question {i} é😀")).collect();
        assert_eq!(texts, expected, "{}", path.display());
    }
}
