//! Every encoder architecture against sentence-transformers, on tiny random-weight checkpoints
//! made by `scripts/make_tiny_encoders.py` (no hub, no real weights): pooling, prompts,
//! truncation and batch composition; and clear errors for broken model directories.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use common::{cosine, fixture_path};
use kroute::embed::models::{relative_bucket, Architecture};
use kroute::embed::Pooling;
use kroute::model::resolve;
use kroute::{Embedder, EmbedderOptions};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    max_seq_length: usize,
    texts: Vec<String>,
    untruncated_tokens: Vec<usize>,
    embeddings: std::collections::BTreeMap<String, Vec<Vec<f32>>>,
}

fn tiny(architecture: &str) -> PathBuf {
    fixture_path("tiny").join(architecture)
}

fn reference(architecture: &str) -> Reference {
    let text = std::fs::read_to_string(tiny(architecture).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(dir: &Path, options: EmbedderOptions) -> kroute::Result<Embedder> {
    Embedder::from_files(resolve(dir.to_str().unwrap())?, &Device::Cpu, None, options)
}

/// `options`' vectors of the reference texts against the reference `variant`: cosine ≥ 0.9999
/// for every text, and the same vectors (within 1e-5) whatever the batches.
fn assert_matches(architecture: &str, options: EmbedderOptions, variant: &str) {
    let reference = reference(architecture);
    let want = &reference.embeddings[variant];
    let embedder = load(&tiny(architecture), options.clone()).unwrap();
    assert_eq!(embedder.max_seq_length(), reference.max_seq_length);
    let got = embedder.embed_vecs(&reference.texts).unwrap();
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        let cos = cosine(got, want);
        assert!(
            cos >= 0.9999,
            "{architecture}/{variant}: text {i} ({} tokens): cosine {cos}",
            reference.untruncated_tokens[i]
        );
    }

    let one_by_one = load(
        &tiny(architecture),
        EmbedderOptions {
            max_batch_tokens: Some(1),
            chunk_size: 1,
            ..options
        },
    )
    .unwrap()
    .embed_vecs(&reference.texts)
    .unwrap();
    let worst = got
        .iter()
        .zip(&one_by_one)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-5,
        "{architecture}: batching moved a value by {worst}"
    );
}

fn prompt(text: &str) -> Option<String> {
    Some(text.to_string())
}

#[test]
fn bert_with_cls_pooling_and_a_named_prompt() {
    let embedder = load(&tiny("bert"), EmbedderOptions::default()).unwrap();
    assert_eq!(embedder.encoder().architecture(), Architecture::Bert);
    assert_eq!(embedder.pooling(), Pooling::Cls);
    assert_eq!(embedder.prompt(), "", "the named prompt is not the default");
    assert_matches("bert", EmbedderOptions::default(), "plain");
    let query = EmbedderOptions {
        prompt_name: Some("query".into()),
        ..Default::default()
    };
    assert_matches("bert", query.clone(), "query");
    // --prompt with the same text is the same thing.
    let text = load(&tiny("bert"), query).unwrap().prompt().to_string();
    assert_eq!(text, "Represent this question: ");
    assert_matches(
        "bert",
        EmbedderOptions {
            prompt: Some(text),
            ..Default::default()
        },
        "query",
    );
}

#[test]
fn xlm_roberta_with_mean_pooling_and_a_default_prompt() {
    let embedder = load(&tiny("xlm-roberta"), EmbedderOptions::default()).unwrap();
    assert_eq!(embedder.encoder().architecture(), Architecture::XlmRoberta);
    assert_eq!(embedder.pooling(), Pooling::Mean);
    // The model's default prompt applies unless another (or an empty one) is asked for.
    assert_eq!(embedder.prompt(), "query: ");
    assert_matches("xlm-roberta", EmbedderOptions::default(), "default");
    assert_matches(
        "xlm-roberta",
        EmbedderOptions {
            prompt: prompt(""),
            ..Default::default()
        },
        "none",
    );
    assert_matches(
        "xlm-roberta",
        EmbedderOptions {
            prompt_name: Some("passage".into()),
            ..Default::default()
        },
        "passage",
    );
}

#[test]
fn mpnet_with_mean_and_last_token_pooling() {
    let embedder = load(&tiny("mpnet"), EmbedderOptions::default()).unwrap();
    assert_eq!(embedder.encoder().architecture(), Architecture::Mpnet);
    assert_matches("mpnet", EmbedderOptions::default(), "mean");
    assert_matches(
        "mpnet",
        EmbedderOptions {
            pooling: Some(Pooling::Last),
            ..Default::default()
        },
        "last",
    );
}

