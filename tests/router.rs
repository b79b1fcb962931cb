//! Training and routing on real RouterBench records with the real model: the round trip
//! through the router directory, the embedding-model check, and `kroute train`/`route`/`check`
//! end to end, including bad input leaving no router behind.

mod common;

use std::path::Path;

use common::{bundled_sample, embedder, files_in, run, run_json, small_router};
use kroute::records::{MissingCost, RoutingData};
use kroute::router::{RouteParams, Router, Scoring};
use kroute::EmbedderOptions;

#[test]
fn save_load_round_trip_gives_identical_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let data =
        RoutingData::read(&bundled_sample(dir.path(), 300, true), MissingCost::Error).unwrap();
    let embedder = embedder(EmbedderOptions::default());
    let (train, test): (Vec<usize>, Vec<usize>) = (0..300).partition(|&i| i < 240);
    let texts = |rows: &[usize]| -> Vec<String> {
        rows.iter()
            .map(|&i| data.records[i].query.clone())
            .collect()
    };
    let test_embeddings = embedder.embed(&texts(&test)).unwrap();
    let router = small_router(&data, &train, &embedder);
    // Cluster sizes add up to the training set, and every model's count is bounded by them.
    assert_eq!(router.clusters.iter().map(|c| c.size).sum::<usize>(), 240);
    assert!(router
        .clusters
        .iter()
        .all(|c| c.count.iter().all(|&n| n <= c.size)));

    let saved = dir.path().join("router");
    router.save(&saved).unwrap();
    let loaded = Router::load(&saved, &candle_core::Device::Cpu).unwrap();
    assert_eq!(loaded.models, router.models);
    assert_eq!(loaded.clusters, router.clusters);
    assert_eq!(loaded.embedding, router.embedding);
    for scoring in [
        Scoring::Paper { alpha: 0.0 },
        Scoring::Paper { alpha: 0.7 },
        Scoring::Reference(Default::default()),
    ] {
        let params = RouteParams {
            scoring,
            ..Default::default()
        };
        let before = router.route(&test_embeddings, &params).unwrap();
        let after = loaded.route(&test_embeddings, &params).unwrap();
        assert_eq!(before.totals, after.totals);
        assert_eq!(before.clusters, after.clusters);
    }
    // Saving again replaces the router; the directory holds only the router's two files.
    router.save(&saved).unwrap();
    assert_eq!(files_in(&saved), ["centroids.safetensors", "router.json"]);
    assert_eq!(files_in(dir.path()), ["router", "sample.jsonl"]);

    // Another model's vectors are refused, naming the model to use.
    let mut other = loaded.embedding.clone();
    other.weights_sha256 = "f".repeat(64);
    let err = other
        .check(&embedder, "the router")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("embedding model mismatch in `weights_sha256`") && err.contains("--model"),
        "{err}"
    );
    let mut shorter = loaded.embedding.clone();
    shorter.max_seq_length = 128;
    let err = shorter
        .check(&embedder, "the router")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`max_seq_length`") && err.contains("--max-seq-length 128"),
        "{err}"
    );
    // Every field that changes the vectors is checked and named, with the flag that sets it.
    let mut prompted = loaded.embedding.clone();
    prompted.prompt = "query: ".into();
    let err = prompted
        .check(&embedder, "the router")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`prompt`: the router expects \"query: \", the model in use has no prompt")
            && err.contains("--prompt \"query: \""),
        "{err}"
    );
    let mut cls = loaded.embedding.clone();
    cls.pooling = kroute::embed::Pooling::Cls;
    let err = cls.check(&embedder, "the router").unwrap_err().to_string();
    assert!(
        err.contains("`pooling`") && err.contains("--pooling cls"),
        "{err}"
    );
    loaded.embedding.check(&embedder, "the router").unwrap();
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn train_then_route_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = bundled_sample(dir.path(), 160, true);
    let router = dir.path().join("router");
    let summary = dir.path().join("train.json");
    let (ok, stderr) = run(&[
        "train",
        data.to_str().unwrap(),
        "-o",
        router.to_str().unwrap(),
        "--clusters",
        "6",
        "--n-init",
        "2",
        "--alpha",
        "0.8",
        "--quiet",
        "--summary",
        summary.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let split = RoutingData::read(&data, MissingCost::Error)
        .unwrap()
        .summary()
        .split
        .unwrap();
    assert_eq!(
        summary["train_queries"], split.0,
        "trains on the `split: train` rows only"
    );
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(router.join("router.json")).unwrap())
            .unwrap();
    assert_eq!(
        stored["routing"]["scoring"],
        serde_json::json!({"mode": "paper", "alpha": 0.8})
    );
    // kroute's defaults: 3 k-means solutions of 6 clusters, statistics shrunk with strength 5.
    assert_eq!(stored["bag"], 3);
    assert_eq!(stored["clusters"].as_array().unwrap().len(), 3 * 6);
    assert_eq!(stored["routing"]["prior_strength"], 5.0);

    let queries = dir.path().join("queries.txt");
    std::fs::write(&queries, "Write a function that reverses a string.\nWhich planet is largest?\nThe trophy would not fit in the suitcase because it was too big. What was too big?\n").unwrap();
    let decisions = dir.path().join("decisions.jsonl");
    let (ok, stderr) = run(&[
        "route",
        router.to_str().unwrap(),
        "--input",
        queries.to_str().unwrap(),
        "-o",
        decisions.to_str().unwrap(),
        "--explain",
        "--max-models",
        "2",
        "--top-p",
        "3",
    ]);
    assert!(ok, "{stderr}");
    let lines = read_lines(&decisions);
    assert_eq!(lines.len(), 3);
    let models: Vec<String> = serde_json::from_value(stored["models"].clone()).unwrap();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], i);
        assert_eq!(line["ranked"].as_array().unwrap().len(), 2);
        assert_eq!(line["model"], line["ranked"][0]["model"]);
        assert!(models.contains(&line["model"].as_str().unwrap().to_string()));
        // Each of the 3 k-means solutions' 3 nearest clusters; weights share the whole vote.
        let clusters = line["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 3 * 3);
        let weights: f64 = clusters.iter().map(|c| c["weight"].as_f64().unwrap()).sum();
        assert!((weights - 1.0).abs() < 1e-5);
        // Each score is the router's α = 0.8 of its accuracy and cost estimates, min-max
        // normalised over the models in the cluster.
        for cluster in clusters {
            let of = |key: &str| -> Vec<f64> {
                models
                    .iter()
                    .map(|m| cluster[key][m].as_f64().unwrap())
                    .collect()
            };
            let (accuracy, cost, scores) = (of("accuracy"), of("cost"), of("scores"));
            let span = |v: &[f64]| {
                let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                (
                    min,
                    v.iter().copied().fold(f64::NEG_INFINITY, f64::max) - min,
                )
            };
            let ((a0, a_span), (c0, c_span)) = (span(&accuracy), span(&cost));
            for m in 0..models.len() {
                let expected =
                    0.8 * (accuracy[m] - a0) / a_span + 0.2 * (1.0 - (cost[m] - c0) / c_span);
                assert!((scores[m] - expected).abs() < 1e-9, "{cluster}");
            }
        }
    }
    // Without shrinkage the estimates are the clusters' training means, as router.json has them.
    let line = run_json(&[
        "route",
        router.to_str().unwrap(),
        "Which planet is largest?",
        "--explain",
        "--prior-strength",
        "0",
    ]);
    for cluster in line["clusters"].as_array().unwrap() {
        let stats = &stored["clusters"][cluster["cluster"].as_u64().unwrap() as usize];
        for (m, model) in models.iter().enumerate() {
            for key in ["accuracy", "cost"] {
                match stats["count"][m].as_u64().unwrap() {
                    0 => assert!(cluster[key][model].is_null()),
                    _ => assert_eq!(cluster[key][model], stats[key][m], "{key} of {model}"),
                }
            }
        }
    }
    // A positional query with a flag override lists every model when --max-models is absent.
    let line = run_json(&[
        "route",
        router.to_str().unwrap(),
        "Which planet is largest?",
        "--alpha",
        "0",
    ]);
    assert_eq!(line["query"], "Which planet is largest?");
    assert_eq!(line["ranked"].as_array().unwrap().len(), models.len());

    // A router trained with other weights is refused before any routing.
    let json_path = router.join("router.json");
    let text = std::fs::read_to_string(&json_path).unwrap();
    let sha = stored["embedding"]["weights_sha256"].as_str().unwrap();
    std::fs::write(&json_path, text.replace(sha, &"a".repeat(64))).unwrap();
    let (ok, stderr) = run(&["route", router.to_str().unwrap(), "hello"]);
    assert!(!ok);
    assert!(stderr.contains("embedding model mismatch"), "{stderr}");
}

