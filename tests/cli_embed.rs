//! `kroute embed` end to end: output formats, and every kind of bad input failing with its
//! file, line and field named, a non-zero exit and no output left behind.

mod common;

use std::path::Path;

use common::{cosine, embedder, files_in, kroute_bin, run};
use kroute::EmbedderOptions;

const TEXTS: [&str; 5] = [
    "What is the capital of France?",
    "def add(a, b): return a + b",
    "¿Dónde está la biblioteca?",
    "Route this query to the cheapest model that gets it right.",
    "ok",
];

#[test]
fn writes_every_format_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = TEXTS
        .iter()
        .map(|t| serde_json::json!({"query": t, "extra": 1}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let expected = embedder(EmbedderOptions::default())
        .embed_vecs(&TEXTS)
        .unwrap();

    let summary = dir.path().join("summary.json");
    for name in ["out.safetensors", "out.npy", "out.jsonl"] {
        let output = dir.path().join(name);
        let (ok, stderr) = run(&[
            "embed",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
            "--quiet",
        ]);
        assert!(ok, "{name}: {stderr}");
        let rows = read_rows(&output);
        assert_eq!(rows.len(), TEXTS.len(), "{name}");
        for (got, want) in rows.iter().zip(&expected) {
            assert!(cosine(got, want) > 0.999999, "{name}");
        }
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["n"], 5);
    assert_eq!(summary["device"], "cpu");
    assert_eq!(summary["dtype"], "f32");
    for key in [
        "tokens",
        "padded_tokens",
        "seconds",
        "sentences_per_s",
        "tokens_per_s",
    ] {
        assert!(summary[key].as_f64().unwrap() > 0.0, "{key}");
    }

    let bytes = std::fs::read(dir.path().join("out.safetensors")).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["model"], "sentence-transformers/all-MiniLM-L6-v2");
    assert_eq!(meta["dim"], "384");
    assert_eq!(meta["normalized"], "true");
    assert_eq!(meta["revision"].len(), 40);
}

/// Runs `kroute` with `args` and `stdin` piped in: (success, stdout, stderr).
fn run_with_stdin(args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = kroute_bin()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn dash_reads_standard_input_of_any_format() {
    let dir = tempfile::tempdir().unwrap();
    let expected = embedder(EmbedderOptions::default())
        .embed_vecs(&TEXTS)
        .unwrap();
    let jsonl: String = TEXTS
        .iter()
        .map(|t| serde_json::json!({"query": t}).to_string() + "\n")
        .collect();
    let mut gzipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gzipped, jsonl.as_bytes()).unwrap();
    let plain = TEXTS.join("\n") + "\n";
    for (name, bytes) in [
        ("jsonl", jsonl.clone().into_bytes()),
        ("jsonl.gz", gzipped.finish().unwrap()),
        ("txt", plain.into_bytes()),
    ] {
        let output = dir.path().join(format!("{name}.npy"));
        let args = ["embed", "-", "-o", output.to_str().unwrap(), "--quiet"];
        let (ok, _, stderr) = run_with_stdin(&args, &bytes);
        assert!(ok, "{name}: {stderr}");
        let rows = read_rows(&output);
        assert_eq!(rows.len(), TEXTS.len(), "{name}");
        for (got, want) in rows.iter().zip(&expected) {
            assert!(cosine(got, want) > 0.999999, "{name}");
        }
    }

    // Errors name standard input, as they name a file.
    let args = ["embed", "-", "-o", "unused.npy", "--quiet"];
    let (ok, _, stderr) = run_with_stdin(&args, b"{\"query\": \"fine\"}\n{\"query\": 3}\n");
    assert!(!ok);
    assert!(stderr.contains("<stdin>:2"), "{stderr}");
    let (ok, _, stderr) = run_with_stdin(&["embed", "-", "-o", "x.npy", "--resume"], b"");
    assert!(
        !ok && stderr.contains("--resume needs an input file"),
        "{stderr}"
    );
}

#[test]
fn dash_copies_standard_input_larger_than_one_chunk() {
    // The bundled records, gzipped as shipped: 9 MB once decompressed, many copy chunks.
    let records = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/routerbench-3k.jsonl.gz");
    let bytes = std::fs::read(&records).unwrap();
    let (ok, stdout, stderr) = run_with_stdin(&["check", "-", "--json"], &bytes);
    assert!(ok, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["path"], "<stdin>");
    assert_eq!(summary["queries"], 3178);
}

