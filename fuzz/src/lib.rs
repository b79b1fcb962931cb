//! One function per untrusted input kroute reads, each calling the library's real entry point
//! on arbitrary bytes. `fuzz_targets/*.rs` hand them to libFuzzer; `tests/fuzz_corpora.rs`
//! (which includes this file) replays the committed seeds and every input that ever crashed,
//! so `cargo test` checks them without a fuzzer.
//!
//! An error is the expected answer to bad input; a panic, a hang or a runaway allocation is a
//! bug. Where the input is split into parts, the first byte or a length prefix says how, so
//! that the fuzzer can reach every part.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use candle_core::{Device, Tensor};
use kroute::cluster::KMeansConfig;
use kroute::embed::models::EncoderConfig;
use kroute::embed::SentenceConfig;
use kroute::engine::EngineOptions;
use kroute::io::{TextReader, TextReaderOptions};
use kroute::model::{resolve, ModelFiles, ModelSource};
use kroute::records::{MissingCost, RoutingData, SplitOptions};
use kroute::router::{EmbeddingInfo, RouteParams, Router};
use kroute::serve::{ReloadSource, ServeConfig, ServeOptions, Server};
use kroute::state::{clusters_id, wal, StateDir};
use kroute::{Embedder, EmbedderOptions};
use tower::ServiceExt;

/// The repository's root, from this crate (`fuzz/`) or from the main crate's tests.
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    match here.join("fuzz_targets").is_dir() {
        true => here.parent().unwrap().to_path_buf(),
        false => here.to_path_buf(),
    }
}

/// The tiny random-weight BERT of the test fixtures (32-d, a real WordPiece tokenizer).
fn tiny_model() -> PathBuf {
    repo_root().join("tests/fixtures/tiny/bert")
}

/// A scratch directory that lives as long as the process (inputs are written here to be read
/// back through the path-taking entry points).
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    // In memory where the system has it: inputs are written and synced at every execution.
    DIR.get_or_init(|| match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    })
    .path()
}

/// A file in the scratch directory, named per thread so parallel test threads do not collide.
fn scratch_file(name: &str) -> PathBuf {
    let dir = scratch().join(format!("{:?}", std::thread::current().id()).replace(['(', ')'], ""));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// One training record as the Python bindings pass it (a JSON text), then what `train` does
/// with valid records next: the summary and the split.
pub fn records_line(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for missing in [MissingCost::Error, MissingCost::Zero] {
        if let Ok(records) = RoutingData::from_json_texts("fuzz", text.lines(), missing) {
            let _ = records.summary();
            let _ = records.split(&SplitOptions::default());
        }
    }
}

/// A whole records file: the first byte picks JSONL, gzip-compressed JSONL, or an outcomes file
/// (`kroute update --feedback`).
pub fn records_file(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let (name, outcomes) = match kind % 3 {
        0 => ("records.jsonl", false),
        1 => ("records.jsonl.gz", false),
        _ => ("outcomes.jsonl", true),
    };
    let path = scratch_file(name);
    std::fs::write(&path, bytes).unwrap();
    let read = match outcomes {
        true => RoutingData::read_outcomes(&path),
        false => RoutingData::read(&path, MissingCost::Zero),
    };
    if let Ok(records) = read {
        let _ = records.summary();
        let _ = records.split(&SplitOptions::default());
    }
}

/// A Parquet or Arrow IPC input of `kroute embed` (first byte: the format, the text column and
/// whether an id column is asked for), scanned and then read to the end, as `embed` does.
pub fn columnar(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let name = match kind & 1 {
        0 => "input.parquet",
        _ => "input.arrow",
    };
    let options = TextReaderOptions {
        field: if kind & 2 == 0 { "query" } else { "text" }.into(),
        id_field: (kind & 4 != 0).then(|| "id".into()),
        skip_empty: kind & 8 != 0,
    };
    let path = scratch_file(name);
    std::fs::write(&path, bytes).unwrap();
    if TextReader::scan(&path, options.clone()).is_err() {
        return;
    }
    if let Ok(reader) = TextReader::open(&path, options) {
        for text in reader.texts() {
            if text.is_err() {
                break;
            }
        }
    }
}

/// A router directory: a little-endian u32 length, that many bytes of `router.json`, the rest
/// `centroids.safetensors`. A router that loads must route a query of its dimension.
pub fn router_dir(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let (len, rest) = data.split_at(4);
    let len = (u32::from_le_bytes(len.try_into().unwrap()) as usize).min(rest.len());
    let (json, centroids) = rest.split_at(len);
    let dir = scratch_file("router");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("router.json"), json).unwrap();
    std::fs::write(dir.join("centroids.safetensors"), centroids).unwrap();
    let Ok(router) = Router::load(&dir, &Device::Cpu) else {
        return;
    };
    let dim = router.centroids.dims()[1];
    let query = Tensor::ones((1, dim), candle_core::DType::F32, &Device::Cpu).unwrap();
    let query = (query / (dim as f64).sqrt()).unwrap();
    if let Ok(routed) = router.route(&query, &router.defaults) {
        assert_eq!(routed.len(), 1);
        assert!(routed.best(0) < router.models.len());
    }
}

