//! The engine on CPUs with fewer vector instructions than this one. Each run goes through
//! `benches/isa/as_cpu.sh`, which hides features from CPUID, so every run-time dispatch (kroute's
//! SIMD loops and int8 kernels, gemm's kernels) takes the path it takes on such a CPU: paths a
//! test run on an AVX-512 box never reaches otherwise.
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{cosine, fixture_path};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    texts: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

fn as_cpu(level: &str) -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/isa/as_cpu.sh");
    let mut command = Command::new("bash");
    command
        .arg(script)
        .arg(level)
        .env("CARGO_TARGET_DIR", env!("CARGO_TARGET_TMPDIR"));
    command
}

/// Whether this machine can hide CPU features: it needs a C compiler (exit 127 without one)
/// and CPUID faulting (the shim exits 3 without it). Any other failure is a bug.
fn can_hide_features() -> bool {
    let out = as_cpu("avx2").arg("true").output().unwrap();
    match out.status.code() {
        Some(0) => true,
        Some(3 | 127) => {
            eprintln!(
                "skipped: this machine cannot hide CPU features: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            false
        }
        _ => panic!(
            "benches/isa/as_cpu.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The MiniLM parity texts as a `kroute embed` input in `dir`, and sentence-transformers' vectors.
fn parity_texts(dir: &Path) -> (PathBuf, Fixture) {
    let text = std::fs::read_to_string(fixture_path("minilm_parity.json")).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    let lines: Vec<String> = fixture
        .texts
        .iter()
        .map(|t| serde_json::json!({ "query": t }).to_string())
        .collect();
    let input = dir.join("texts.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    (input, fixture)
}

/// `kroute embed input --dtype dtype` as a `level` CPU: the vectors and the JSON summary, or the
/// error message.
fn embed_as(
    level: &str,
    dtype: &str,
    input: &Path,
) -> Result<(Vec<Vec<f32>>, serde_json::Value), String> {
    let dir = input.parent().unwrap();
    let output = dir.join(format!("{level}-{dtype}.jsonl"));
    let summary = dir.join(format!("{level}-{dtype}.summary.json"));
    let out = as_cpu(level)
        .arg(env!("CARGO_BIN_EXE_kroute"))
        .args([
            "embed",
            input.to_str().unwrap(),
            "--dtype",
            dtype,
            "--quiet",
        ])
        .arg("-o")
        .arg(&output)
        .arg("--summary")
        .arg(&summary)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let vectors = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            serde_json::from_value(record["embedding"].clone()).unwrap()
        })
        .collect();
    let summary = serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
    Ok((vectors, summary))
}

/// The worst cosine between each vector and sentence-transformers'.
fn worst_cosine(vectors: &[Vec<f32>], fixture: &Fixture) -> f64 {
    assert_eq!(vectors.len(), fixture.embeddings.len());
    vectors
        .iter()
        .zip(&fixture.embeddings)
        .map(|(got, want)| cosine(got, want))
        .fold(1.0, f64::min)
}

/// `kroute embed` in f32 as a `level` CPU: every vector within cosine 0.9999 of
/// sentence-transformers'. Returns the run's summary.
fn assert_f32_matches(level: &str, input: &Path, fixture: &Fixture) -> serde_json::Value {
    let (vectors, summary) = embed_as(level, "f32", input).unwrap();
    let worst = worst_cosine(&vectors, fixture);
    assert!(
        worst >= 0.9999,
        "f32 as a {level} CPU: worst cosine {worst}"
    );
    summary
}

#[test]
fn avx2_only_cpu_embeds_in_f32_and_int8() {
    if !can_hide_features() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (input, fixture) = parity_texts(dir.path());

    let summary = assert_f32_matches("avx2", &input, &fixture);
    assert_eq!(summary["int8_kernel"], serde_json::Value::Null);

    let (vectors, summary) = embed_as("avx2", "int8", &input).unwrap();
    assert_eq!(summary["int8_kernel"], "avx2");
    let worst = worst_cosine(&vectors, &fixture);
    assert!(worst >= 0.99, "int8 as an AVX2 CPU: worst cosine {worst}");
}

#[test]
fn sse_only_cpu_embeds_in_f32_and_refuses_int8() {
    if !can_hide_features() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (input, fixture) = parity_texts(dir.path());

    assert_f32_matches("sse", &input, &fixture);

    let error = embed_as("sse", "int8", &input).unwrap_err();
    assert!(
        error.contains("--dtype int8 needs an x86-64 CPU with AVX2"),
        "{error}"
    );
}
