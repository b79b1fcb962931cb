//! `kroute bench` on a tiny random-weights encoder: every section is measured and reported.

mod common;

use common::{fixture_path, run_json};
use kroute::embed::models;

#[test]
fn bench_reports_every_section_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "model_type": "bert", "vocab_size": 500, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0, "max_position_embeddings": 64, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        })
        .to_string(),
    )
    .unwrap();
    let report = run_json(&[
        "bench",
        "--random-weights",
        config.to_str().unwrap(),
        "--seq-lens",
        "8,128",
        "--batch-tokens",
        "64",
        "--kmeans-points",
        "2000",
        "--kmeans-clusters",
        "8,16",
        "--route-queries",
        "5000",
        "--peak-tflops",
        "1",
        "--json",
    ]);
    let encoder = report["encoder"].as_array().unwrap();
    // 128 exceeds the 64 positions of this model: clamped, 64 tokens in one row.
    let cases: Vec<(u64, u64)> = encoder
        .iter()
        .map(|c| (c["seq_len"].as_u64().unwrap(), c["rows"].as_u64().unwrap()))
        .collect();
    assert_eq!(cases, [(8, 8), (64, 1)]);
    for case in encoder {
        let (sentences, tokens) = (
            case["sentences_per_s"].as_f64().unwrap(),
            case["tokens_per_s"].as_f64().unwrap(),
        );
        assert!(sentences > 0.0);
        assert!((tokens - sentences * case["seq_len"].as_f64().unwrap()).abs() < 1e-6 * tokens);
        assert_eq!(
            case["mfu"].as_f64().unwrap(),
            case["tflops"].as_f64().unwrap()
        );
    }
    let latency = &report["latency"];
    assert!(latency["p50_ms"].as_f64().unwrap() <= latency["p99_ms"].as_f64().unwrap());
    let kmeans: Vec<u64> = report["kmeans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["clusters"].as_u64().unwrap())
        .collect();
    assert_eq!(kmeans, [8, 16]);
    let bags: Vec<u64> = report["route"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["queries_per_s"].as_f64().unwrap() > 0.0);
            assert!(r["single_query_p50_ms"].as_f64().unwrap() > 0.0);
            r["bag"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(bags, [1, 5]);
    assert!(report["device"].as_str().unwrap().starts_with("cpu"));
    assert_eq!(report["fused_kernels"], true);

    let generic = run_json(&[
        "bench",
        "--random-weights",
        config.to_str().unwrap(),
        "--seq-lens",
        "8",
        "--batch-tokens",
        "64",
        "--kmeans-points",
        "500",
        "--kmeans-clusters",
        "4",
        "--route-queries",
        "100",
        "--generic-ops",
        "--json",
    ]);
    assert_eq!(generic["fused_kernels"], false);
}

#[test]
fn every_architecture_benches_from_its_weights_or_its_config() {
    for architecture in ["bert", "xlm-roberta", "mpnet", "qwen3"] {
        let dir = fixture_path("tiny").join(architecture);
        let config = dir.join("config.json");
        for subject in [
            ["--model", dir.to_str().unwrap()],
            ["--random-weights", config.to_str().unwrap()],
        ] {
            let mut args = vec![
                "bench",
                "--seq-lens",
                "16",
                "--batch-tokens",
                "64",
                "--kmeans-points",
                "500",
                "--kmeans-clusters",
                "4",
                "--route-queries",
                "100",
                "--json",
            ];
            args.extend(subject);
            let report = run_json(&args);
            let case = &report["encoder"][0];
            assert_eq!(case["rows"], 4, "{architecture} {subject:?}");
            assert!(case["tflops"].as_f64().unwrap() > 0.0, "{architecture}");
            assert!(report["latency"]["p50_ms"].as_f64().unwrap() > 0.0);
        }
    }
}

#[test]
fn flops_per_token_follows_the_model_shape() {
    // MiniLM-L6 at 64 tokens: 6 × 2 × (4·384² + 2·384·1536 + 2·64·384) = 21.8 MFLOP.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "model_type": "bert", "vocab_size": 100, "hidden_size": 384, "num_hidden_layers": 6,
            "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
            "max_position_embeddings": 512,
        })
        .to_string(),
    )
    .unwrap();
    let config = models::EncoderConfig::read(&config).unwrap();
    let encoder = models::random(
        &config,
        candle_core::DType::F32.into(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        encoder.flops_per_token(64),
        6.0 * 2.0 * (4.0 * 384.0 * 384.0 + 2.0 * 384.0 * 1536.0 + 2.0 * 64.0 * 384.0)
    );
}