/// The models a fuzzed `kroute.toml` may name.
const CONFIG_MODELS: [&str; 3] = ["gpt-4-1106-preview", "mistral-7b-chat", "claude-v2"];

/// `kroute.toml`, with every environment variable it names set.
pub fn serve_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let models: Vec<String> = CONFIG_MODELS.iter().map(|m| m.to_string()).collect();
    let _ = ServeConfig::parse(
        text,
        Path::new("kroute.toml"),
        &models,
        RouteParams::default(),
        |name| Some(format!("value-of-{name}")),
    );
}

/// The model directory's JSON configs, up to the weights: the first byte picks which file of
/// the tiny BERT the rest replaces (`config.json`, `sentence_bert_config.json`,
/// `1_Pooling/config.json`, `config_sentence_transformers.json`, `modules.json`).
pub fn model_config(data: &[u8]) {
    const FILES: [&str; 5] = [
        "config.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "config_sentence_transformers.json",
        "modules.json",
    ];
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let dir = scratch_file("model");
    if !dir.join("tokenizer.json").exists() {
        copy_dir(&tiny_model(), &dir);
    }
    let file = FILES[kind as usize % FILES.len()];
    let original = std::fs::read(tiny_model().join(file)).unwrap();
    std::fs::write(dir.join(file), bytes).unwrap();
    let model = ModelFiles {
        id: "fuzz".into(),
        revision: None,
        dir: dir.clone(),
        weights_sha256: String::new(),
        source: ModelSource::LocalDir,
    };
    if let Ok(config) = EncoderConfig::read(&model.path("config.json")) {
        let _ = config.validate();
    }
    if let Ok(sentence) = SentenceConfig::read(&model, None) {
        let _ = sentence.prompt(None, None);
        let _ = sentence.prompt(None, Some("query"));
    }
    std::fs::write(dir.join(file), original).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_dir(&entry.path(), &target),
            false => {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
}

fn tiny_embedder() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let files = resolve(tiny_model().to_str().unwrap()).unwrap();
        Embedder::from_files(files, &Device::Cpu, None, EmbedderOptions::default()).unwrap()
    })
}

/// Text through the tokenizer and the encoder: arbitrary UTF-8 (lossy), control characters,
/// long inputs; every line is one text. Every text is tokenized within the model's limit; the
/// first (the one libFuzzer mutates most) is also encoded to one finite unit vector. Encoding
/// every line made the target too slow to reach a million inputs, and the encoder's work does
/// not depend on the bytes beyond the token ids and the length.
pub fn tokenizer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let texts: Vec<&str> = text.split('\n').take(64).collect();
    let embedder = tiny_embedder();
    let tokens = embedder.tokenize(&texts).unwrap();
    assert_eq!(tokens.len(), texts.len());
    for t in &tokens {
        assert!(t.ids.len() <= embedder.max_seq_length());
    }
    let vectors = embedder.embed_vecs(&texts[..1]).unwrap();
    assert_eq!(vectors[0].len(), embedder.dim());
    let norm: f32 = vectors[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(norm.is_finite());
    if embedder.normalize() {
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }
}

/// A router trained on the first bundled RouterBench records with the tiny model, saved.
fn tiny_router() -> &'static (Router, PathBuf) {
    static ROUTER: OnceLock<(Router, PathBuf)> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let data = RoutingData::read(
            &repo_root().join("data/routerbench-3k.jsonl.gz"),
            MissingCost::Error,
        )
        .unwrap();
        let rows: Vec<usize> = (0..80).collect();
        let texts: Vec<&str> = rows
            .iter()
            .map(|&i| data.records[i].query.as_str())
            .collect();
        let embedder = tiny_embedder();
        let kmeans = KMeansConfig {
            k: 4,
            n_init: 1,
            ..Default::default()
        };
        let router = Router::fit(
            &embedder.embed(&texts).unwrap(),
            &data,
            &rows,
            &kmeans,
            EmbeddingInfo::of(embedder),
            RouteParams::default(),
        )
        .unwrap();
        let path = scratch().join("served-router");
        router.save(&path).unwrap();
        (router, path)
    })
}