#[test]
fn qwen3_with_grouped_query_attention_last_token_pooling_and_prompts() {
    let embedder = load(&tiny("qwen3"), EmbedderOptions::default()).unwrap();
    assert_eq!(embedder.encoder().architecture(), Architecture::Qwen3);
    assert_eq!(embedder.pooling(), Pooling::Last);
    assert_eq!(embedder.dim(), 32);
    // The reference pads on the left as the model's tokenizer asks, kroute on the right: the
    // vectors agree either way, and with a right-padding reference too.
    assert_matches("qwen3", EmbedderOptions::default(), "left");
    assert_matches("qwen3", EmbedderOptions::default(), "right");
    let query = EmbedderOptions {
        prompt_name: Some("query".into()),
        ..Default::default()
    };
    assert!(load(&tiny("qwen3"), query.clone())
        .unwrap()
        .prompt()
        .starts_with("Instruct: "));
    assert_matches("qwen3", query, "query");
}

#[test]
fn matryoshka_dimensions_truncate_then_renormalise() {
    let options = EmbedderOptions {
        dimensions: Some(16),
        ..Default::default()
    };
    let embedder = load(&tiny("qwen3"), options.clone()).unwrap();
    assert_eq!(embedder.dim(), 16);
    assert_matches("qwen3", options, "dim16");
    let err = load(
        &tiny("qwen3"),
        EmbedderOptions {
            dimensions: Some(64),
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("--dimensions 64") && err.contains("32"),
        "{err}"
    );
}

#[test]
fn qwen3_configs_that_cannot_work_are_explained() {
    for (edit, needle) in [
        (
            serde_json::json!({"num_key_value_heads": 3}),
            "num_attention_heads 4 is not a multiple of num_key_value_heads 3",
        ),
        (
            serde_json::json!({"head_dim": 15}),
            "head_dim 15 must be even",
        ),
        (
            serde_json::json!({"hidden_act": "gelu"}),
            "hidden_act `gelu`",
        ),
        (
            serde_json::json!({"rope_parameters": null}),
            "no rope_theta",
        ),
        (
            serde_json::json!({"rope_parameters": {"rope_theta": 1e4, "rope_type": "yarn"}}),
            "rope_scaling",
        ),
        (
            serde_json::json!({"num_hidden_layers": "two"}),
            "field `num_hidden_layers`: invalid type",
        ),
    ] {
        let dir = edited_copy("qwen3", |c| {
            for (key, value) in edit.as_object().unwrap() {
                c[key] = value.clone();
            }
        });
        let err = load_error(dir.path());
        assert!(err.contains(needle), "{edit}: {err}");
    }
}

/// Weights split into shards with a `model.safetensors.index.json`, as large checkpoints
/// (Qwen3-Embedding-4B/8B) ship: the same vectors, and an identity made of the shards' digests.
#[test]
fn sharded_weights_load_like_one_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny("qwen3"), dir.path());
    let single = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&single).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = tensors.names().into_iter().map(String::from).collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|name| (name.clone(), tensors.tensor(name).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.path().join(shard)).unwrap();
        for name in part {
            weight_map.insert(name.clone(), shard.into());
        }
    }
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": weight_map}).to_string(),
    )
    .unwrap();
    std::fs::remove_file(&single).unwrap();

    let reference = reference("qwen3");
    let want = load(&tiny("qwen3"), EmbedderOptions::default())
        .unwrap()
        .embed_vecs(&reference.texts)
        .unwrap();
    let sharded = load(dir.path(), EmbedderOptions::default()).unwrap();
    assert_eq!(sharded.embed_vecs(&reference.texts).unwrap(), want);
    let digest = |shard: &str| kroute::model::sha256_file(&dir.path().join(shard)).unwrap();
    let (a, b) = (
        digest("model-00001-of-00002.safetensors"),
        digest("model-00002-of-00002.safetensors"),
    );
    assert_eq!(
        sharded.model().weights_sha256,
        kroute::model::weights_digest([
            ("model-00002-of-00002.safetensors", b.as_str()),
            ("model-00001-of-00002.safetensors", a.as_str()),
        ])
    );

    // A shard the index names but the directory lacks is named.
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
}

#[test]
fn bf16_on_the_cpu_is_refused_before_loading() {
    let files = resolve(tiny("bert").to_str().unwrap()).unwrap();
    let err = Embedder::from_files(
        files,
        &Device::Cpu,
        Some(candle_core::DType::BF16.into()),
        EmbedderOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("bf16") && err.contains("CPU"), "{err}");
}

/// `--dtype int8` covers every architecture: each tiny checkpoint's int8 vectors stay within
/// cosine 0.99 of the reference's (its dense layers quantized, the rest f32).
#[test]
fn every_architecture_runs_in_int8() {
    if kroute::kernels::int8::Isa::detect().is_none() {
        eprintln!("skipped: this CPU has no int8 kernel (int8 needs x86-64 with AVX2)");
        return;
    }
    // Each fixture's variant with the model's own defaults (roberta shares bert's code path).
    for (architecture, variant) in [
        ("bert", "plain"),
        ("xlm-roberta", "default"),
        ("mpnet", "mean"),
        ("qwen3", "left"),
    ] {
        let reference = reference(architecture);
        let files = resolve(tiny(architecture).to_str().unwrap()).unwrap();
        let int8 = Embedder::from_files(
            files,
            &Device::Cpu,
            Some(kroute::device::Precision::Int8),
            EmbedderOptions::default(),
        )
        .unwrap();
        let got = int8.embed_vecs(&reference.texts).unwrap();
        for (i, (got, want)) in got.iter().zip(&reference.embeddings[variant]).enumerate() {
            let cos = cosine(got, want);
            assert!(cos >= 0.99, "{architecture} int8: text {i}: cosine {cos}");
        }
    }
}