fn read_rows(path: &Path) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let floats = |data: &[u8]| -> Vec<f32> {
        data.chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    match path.extension().unwrap().to_str().unwrap() {
        "safetensors" => {
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let t = st.tensor("embeddings").unwrap();
            floats(t.data())
                .chunks(t.shape()[1])
                .map(<[f32]>::to_vec)
                .collect()
        }
        "npy" => {
            assert_eq!(&bytes[..6], b"\x93NUMPY");
            let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
            assert!(header.contains("'shape': (5, 384)"), "{header}");
            assert_eq!((10 + header_len) % 64, 0);
            floats(&bytes[10 + header_len..])
                .chunks(384)
                .map(<[f32]>::to_vec)
                .collect()
        }
        _ => String::from_utf8(bytes)
            .unwrap()
            .lines()
            .enumerate()
            .map(|(i, line)| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["index"], i);
                serde_json::from_value(v["embedding"].clone()).unwrap()
            })
            .collect(),
    }
}

/// Runs `kroute embed` on `contents` and expects failure with every `needle` in the message.
fn assert_rejected(file_name: &str, contents: &[u8], extra: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(file_name);
    std::fs::write(&input, contents).unwrap();
    let output = dir.path().join("out.npy");
    let mut args = vec![
        "embed",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, stderr) = run(&args);
    assert!(!ok, "{file_name}: expected failure");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{file_name}: {needle:?} not in {stderr:?}"
        );
    }
    assert_eq!(
        files_in(dir.path()),
        vec![file_name.to_string()],
        "output left behind"
    );
}

#[test]
fn empty_line_is_an_error_naming_the_line() {
    assert_rejected(
        "in.txt",
        b"first\n\nthird\n",
        &[],
        &["in.txt:2:", "empty", "--skip-empty"],
    );
    assert_rejected("in.txt", b"first\n   \n", &[], &["in.txt:2:"]);
}

#[test]
fn skip_empty_skips_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "first\n\n  \nfourth\n").unwrap();
    let output = dir.path().join("out.jsonl");
    let summary = dir.path().join("s.json");
    let (ok, stderr) = run(&[
        "embed",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--skip-empty",
        "--summary",
        summary.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["n"], 2);
    assert_eq!(summary["skipped_empty"], 2);
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 2);
}

#[test]
fn invalid_utf8_names_the_line() {
    assert_rejected(
        "in.txt",
        b"ok\nbad \xff\xfe byte\n",
        &[],
        &["in.txt:2:", "invalid UTF-8"],
    );
}

#[test]
fn malformed_json_names_the_line() {
    assert_rejected(
        "in.jsonl",
        b"{\"query\": \"fine\"}\n{\"query\": \"broken\"\n",
        &[],
        &["in.jsonl:2:", "malformed JSON"],
    );
    assert_rejected(
        "in.jsonl",
        b"[1, 2]\n",
        &[],
        &["in.jsonl:1:", "expected a JSON object"],
    );
}

#[test]
fn missing_or_mistyped_field_names_the_field() {
    assert_rejected(
        "in.jsonl",
        b"{\"query\": \"a\"}\n{\"question\": \"b\"}\n",
        &[],
        &["in.jsonl:2:", "field `query`", "missing"],
    );
    assert_rejected(
        "in.jsonl",
        b"{\"text\": 12}\n",
        &["--field", "text"],
        &[
            "in.jsonl:1:",
            "field `text`",
            "expected a string, found a number",
        ],
    );
    assert_rejected(
        "in.jsonl",
        b"{\"query\": \"\"}\n",
        &[],
        &["in.jsonl:1:", "field `query`", "empty"],
    );
}

#[test]
fn empty_file_is_an_error() {
    assert_rejected("in.txt", b"", &[], &["in.txt", "the file is empty"]);
    assert_rejected(
        "in.txt",
        b"\n\n",
        &["--skip-empty"],
        &["in.txt", "all 2 lines are empty"],
    );
}

#[test]
fn gzip_input_and_unknown_types() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"{\"query\": \"compressed\"}\n").unwrap();
    std::fs::write(&input, gz.finish().unwrap()).unwrap();
    let output = dir.path().join("out.jsonl");
    let (ok, stderr) = run(&[
        "embed",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 1);

    assert_rejected("in.csv", b"a,b\n", &[], &["in.csv", "unknown input type"]);
    let (ok, stderr) = run(&["embed", input.to_str().unwrap(), "-o", "out.csv"]);
    assert!(!ok && stderr.contains("unknown output type"), "{stderr}");
}

#[test]
fn missing_device_feature_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let output = dir.path().join("out.npy");
    let (ok, stderr) = run(&[
        "embed",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--device",
        "metal",
    ]);
    if cfg!(feature = "metal") {
        return;
    }
    assert!(!ok);
    assert!(
        stderr.contains("built without the `metal` feature"),
        "{stderr}"
    );
    assert!(!output.exists());
}