/// Saves the router [`http_body`] serves into `dir` (the seed of [`router_dir`]).
pub fn save_tiny_router(dir: &Path) {
    tiny_router().0.save(dir).unwrap();
}

/// The admin key of the fuzzed server (its admin endpoints are part of what is fuzzed).
const ADMIN_KEY: &str = "fuzz-admin-key";

struct Served {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
}

/// `kroute serve` in process on the tiny router, its upstream a closed loopback port (every
/// proxied call fails fast, as a dead provider would).
fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let (router, router_path) = tiny_router();
        let config_text =
            "[upstream.default]\nbase_url = \"http://127.0.0.1:9/v1\"\ntimeout_s = 2\n";
        let config_path = scratch().join("kroute.toml");
        std::fs::write(&config_path, config_text).unwrap();
        let env = |_: &str| None;
        let config = ServeConfig::parse(
            config_text,
            &config_path,
            &router.models,
            router.defaults,
            env,
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let options = ServeOptions {
            admin_key: Some(ADMIN_KEY.into()),
            reload: Some(ReloadSource {
                config: config_path,
                router: router_path.clone(),
                env: Arc::new(env),
            }),
            ..Default::default()
        };
        let server = runtime.block_on(async {
            let embedder = {
                let files = resolve(tiny_model().to_str().unwrap()).unwrap();
                Embedder::from_files(files, &Device::Cpu, None, EmbedderOptions::default()).unwrap()
            };
            Server::start(
                embedder,
                router.clone(),
                EngineOptions::default(),
                config,
                options,
            )
            .unwrap()
        });
        Served {
            app: server.app(),
            runtime,
        }
    })
}

/// Endpoints whose JSON bodies are fuzzed.
const ENDPOINTS: [&str; 5] = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/route",
    "/v1/feedback",
    "/admin/reload",
];

/// An HTTP JSON body (first byte: the endpoint) through the real axum handlers. Whatever the
/// body, the answer is a success or a client error, never a 500 or a panic, and a whole one.
pub fn http_body(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let served = served();
    let request = Request::builder()
        .method("POST")
        .uri(ENDPOINTS[kind as usize % ENDPOINTS.len()])
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .body(Body::from(body.to_vec()))
        .unwrap();
    let status = served.runtime.block_on(async {
        let response = served.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        status
    });
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "body {body:?}");
}

/// The feedback write-ahead log. First byte even: one segment's bytes, torn or corrupted
/// anywhere; what is read back is in sequence order. Odd: the rest, line by line, as the
/// payloads of well-framed records (`CLUSTERS` stands for the served router's clusters id, so
/// that records can apply), recovered onto the tiny router as a restarted server does; after
/// recovery the router still routes to finite totals.
pub fn wal(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 2 {
        0 => {
            let mut replay = wal::Replay::default();
            let segment = Path::new("wal-00000000000000000001.log");
            if wal::read_segment(segment, bytes, &mut replay).is_ok() {
                assert!(replay
                    .records
                    .windows(2)
                    .all(|pair| pair[0].sequence < pair[1].sequence));
            }
        }
        _ => recover(bytes),
    }
}

fn recover(payloads: &[u8]) {
    let (router, _) = tiny_router();
    let clusters = clusters_id(router).unwrap();
    let dir = scratch_file("state");
    let _ = std::fs::remove_dir_all(&dir);
    let state = StateDir::open(&dir).unwrap();
    let mut writer = wal::WalWriter::open(&state.wal_dir(), 1).unwrap();
    for payload in payloads.split(|&b| b == b'\n') {
        let payload = String::from_utf8_lossy(payload).replace("CLUSTERS", &clusters);
        if writer.append(payload.as_bytes()).is_err() {
            break;
        }
    }
    writer.sync().unwrap();
    drop(writer);
    let mut recovered = router.clone();
    if state.recover(&mut recovered, Some(20.0)).is_ok() {
        let dim = recovered.centroids.dims()[1];
        let query = Tensor::ones((1, dim), candle_core::DType::F32, &Device::Cpu).unwrap();
        let query = (query / (dim as f64).sqrt()).unwrap();
        let routed = recovered.route(&query, &recovered.defaults).unwrap();
        assert!(routed.totals(0).iter().all(|t| t.is_finite()));
    }
}