#[test]
fn bad_records_leave_no_router_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = bundled_sample(dir.path(), 20, true);
    let mut lines: Vec<String> = std::fs::read_to_string(&data)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[12] = lines[12].replacen("\"cost\":", "\"cost\":-", 1);
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let router = dir.path().join("router");
    let (ok, stderr) = run(&[
        "train",
        bad.to_str().unwrap(),
        "-o",
        router.to_str().unwrap(),
        "--clusters",
        "2",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("bad.jsonl:13: field `usages.") && stderr.contains("is negative"),
        "{stderr}"
    );
    assert_eq!(files_in(dir.path()), ["bad.jsonl", "sample.jsonl"]);

    // A directory that is not a router is never overwritten.
    std::fs::create_dir(&router).unwrap();
    std::fs::write(router.join("notes.txt"), "mine").unwrap();
    let (ok, stderr) = run(&[
        "train",
        data.to_str().unwrap(),
        "-o",
        router.to_str().unwrap(),
        "--clusters",
        "2",
        "--n-init",
        "1",
        "--quiet",
    ]);
    assert!(!ok);
    assert!(stderr.contains("not a kroute router directory"), "{stderr}");
    assert_eq!(files_in(&router), ["notes.txt"]);
    assert_eq!(
        files_in(dir.path()),
        ["bad.jsonl", "router", "sample.jsonl"]
    );

    // `check` reports the same error and exits non-zero; on good data it prints a summary.
    let (ok, stderr) = run(&["check", bad.to_str().unwrap()]);
    assert!(!ok && stderr.contains("bad.jsonl:13"), "{stderr}");
    let summary = run_json(&["check", data.to_str().unwrap(), "--json"]);
    assert_eq!(summary["queries"], 20);
    assert_eq!(summary["models"].as_array().unwrap().len(), 11);
}
