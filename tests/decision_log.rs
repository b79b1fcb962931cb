//! The decision log through HTTP and its replay: every routed answer and `/v1/route` decision
//! is logged with its tenant, ranking, votes, answer and cost, outcomes beside them; replayed
//! with the same router and setting, no decision changes (from the logged votes, and from the
//! logged texts); at α = 0 the expected cost falls. A real router and model, a mock provider.

mod common;

use std::time::Duration;

use common::serve::*;
use common::upstream::Behavior;
use kroute::engine::EngineOptions;
use kroute::eval::replay::{replay, ReplaySettings};
use kroute::serve::ServeOptions;
use kroute::state::decision_log::{read_log, DecisionLogOptions};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_outcomes_are_logged_and_replay_to_the_same_choices() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineOptions {
        decision_log: Some(DecisionLogOptions {
            dir: dir.path().to_path_buf(),
            max_rows: 2,
            rotate_every: Duration::from_secs(60),
            log_queries: true,
        }),
        ..Default::default()
    };
    let config = "[tenants.research]\napi_keys_env = \"RESEARCH_TENANT_KEYS\"\nalpha = 0.7\n";
    let h = start(config, ServeOptions::default(), engine).await;
    let key = tenant_key("research");
    let texts: Vec<String> = fixture().queries[..4].to_vec();
    // Every model answers through the priced name, so that every answer has a cost.
    let mut answers = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let stream = i == 1;
        let best = upstream_name(&ranking(text, &alpha(0.7))[0]).to_string();
        if stream {
            h.mock.set(&best, Behavior::Stream { chunks: 1 });
        }
        let response = h
            .post_as(
                Some(&key),
                "/v1/chat/completions",
                &chat_body("kroute", text, stream),
                &[],
            )
            .await;
        assert_eq!(response.status(), 200);
        let id = header(&response, "x-kroute-decision-id").to_string();
        let model = header(&response, "x-kroute-model").to_string();
        h.mock.release();
        response.text().await.unwrap();
        h.mock.set(&best, Behavior::Answer);
        answers.push((id, model));
    }
    let route = h
        .post_as(Some(&key), "/v1/route", &json!({"input": texts[3]}), &[])
        .await;
    let route: Value = route.json().await.unwrap();
    let feedback = json!({"decision_id": answers[0].0, "score": 1.0});
    let ack = h.post_as(Some(&key), "/v1/feedback", &feedback, &[]).await;
    assert_eq!(ack.status(), 200);
    h.shutdown().await;

    let log = read_log(dir.path()).unwrap();
    assert_eq!(log.decisions.len(), 5);
    assert!(log.files >= 3, "rotated every 2 rows: {} files", log.files);
    for (i, (id, model)) in answers.iter().enumerate() {
        let row = &log.decisions[i];
        assert_eq!(row.endpoint, "chat");
        assert_eq!(row.tenant, "research");
        assert_eq!(row.decision_id.as_deref(), Some(id.as_str()));
        assert_eq!(row.answered.as_deref(), Some(model.as_str()));
        assert_eq!(row.alpha, 0.7);
        assert_eq!(row.query.as_deref(), Some(texts[i].as_str()));
        assert_eq!(
            row.query_sha256,
            hex::encode(Sha256::digest(texts[i].as_bytes()))
        );
        assert_eq!(row.ranked_models[0], *model);
        assert!(!row.clusters.is_empty() && row.clusters.len() == row.cluster_weights.len());
        assert!(row.total_ms.is_some() && row.first_byte_ms.is_some());
        // The mock reports 1000 + 500 tokens; only the renamed model is priced.
        if model == RENAMED.0 {
            assert_eq!(row.cost_usd, Some(0.025));
        }
        if i != 1 {
            assert_eq!(
                (row.input_tokens, row.output_tokens),
                (Some(1000), Some(500))
            );
        }
    }
    let routed = &log.decisions[4];
    assert_eq!(routed.endpoint, "route");
    assert_eq!(routed.decision_id.as_deref(), route["decision_id"].as_str());
    assert_eq!(routed.answered, None);
    assert_eq!(log.outcomes.len(), 1);
    assert_eq!(
        log.outcomes[0].decision_id.as_deref(),
        Some(answers[0].0.as_str())
    );
    assert_eq!(log.outcomes[0].score, 1.0);

    // The command line reads the directory and reports the same, as JSON and as a table.
    let replayed = std::process::Command::new(env!("CARGO_BIN_EXE_kroute"))
        .args(["replay", "--json", "--router"])
        .arg(&fixture().router)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let report: Value = serde_json::from_slice(&replayed.stdout).unwrap();
    assert_eq!(report["tenants"]["research"]["replayed"], 5);
    assert_eq!(report["tenants"]["research"]["changed"], 0);
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_kroute"))
        .args(["replay", "--alpha", "0", "--router"])
        .arg(&fixture().router)
        .arg(dir.path())
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("research") && table.contains("5 re-decided from their votes"),
        "{table}"
    );

    // The same router and α decide the same, from the votes and from the texts alike.
    let router = load_router();
    let same = replay(&log, &router, None, ReplaySettings::default()).unwrap();
    assert_eq!(
        (same.by_votes, same.total.replayed, same.total.changed),
        (5, 5, 0)
    );
    assert_eq!(same.total.with_outcomes, 1);
    assert_eq!(same.total.accuracy_before, Some(1.0));
    assert_eq!(same.total.accuracy_after, Some(1.0));
    let mut elsewhere = log;
    elsewhere
        .decisions
        .iter_mut()
        .for_each(|d| d.router_clusters = "other clusters".into());
    let embedder = &fixture().embedder;
    let by_text = replay(
        &elsewhere,
        &router,
        Some(embedder),
        ReplaySettings::default(),
    )
    .unwrap();
    assert_eq!((by_text.by_text, by_text.total.changed), (5, 0));
    // At α = 0 the cheapest choices cost less than α = 0.7's.
    let cheap = replay(
        &elsewhere,
        &router,
        Some(embedder),
        ReplaySettings { alpha: Some(0.0) },
    )
    .unwrap();
    assert!(cheap.total.changed > 0);
    assert!(
        cheap.total.expected_cost_after < cheap.total.expected_cost_before,
        "{cheap:?}"
    );
    // Without texts, decisions on other clusters cannot be replayed, and say so.
    elsewhere.decisions.iter_mut().for_each(|d| d.query = None);
    let blind = replay(
        &elsewhere,
        &router,
        Some(embedder),
        ReplaySettings::default(),
    )
    .unwrap();
    assert_eq!((blind.without_text, blind.total.replayed), (5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_log_queries_only_the_hash_of_a_text_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineOptions {
        decision_log: Some(DecisionLogOptions {
            dir: dir.path().to_path_buf(),
            max_rows: 100,
            rotate_every: Duration::from_secs(60),
            log_queries: false,
        }),
        ..Default::default()
    };
    let h = start("", ServeOptions::default(), engine).await;
    let text = "a private question about my own records";
    assert_eq!(
        h.post("/v1/route", &json!({"input": text})).await.status(),
        200
    );
    h.shutdown().await;
    let log = read_log(dir.path()).unwrap();
    assert_eq!(log.decisions.len(), 1);
    assert_eq!(log.decisions[0].query, None);
    assert_eq!(
        log.decisions[0].query_sha256,
        hex::encode(Sha256::digest(text.as_bytes()))
    );
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(7).any(|w| w == b"private"),
            "the text is in a log file"
        );
    }
}
