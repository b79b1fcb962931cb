//! The learning server through HTTP: decision ids, `/v1/feedback` and what it changes, its
//! errors and keys, exploration, reloads (in process and by SIGHUP), and no acknowledged outcome
//! lost to `kill -9`.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::serve::*;
use common::upstream::MockUpstream;
use kroute::engine::{EngineOptions, LearningOptions};
use kroute::router::{Exploration, Router};
use kroute::serve::{ReloadSource, ServeOptions};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret";

async fn post_feedback(
    h: &Harness,
    body: &Value,
    key: Option<&str>,
    idempotency: Option<&str>,
) -> reqwest::Response {
    let mut request = h.http.post(format!("{}/v1/feedback", h.base)).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(idempotency) = idempotency {
        request = request.header("Idempotency-Key", idempotency);
    }
    request.send().await.unwrap()
}

async fn recorded(h: &Harness, body: &Value, idempotency: Option<&str>) -> Value {
    let response = post_feedback(h, body, None, idempotency).await;
    assert_eq!(response.status(), 200, "{body}");
    response.json().await.unwrap()
}

async fn admin_state(base: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{base}/admin/state"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// `/admin/state` once the model thread has taken in `outcomes` learned outcomes: an outcome is
/// acknowledged once logged and queued for the model thread (which routes every later request
/// with it), and the state's count follows when the thread has applied it.
async fn admin_state_after(base: &str, outcomes: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = admin_state(base).await;
        if state["observations"] == outcomes || Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn with_admin() -> ServeOptions {
    ServeOptions {
        admin_key: Some(ADMIN.into()),
        ..Default::default()
    }
}

/// The library's choice for `text` after one outcome `score` for `model`.
fn choice_after(text: &str, model: usize, score: f64) -> usize {
    let mut router = load_router();
    let embedded = fixture().embedder.embed(&[text]).unwrap();
    let routed = router.route(&embedded, &defaults()).unwrap();
    router
        .observe(&Router::observation(&routed, 0, model, score, None), None)
        .unwrap();
    router.route(&embedded, &defaults()).unwrap().best(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_for_a_decision_changes_the_next_one_and_counts_once() {
    let h = start("", with_admin(), EngineOptions::default()).await;
    let models = load_router().models;
    // A held-out query whose choice one bad outcome for the chosen model should flip.
    let (text, chosen, next) = fixture()
        .queries
        .iter()
        .find_map(|text| {
            let chosen = models
                .iter()
                .position(|m| *m == ranking(text, &defaults())[0])?;
            let next = choice_after(text, chosen, 0.0);
            (next != chosen).then_some((text, chosen, next))
        })
        .expect("a close decision");
    let response = h.chat("kroute", text).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-kroute-model"), models[chosen]);
    assert_eq!(header(&response, "x-kroute-explored"), "false");
    let id = header(&response, "x-kroute-decision-id").to_string();
    assert_eq!(id.len(), 32);

    let receipt = recorded(&h, &json!({"decision_id": id, "score": 0.0}), None).await;
    assert_eq!(receipt["duplicate"], false);
    assert_eq!(receipt["model"], models[chosen]);
    // The next request routes with the outcome: as the library predicts.
    let response = h.chat("kroute", text).await;
    assert_eq!(header(&response, "x-kroute-model"), models[next]);

    // The same outcome again counts once and says so; another model's outcome is its own.
    let again = recorded(&h, &json!({"decision_id": id, "verdict": "bad"}), None).await;
    assert_eq!(again["duplicate"], true);
    let other = &models[(chosen + 1) % models.len()];
    let receipt = recorded(
        &h,
        &json!({"decision_id": id, "model": other, "verdict": "good", "cost": 0.002}),
        None,
    )
    .await;
    assert_eq!(
        (receipt["duplicate"].clone(), receipt["model"].clone()),
        (json!(false), json!(other))
    );

    // /v1/route gives the decision an id too.
    let routed: Value = h
        .post("/v1/route", &json!({"input": text}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(routed["model"], models[next]);
    assert_eq!(routed["explored"], false);
    assert_eq!(routed["decision_id"].as_str().unwrap().len(), 32);

    // Outcomes for texts, labelled later: an Idempotency-Key counts once.
    let judged = json!({"input": fixture().queries[10], "model": models[0], "score": 1});
    let first = recorded(&h, &judged, Some("judge-1")).await;
    assert_eq!(first["duplicate"], false);
    let retried = recorded(&h, &judged, Some("judge-1")).await;
    assert_eq!(retried["duplicate"], true);
    assert_eq!(retried["model"], models[0]);

    let state = admin_state_after(&h.base, 3).await;
    assert_eq!(state["observations"], 3);
    assert_eq!(state["observations_since_start"], 3);
    assert_eq!(state["decisions_since_start"], 3);
    assert_eq!(state["per_model"][&models[chosen]]["feedback"], 1);
    assert_eq!(state["per_model"][&models[chosen]]["mean_feedback"], 0.0);
    // How far each model's outcomes stand from its training answers: only the models with
    // outcomes, none changed on one outcome, the bad outcome below its training level.
    let changes = state["changes"].as_object().unwrap();
    let mut with_outcomes = vec![&models[chosen], other, &models[0]];
    with_outcomes.sort();
    with_outcomes.dedup();
    assert_eq!(
        changes.keys().collect::<Vec<_>>(),
        with_outcomes,
        "{changes:?}"
    );
    for change in changes.values() {
        assert!(change["outcomes"].as_f64().unwrap() > 0.0, "{change}");
        assert!(change["standard_error"].as_f64().unwrap() > 0.0, "{change}");
        assert_eq!(change["applies"], false, "{change}");
    }
    if models[0] != models[chosen] {
        assert!(changes[&models[chosen]]["shift"].as_f64().unwrap() < 0.0);
    }
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(&format!(
            "kroute_feedback_total{{model=\"{}\",result=\"duplicate\"}} 1",
            models[chosen]
        )),
        "{metrics}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_errors_name_the_decision_or_the_field() {
    let engine = EngineOptions {
        learning: LearningOptions {
            max_decisions: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let h = start("", ServeOptions::default(), engine).await;
    let mut ids = Vec::new();
    for text in &fixture().queries[..3] {
        let response = h.chat("kroute", text).await;
        ids.push(header(&response, "x-kroute-decision-id").to_string());
    }
    // Two decisions are kept: the first has been dropped.
    let message = expect_error(
        post_feedback(&h, &json!({"decision_id": ids[0], "score": 1}), None, None).await,
        404,
    )
    .await;
    assert!(
        message.contains("expired") && message.contains(&ids[0]),
        "{message}"
    );
    for unknown in ["0".repeat(32), "not-an-id".to_string()] {
        let message = expect_error(
            post_feedback(&h, &json!({"decision_id": unknown, "score": 1}), None, None).await,
            404,
        )
        .await;
        assert!(message.contains(&unknown), "{message}");
    }
    let id = &ids[2];
    for (body, names) in [
        (json!({"decision_id": id}), "`score`"),
        (json!({"decision_id": id, "score": 1.5}), "`score`"),
        (json!({"decision_id": id, "score": "1"}), "`score`"),
        (json!({"decision_id": id, "verdict": "meh"}), "`verdict`"),
        (
            json!({"decision_id": id, "score": 1, "verdict": "good"}),
            "not both",
        ),
        (json!({"decision_id": id, "scor": 1}), "`scor`"),
        (
            json!({"decision_id": id, "input": "x", "score": 1}),
            "exactly one",
        ),
        (json!({"score": 1}), "exactly one"),
        (json!({"input": "x", "score": 1}), "`model`"),
        (json!({"input": "x", "model": "gpt-9", "score": 1}), "gpt-9"),
        (
            json!({"decision_id": id, "model": "gpt-9", "score": 1}),
            "gpt-9",
        ),
        (json!({"decision_id": id, "score": 1, "cost": -1}), "`cost`"),
        (
            json!({"messages": "hi", "model": "x", "score": 1}),
            "`messages`",
        ),
        (json!([1, 2]), "JSON object"),
    ] {
        let message = expect_error(post_feedback(&h, &body, None, None).await, 400).await;
        assert!(message.contains(names), "{body}: {message}");
    }
    let long_key = "k".repeat(300);
    let message = expect_error(
        post_feedback(
            &h,
            &json!({"decision_id": id, "score": 1}),
            None,
            Some(&long_key),
        )
        .await,
        400,
    )
    .await;
    assert!(message.contains("Idempotency-Key"), "{message}");
    // None of it was taken in; the last decision still takes its outcome.
    let receipt = recorded(&h, &json!({"decision_id": id, "score": 1}), None).await;
    assert_eq!(receipt["duplicate"], false);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_and_admin_endpoints_take_their_own_keys() {
    let options = ServeOptions {
        api_keys: vec!["client".into()],
        feedback_keys: vec!["judge".into()],
        admin_key: Some(ADMIN.into()),
        ..Default::default()
    };
    let h = start("", options, EngineOptions::default()).await;
    let response = h
        .http
        .post(format!("{}/v1/chat/completions", h.base))
        .bearer_auth("client")
        .json(&chat_body("kroute", &fixture().queries[0], false))
        .send()
        .await
        .unwrap();
    let id = header(&response, "x-kroute-decision-id").to_string();
    let body = json!({"decision_id": id, "score": 1});
    expect_error(post_feedback(&h, &body, None, None).await, 401).await;
    expect_error(post_feedback(&h, &body, Some(ADMIN), None).await, 401).await;
    assert_eq!(
        post_feedback(&h, &body, Some("judge"), None).await.status(),
        200
    );
    assert_eq!(
        post_feedback(&h, &body, Some("client"), None)
            .await
            .status(),
        200
    );
    // A feedback key is not a client key.
    let judge_chat = h
        .http
        .post(format!("{}/v1/chat/completions", h.base))
        .bearer_auth("judge")
        .json(&chat_body("kroute", "hello", false))
        .send()
        .await
        .unwrap();
    expect_error(judge_chat, 401).await;
    for key in [None, Some("client"), Some("judge")] {
        let mut request = h.http.get(format!("{}/admin/state", h.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        expect_error(request.send().await.unwrap(), 401).await;
    }
    assert_eq!(admin_state_after(&h.base, 1).await["observations"], 1);
    // Without paths to reload from, a reload is refused with the reason.
    let refused = h
        .http
        .post(format!("{}/admin/reload", h.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let message = expect_error(refused, 422).await;
    assert!(message.contains("without paths"), "{message}");
    h.shutdown().await;

    // Without --admin-key the admin endpoints are off altogether.
    let h = start("", ServeOptions::default(), EngineOptions::default()).await;
    let message = expect_error(h.get("/admin/state").await, 403).await;
    assert!(message.contains("--admin-key"), "{message}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exploration_is_marked_and_bounded_by_its_share() {
    let engine = EngineOptions {
        learning: LearningOptions {
            exploration: Exploration::Epsilon(1.0),
            max_explore_share: 0.25,
            explore_seed: Some(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let h = start("", with_admin(), engine).await;
    let mut explored = 0;
    for text in &fixture().queries[..40] {
        let response = h.chat("kroute", text).await;
        if header(&response, "x-kroute-explored") == "true" {
            explored += 1;
            assert_ne!(
                header(&response, "x-kroute-model"),
                ranking(text, &defaults())[0]
            );
        }
    }
    // ε = 1 explores whenever the share allows: a quarter of the decisions exactly.
    assert_eq!(explored, 10);
    let state = admin_state(&h.base).await;
    assert_eq!(state["explored_share"], 0.25);
    assert_eq!(state["exploration"], "epsilon:1");
    h.shutdown().await;
}

/// A router directory of its own (a copy of the fixture's) that a test may replace.
fn router_copy(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("router");
    load_router().save(&path).unwrap();
    path
}

fn priced(mock: &str, input: f64, output: f64) -> String {
    config_text(mock, "").replace(
        "input_per_mtok = 10.0, output_per_mtok = 30.0",
        &format!("input_per_mtok = {input}, output_per_mtok = {output}"),
    )
}

/// Dollars `kroute_upstream_cost_usd_total` shows for the renamed (priced) model.
async fn spend(base: &str) -> f64 {
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with("kroute_upstream_cost_usd_total") && l.contains(RENAMED.0))
        .map_or(0.0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

async fn reload(base: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/admin/reload"))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_prices_keeps_what_was_learned_and_refuses_what_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockUpstream::start().await;
    let config = dir.path().join("kroute.toml");
    std::fs::write(&config, priced(&mock.base_url, 10.0, 30.0)).unwrap();
    let router = router_copy(dir.path());
    let options = ServeOptions {
        reload: Some(ReloadSource {
            config: config.clone(),
            router: router.clone(),
            env: Arc::new(|var| (var == KEY_VAR).then(|| KEY.to_string())),
        }),
        ..with_admin()
    };
    let mock_url = mock.base_url.clone();
    let h = start_with(mock, "", options, EngineOptions::default()).await;
    // 1000 input and 500 output tokens per answer: $0.025 at $10/$30 per million.
    assert_eq!(h.chat(RENAMED.0, "hello").await.status(), 200);
    assert!((spend(&h.base).await - 0.025).abs() < 1e-9);
    let text = json!({"input": fixture().queries[3], "model": RENAMED.0, "score": 0});
    recorded(&h, &text, None).await;

    // A new price takes effect at once; the outcome learned carries over (same clusters).
    std::fs::write(&config, priced(&mock_url, 20.0, 60.0)).unwrap();
    let response = reload(&h.base, None).await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["report"]["same_clusters"], true);
    assert_eq!(report["report"]["carried_over"], 1);
    assert_eq!(h.chat(RENAMED.0, "hello").await.status(), 200);
    assert!((spend(&h.base).await - 0.075).abs() < 1e-9);
    let state = admin_state(&h.base).await;
    assert_eq!(
        (state["generation"].clone(), state["observations"].clone()),
        (json!(1), json!(1))
    );

    // A broken file is refused with the reason; the running configuration keeps serving.
    std::fs::write(&config, "[upstream.default\n").unwrap();
    let message = expect_error(reload(&h.base, None).await, 422).await;
    assert!(
        message.contains("kroute.toml") && message.contains("line 1"),
        "{message}"
    );
    assert_eq!(h.chat(RENAMED.0, "hello").await.status(), 200);
    assert!((spend(&h.base).await - 0.125).abs() < 1e-9);

    // A router with other clusters would lose the outcome learned: refused unless asked.
    std::fs::write(&config, priced(&mock_url, 20.0, 60.0)).unwrap();
    let response = h.chat("kroute", &fixture().queries[4]).await;
    let old_id = header(&response, "x-kroute-decision-id").to_string();
    let mut other = load_router();
    other.centroids = (other.centroids.clone() * 0.999).unwrap();
    other.save(&router).unwrap();
    let message = expect_error(reload(&h.base, None).await, 422).await;
    assert!(
        message.contains("clusters differ") && message.contains("1 outcomes"),
        "{message}"
    );
    let response = reload(&h.base, Some(json!({"discard_learned": true}))).await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["report"]["discarded"], 1);
    let state = admin_state(&h.base).await;
    assert_eq!(
        (state["generation"].clone(), state["observations"].clone()),
        (json!(2), json!(0))
    );
    // A decision made on the old clusters cannot be credited to the new ones.
    let stale = post_feedback(&h, &json!({"decision_id": old_id, "score": 1}), None, None).await;
    expect_error(stale, 409).await;

    let metrics = h.metrics().await;
    assert!(
        metrics.contains("kroute_reloads_total{result=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kroute_reloads_total{result=\"refused\"} 2"),
        "{metrics}"
    );
    h.shutdown().await;
}

/// Polls `/metrics` until `line` shows (or fails after 20 s).
async fn wait_for_metric(base: &str, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains(line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{line} never showed in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_broken_config_keeps_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockUpstream::start().await;
    let config = dir.path().join("kroute.toml");
    std::fs::write(&config, priced(&mock.base_url, 10.0, 30.0)).unwrap();
    let router = router_copy(dir.path());
    let mut server = ServeProcess::start(
        &[
            "--router",
            router.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[(KEY_VAR, KEY)],
    )
    .await;
    let chat = |base: String| async move {
        reqwest::Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .json(&chat_body(RENAMED.0, "hello", false))
            .send()
            .await
            .unwrap()
            .status()
    };
    std::fs::write(
        &config,
        "[upstream.default]\nbase_url = \"ftp://nowhere\"\n",
    )
    .unwrap();
    server.signal("-HUP");
    wait_for_metric(&server.base, "kroute_reloads_total{result=\"refused\"} 1").await;
    assert_eq!(chat(server.base.clone()).await, 200);
    assert!((spend(&server.base).await - 0.025).abs() < 1e-9);
    std::fs::write(&config, priced(&mock.base_url, 20.0, 60.0)).unwrap();
    server.signal("-HUP");
    wait_for_metric(&server.base, "kroute_reloads_total{result=\"ok\"} 1").await;
    assert_eq!(chat(server.base.clone()).await, 200);
    assert!((spend(&server.base).await - 0.075).abs() < 1e-9);
    let log = server.log();
    assert!(
        log.contains("reload refused") && log.contains("http://"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_in_a_feedback_burst_loses_no_acknowledged_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockUpstream::start().await;
    let config = dir.path().join("kroute.toml");
    std::fs::write(&config, config_text(&mock.base_url, "")).unwrap();
    let state = dir.path().join("state");
    let args = [
        "--router",
        fixture().router.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--snapshot-every",
        "150ms",
        "--admin-key",
        ADMIN,
    ];
    let env = [(KEY_VAR, KEY)];
    let models = Arc::new(load_router().models);
    let send = |base: String, i: usize| send_event(base, i, models.clone());

    let mut server = ServeProcess::start(&args, &env).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|client| {
            let (acked, sent, stop, base) = (
                acked.clone(),
                sent.clone(),
                stop.clone(),
                server.base.clone(),
            );
            let models = models.clone();
            tokio::spawn(async move {
                let mut i = client;
                while !stop.load(Ordering::SeqCst) {
                    sent.lock().unwrap().push(i);
                    if send_event(base.clone(), i, models.clone()).await == Some(false) {
                        acked.lock().unwrap().push(i);
                    }
                    i += 16;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 150 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // No new outcome starts; the ones in flight are cut by the kill.
    stop.store(true, Ordering::SeqCst);
    server.signal("-KILL");
    server.child.wait().unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert!(acked.len() >= 150, "{} acknowledged", acked.len());

    let server = ServeProcess::start(&args, &env).await;
    let learned = admin_state(&server.base).await["observations"]
        .as_u64()
        .unwrap() as usize;
    // Every acknowledged outcome is there; some not yet acknowledged may be too.
    assert!(
        learned >= acked.len() && learned <= sent.len(),
        "{learned} of {} sent, {} acknowledged",
        sent.len(),
        acked.len()
    );
    // Acknowledged outcomes sent again are known; the rest, sent again, are each counted once.
    for &i in acked.iter().take(20) {
        assert_eq!(send(server.base.clone(), i).await, Some(true), "event {i}");
    }
    for &i in sent.iter().filter(|i| !acked.contains(i)) {
        assert!(send(server.base.clone(), i).await.is_some(), "event {i}");
    }
    let state = admin_state_after(&server.base, sent.len() as u64).await;
    assert_eq!(state["observations"].as_u64().unwrap() as usize, sent.len());
    // The directory holds the same, for `kroute route` and the Python package.
    let on_disk =
        kroute::state::open_router(&state_dir(&state), &candle_core::Device::Cpu).unwrap();
    assert_eq!(on_disk.learned().observations as usize, sent.len());
}

/// Posts outcome `i` of the burst (a text, a model, a score, its own Idempotency-Key):
/// `Some(duplicate)` once acknowledged, `None` when it was not (an error, or no answer).
async fn send_event(base: String, i: usize, models: Arc<Vec<String>>) -> Option<bool> {
    let body = json!({
        "input": fixture().queries[i % 100],
        "model": models[i % models.len()],
        "score": (i % 3) as f64 / 2.0,
    });
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/feedback"))
        .header("Idempotency-Key", format!("event-{i}"))
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let receipt: Value = (response.status() == 200)
        .then_some(response)?
        .json()
        .await
        .ok()?;
    receipt["duplicate"].as_bool()
}

fn state_dir(state: &Value) -> std::path::PathBuf {
    state["state_dir"].as_str().unwrap().into()
}
