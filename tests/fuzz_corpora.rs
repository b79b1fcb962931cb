//! Replays the fuzz targets' committed seeds (`fuzz/seeds/TARGET/`) and every input that once
//! made a target fail (`fuzz/regressions/TARGET/`) through the functions the fuzzer calls, so
//! that `cargo test` checks them without a fuzzer (docs/RELIABILITY.md).
//!
//! The seeds are written by `cargo test --release --test fuzz_corpora -- --ignored
//! write_seeds` from the test fixtures and the bundled data.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

fn fuzz_dir() -> PathBuf {
    targets::repo_root().join("fuzz")
}

/// Runs `target` on every seed and regression input; each must return, not panic.
fn replay(name: &str, target: fn(&[u8])) {
    let mut inputs = 0;
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(name)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} failed on {}", path.display());
            inputs += 1;
        }
    }
    assert!(
        inputs > 0,
        "no seeds for {name} in {}",
        fuzz_dir().display()
    );
}

#[test]
fn records_line() {
    replay("records_line", targets::records_line);
}

#[test]
fn records_file() {
    replay("records_file", targets::records_file);
}

#[test]
fn columnar() {
    replay("columnar", targets::columnar);
}

#[test]
fn router_dir() {
    replay("router_dir", targets::router_dir);
}

#[test]
fn serve_config() {
    replay("serve_config", targets::serve_config);
}

#[test]
fn model_config() {
    replay("model_config", targets::model_config);
}

#[test]
fn tokenizer() {
    replay("tokenizer", targets::tokenizer);
}

#[test]
fn http_body() {
    replay("http_body", targets::http_body);
}

#[test]
fn wal() {
    replay("wal", targets::wal);
}