#[test]
fn mpnet_buckets_match_transformers() {
    #[derive(Deserialize)]
    struct Buckets {
        relative: Vec<i64>,
        bucket: Vec<usize>,
    }
    let text = std::fs::read_to_string(fixture_path("tiny/mpnet_buckets.json")).unwrap();
    let table: Buckets = serde_json::from_str(&text).unwrap();
    assert!(table.relative.len() > 1000);
    for (relative, want) in table.relative.iter().zip(&table.bucket) {
        assert_eq!(
            relative_bucket(*relative, 32, 128),
            *want,
            "distance {relative}"
        );
    }
}

#[test]
fn truncation_counts_the_prompt() {
    let reference = reference("xlm-roberta");
    let embedder = load(&tiny("xlm-roberta"), EmbedderOptions::default()).unwrap();
    let stats = embedder
        .embed_stream(
            reference.texts.iter().map(|t| Ok(t.as_str())),
            |_| Ok(()),
            |_| {},
        )
        .unwrap();
    // The reference token counts are without the prompt: a text within the limit may not be
    // once "query: " is prepended, so at least the texts over it are cut.
    let over = reference
        .untruncated_tokens
        .iter()
        .filter(|&&n| n > reference.max_seq_length)
        .count();
    assert!(over > 0);
    assert!(stats.truncated >= over, "{} < {over}", stats.truncated);
}

#[test]
fn unknown_prompt_name_lists_the_known_ones() {
    let err = load(
        &tiny("xlm-roberta"),
        EmbedderOptions {
            prompt_name: Some("answer".into()),
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("`answer`") && err.contains("passage") && err.contains("query"),
        "{err}"
    );
}

/// A copy of a tiny checkpoint with `edit` applied to its `config.json`.
fn edited_copy(architecture: &str, edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny(architecture), dir.path());
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn load_error(dir: &Path) -> String {
    load(dir, EmbedderOptions::default())
        .err()
        .expect("the directory is refused")
        .to_string()
}

#[test]
fn unsupported_model_type_names_it_and_the_supported_ones() {
    let dir = edited_copy("bert", |c| c["model_type"] = "gpt2".into());
    let err = load_error(dir.path());
    assert!(err.contains("config.json"), "{err}");
    assert!(err.contains("`gpt2`"), "{err}");
    for supported in Architecture::ALL {
        assert!(err.contains(supported.as_str()), "{err}");
    }

    let dir = edited_copy("bert", |c| {
        c.as_object_mut().unwrap().remove("model_type");
    });
    let err = load_error(dir.path());
    assert!(err.contains("no `model_type`"), "{err}");
}

#[test]
fn missing_config_field_is_named() {
    let dir = edited_copy("mpnet", |c| {
        c.as_object_mut().unwrap().remove("hidden_size");
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("config.json") && err.contains("hidden_size"),
        "{err}"
    );
}

/// A malformed `config.json` is reported as such even where the weights are unreadable: the
/// config is checked before gigabytes of weights would be mapped.
#[test]
fn a_bad_config_is_reported_before_the_weights_are_read() {
    for architecture in ["bert", "mpnet", "qwen3"] {
        let dir = edited_copy(architecture, |c| c["hidden_size"] = "wide".into());
        std::fs::write(dir.path().join("model.safetensors"), b"not weights").unwrap();
        let err = load_error(dir.path());
        assert!(
            err.contains("config.json") && err.contains("field `hidden_size`"),
            "{architecture}: {err}"
        );
    }
}

#[test]
fn heads_that_do_not_divide_the_width_are_refused() {
    let dir = edited_copy("bert", |c| c["num_attention_heads"] = 5.into());
    let err = load_error(dir.path());
    assert!(err.contains("num_attention_heads 5"), "{err}");
}

#[test]
fn weights_that_do_not_fit_the_config_name_both_files() {
    for architecture in ["bert", "xlm-roberta", "mpnet", "qwen3"] {
        let dir = edited_copy(architecture, |c| c["intermediate_size"] = 96.into());
        let err = load_error(dir.path());
        assert!(
            err.contains("model.safetensors does not match")
                && err.contains("config.json")
                && err.contains(architecture),
            "{architecture}: {err}"
        );
    }
    let dir = edited_copy("bert", |c| c["num_hidden_layers"] = 3.into());
    let err = load_error(dir.path());
    assert!(err.contains("encoder.layer.2"), "{err}");
}

#[test]
fn missing_files_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny("bert"), dir.path());
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("config.json") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn unsupported_pooling_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny("bert"), dir.path());
    std::fs::write(
        dir.path().join("1_Pooling/config.json"),
        r#"{"embedding_dimension": 32, "pooling_mode": "max", "include_prompt": true}"#,
    )
    .unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("1_Pooling/config.json") && err.contains("`max` pooling"),
        "{err}"
    );
}