/// Writes `fuzz/seeds/`: small, valid examples of each input, from which the fuzzer mutates.
#[test]
#[ignore = "writes the committed seed corpora; run by hand when an input format changes"]
fn write_seeds() {
    let seeds = fuzz_dir().join("seeds");
    let _ = std::fs::remove_dir_all(&seeds);
    let bundled = bundled_lines(8);
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let prefixed = |kind: u8, bytes: &[u8]| [&[kind][..], bytes].concat();

    for (i, line) in bundled.iter().take(4).enumerate() {
        write("records_line", &format!("record-{i}"), line.as_bytes());
    }
    let jsonl = bundled.join("\n") + "\n";
    write("records_file", "jsonl", &prefixed(0, jsonl.as_bytes()));
    write(
        "records_file",
        "jsonl-gz",
        &prefixed(1, &gzip(jsonl.as_bytes())),
    );
    let outcomes = "{\"query\": \"What is 2 + 2?\", \"records\": {\"gpt-4-1106-preview\": 1, \
                    \"mistral-7b-chat\": 0.5}, \"usages\": {\"gpt-4-1106-preview\": {\"cost\": 0.01}}}\n\
                    {\"query\": \"Name a prime.\", \"records\": {\"claude-v2\": true}}\n";
    write(
        "records_file",
        "outcomes",
        &prefixed(2, outcomes.as_bytes()),
    );

    let texts = ["What is 2 + 2?", "", "Écrivez un poème", "Name a prime."];
    write(
        "columnar",
        "parquet",
        &prefixed(0b0100, &parquet("query", &texts)),
    );
    write(
        "columnar",
        "parquet-text",
        &prefixed(0b1010, &parquet("text", &texts)),
    );
    write(
        "columnar",
        "arrow",
        &prefixed(0b0101, &arrow_ipc("query", &texts)),
    );
    write(
        "columnar",
        "arrow-text",
        &prefixed(0b0011, &arrow_ipc("text", &texts)),
    );

    let (_dir, router) = saved_tiny_router();
    let json = std::fs::read(router.join("router.json")).unwrap();
    let centroids = std::fs::read(router.join("centroids.safetensors")).unwrap();
    let framed = [&(json.len() as u32).to_le_bytes()[..], &json, &centroids].concat();
    write("router_dir", "tiny-router", &framed);

    write("serve_config", "readme", README_CONFIG.as_bytes());
    write(
        "serve_config",
        "minimal",
        b"[upstream.default]\nbase_url = \"http://127.0.0.1:8000/v1\"\n",
    );

    let tiny = targets::repo_root().join("tests/fixtures/tiny");
    let files = [
        "config.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "config_sentence_transformers.json",
        "modules.json",
    ];
    for (kind, file) in files.iter().enumerate() {
        if let Ok(bytes) = std::fs::read(tiny.join("bert").join(file)) {
            write(
                "model_config",
                &file.replace('/', "-"),
                &prefixed(kind as u8, &bytes),
            );
        }
    }
    for architecture in ["mpnet", "qwen3", "xlm-roberta"] {
        let bytes = std::fs::read(tiny.join(architecture).join("config.json")).unwrap();
        write(
            "model_config",
            &format!("config-{architecture}"),
            &prefixed(0, &bytes),
        );
    }

    write("tokenizer", "ascii", b"What is the capital of France?");
    write(
        "tokenizer",
        "lines",
        "Écrivez un poème\n数学の問題\n\u{1F600} emoji\n\t\r\u{7}".as_bytes(),
    );
    write("tokenizer", "long", "word ".repeat(600).as_bytes());

    let bodies: [(u8, &str, &str); 8] = [
        (
            0,
            "chat",
            r#"{"model": "kroute", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}"#,
        ),
        (
            0,
            "chat-stream",
            r#"{"model": "kroute:alpha=0.3", "stream": true, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Name a prime."}]}]}"#,
        ),
        (
            1,
            "embeddings",
            r#"{"model": "kroute", "input": ["a", "b"], "encoding_format": "base64"}"#,
        ),
        (
            2,
            "route",
            r#"{"input": "Prove there are infinitely many primes", "explain": true}"#,
        ),
        (
            2,
            "route-messages",
            r#"{"messages": [{"role": "user", "content": "Hi"}], "model": "kroute:alpha=0.9"}"#,
        ),
        (
            3,
            "feedback",
            r#"{"decision_id": "d-0000000000000001", "score": 0.5, "cost": 0.01}"#,
        ),
        (
            3,
            "feedback-text",
            r#"{"input": "What is 2 + 2?", "model": "gpt-4-1106-preview", "verdict": "good"}"#,
        ),
        (4, "reload", r#"{"discard_learned": false}"#),
    ];
    for (kind, name, body) in bodies {
        write("http_body", name, &prefixed(kind, body.as_bytes()));
    }

    let state = tempfile::tempdir().unwrap();
    let mut writer = kroute::state::wal::WalWriter::open(state.path(), 1).unwrap();
    let record = r#"{"at_ms":1,"clusters":"CLUSTERS","votes":[[0,0.75],[1,0.25]],"model":"gpt-4-1106-preview","score":1.0,"cost":0.01,"decision_id":"d-1"}"#;
    for _ in 0..3 {
        writer.append(record.as_bytes()).unwrap();
    }
    writer.sync().unwrap();
    drop(writer);
    let segment = std::fs::read_dir(state.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    write(
        "wal",
        "segment",
        &prefixed(0, &std::fs::read(segment).unwrap()),
    );
    let payloads = format!(
        "{record}\n{}",
        r#"{"at_ms":2,"clusters":"CLUSTERS","votes":[[2,1.0]],"model":"claude-v2","score":0.0,"idempotency_key":"k-1"}"#
    );
    write("wal", "payloads", &prefixed(1, payloads.as_bytes()));
}

const README_CONFIG: &str = r#"[routing]
alpha = 0.6

[upstream.default]
base_url = "https://llm-gateway.example/v1"
api_key_env = "GATEWAY_API_KEY"

[upstream."gpt-4-1106-preview"]
base_url = "https://other.example/v1"
api_key_env = "OTHER_API_KEY"
model = "gpt-4-turbo"
timeout_s = 60
price = { input_per_mtok = 10.0, output_per_mtok = 30.0 }
headers = { "OpenAI-Organization" = "org-123" }
"#;

fn bundled_lines(n: usize) -> Vec<String> {
    use std::io::BufRead;
    let path = targets::repo_root().join("data/routerbench-3k.jsonl.gz");
    let reader = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    std::io::BufReader::new(reader)
        .lines()
        .take(n)
        .map(|line| {
            // The original prompt is long and adds nothing a fuzzer needs.
            let mut record: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            record.as_object_mut().unwrap().remove("full_prompt");
            record.to_string()
        })
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn text_batch(field: &str, texts: &[&str]) -> arrow_array::RecordBatch {
    use arrow_array::{ArrayRef, Int64Array, StringArray};
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..texts.len() as i64));
    let texts: ArrayRef = Arc::new(StringArray::from(texts.to_vec()));
    arrow_array::RecordBatch::try_from_iter([("id", ids), (field, texts)]).unwrap()
}

fn parquet(field: &str, texts: &[&str]) -> Vec<u8> {
    let batch = text_batch(field, texts);
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

fn arrow_ipc(field: &str, texts: &[&str]) -> Vec<u8> {
    let batch = text_batch(field, texts);
    let mut out = Vec::new();
    let mut writer = arrow_ipc::writer::FileWriter::try_new(&mut out, &batch.schema()).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    drop(writer);
    out
}

/// The router `targets::http_body` serves, saved (its directory is a router seed as is).
fn saved_tiny_router() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let router = dir.path().join("router");
    targets::save_tiny_router(&router);
    (dir, router)
}
