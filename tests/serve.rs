//! `kroute serve` end to end on loopback: a router trained on real RouterBench records with the
//! real model, a mock provider that records requests and can fail, stall or stream, and an
//! HTTP client. Decisions are checked against the library's own embedding and routing.

mod common;

use std::time::Duration;

use common::cosine;
use common::serve::*;
use common::upstream::{chunk, Behavior, MockUpstream};
use futures_util::StreamExt;
use kroute::engine::EngineOptions;
use kroute::serve::ServeOptions;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_like_the_library_and_forwards_under_the_upstream_name() {
    let h = start("", ServeOptions::default(), EngineOptions::default()).await;
    let text = query_with_a_trade_off();
    for (model, params, alpha_header) in [
        ("kroute", defaults(), "0.5"),
        ("kroute:alpha=1", alpha(1.0), "1"),
        ("kroute:alpha=0", alpha(0.0), "0"),
    ] {
        let response = h.chat(model, text).await;
        assert_eq!(response.status(), 200);
        let expected = &ranking(text, &params)[0];
        assert_eq!(header(&response, "x-kroute-model"), expected, "{model}");
        assert_eq!(header(&response, "x-kroute-alpha"), alpha_header);
        assert_eq!(header(&response, "x-kroute-fallbacks"), "0");
        let route_ms: f64 = header(&response, "x-kroute-route-ms").parse().unwrap();
        assert!(route_ms > 0.0);
        let body: Value = response.json().await.unwrap();
        // The body is the provider's: its model is the upstream name.
        assert_eq!(body["model"], upstream_name(expected));
        let sent = h.mock.requests().pop().unwrap();
        assert_eq!(sent.model, upstream_name(expected));
        assert_eq!(
            sent.authorization.as_deref(),
            Some(&*format!("Bearer {KEY}"))
        );
        // Everything else of the request is forwarded untouched.
        assert_eq!(sent.body["temperature"], 0.2);
        assert_eq!(
            sent.body["messages"],
            chat_body(model, text, false)["messages"]
        );
    }
    // A concrete model is called directly, without routing.
    let response = h.chat(RENAMED.0, text).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-kroute-model"), RENAMED.0);
    assert!(response.headers().get("x-kroute-alpha").is_none());
    assert_eq!(h.mock.models_called().last().unwrap(), RENAMED.1);

    // /v1/route gives the same decision without calling anyone.
    let before = h.mock.requests().len();
    let decision: Value = h
        .post(
            "/v1/route",
            &json!({"input": text, "model": "kroute:alpha=1", "explain": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    let expected = ranking(text, &alpha(1.0));
    assert_eq!(decision["model"], expected[0]);
    let ranked: Vec<&str> = decision["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    assert_eq!(ranked, expected);
    let clusters = decision["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), defaults().top_p);
    let weights: f64 = clusters.iter().map(|c| c["weight"].as_f64().unwrap()).sum();
    assert!((weights - 1.0).abs() < 1e-5);
    assert_eq!(h.mock.requests().len(), before);

    // The priced model's spend: 1000 input and 500 output tokens at $10 and $30 per million.
    let metrics = h.metrics().await;
    let spend = metrics
        .lines()
        .find(|l| l.starts_with("kroute_upstream_cost_usd_total") && l.contains(RENAMED.0))
        .unwrap_or_else(|| panic!("no spend of {} in\n{metrics}", RENAMED.0));
    let calls = h
        .mock
        .models_called()
        .iter()
        .filter(|m| *m == RENAMED.1)
        .count() as f64;
    let dollars: f64 = spend.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((dollars - calls * 0.025).abs() < 1e-9, "{spend}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_chunks_in_order_as_they_arrive() {
    let h = start("", ServeOptions::default(), EngineOptions::default()).await;
    let text = &fixture().queries[0];
    let model = &ranking(text, &defaults())[0];
    let upstream = upstream_name(model);
    h.mock.set(upstream, Behavior::Stream { chunks: 3 });
    let response = h
        .post("/v1/chat/completions", &chat_body("kroute", text, true))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "text/event-stream");
    assert_eq!(header(&response, "x-kroute-model"), model);
    let mut body = response.bytes_stream();
    let mut received = String::new();
    // The mock sends chunk i+1 only after we have seen chunk i: a proxy that buffered the
    // answer would deadlock here.
    for i in 0..3 {
        let expected = chunk(upstream, i);
        while received.len() < expected.len() {
            let next = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("chunk arrives without the rest of the answer")
                .unwrap()
                .unwrap();
            received.push_str(std::str::from_utf8(&next).unwrap());
        }
        assert_eq!(received, expected, "chunk {i}");
        received.clear();
        h.mock.release();
    }
    while let Some(next) = body.next().await {
        received.push_str(std::str::from_utf8(&next.unwrap()).unwrap());
    }
    assert_eq!(received, "data: [DONE]\n\n");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_on_500_timeout_and_refused_connections() {
    let text = &fixture().queries[1];
    let ranked = ranking(text, &defaults());
    // Nothing listens on a port that was just released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/v1", dead.local_addr().unwrap());
    drop(dead);
    let refused = format!(
        "[upstream.\"{}\"]\nbase_url = \"{dead_url}\"\n[upstream.\"{}\"]\ntimeout_s = 0.3\n",
        ranked[0], ranked[1]
    );
    // The best model refuses connections, the second stalls past its timeout: the third answers.
    let h = start(&refused, ServeOptions::default(), EngineOptions::default()).await;
    h.mock.set(
        upstream_name(&ranked[1]),
        Behavior::Stall(Duration::from_secs(5)),
    );
    let response = h.chat("kroute", text).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-kroute-model"), ranked[2]);
    assert_eq!(header(&response, "x-kroute-fallbacks"), "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], upstream_name(&ranked[2]));
    assert_eq!(
        h.mock.models_called(),
        [upstream_name(&ranked[1]), upstream_name(&ranked[2])]
    );

    // With the third failing too, every try failed: 502, naming each failure.
    h.mock.set(upstream_name(&ranked[2]), Behavior::Status(500));
    let message = expect_error(h.chat("kroute", text).await, 502).await;
    assert!(
        message.contains(&ranked[0]) && message.contains("HTTP 500"),
        "{message}"
    );

    let metrics = h.metrics().await;
    for expected in [
        format!(
            "kroute_fallbacks_total{{from=\"{}\",to=\"{}\"}} 2",
            ranked[0], ranked[1]
        ),
        format!(
            "kroute_upstream_errors_total{{model=\"{}\",status=\"connect\"}} 2",
            ranked[0]
        ),
        format!(
            "kroute_upstream_errors_total{{model=\"{}\",status=\"timeout\"}} 2",
            ranked[1]
        ),
        format!(
            "kroute_upstream_errors_total{{model=\"{}\",status=\"500\"}} 1",
            ranked[2]
        ),
    ] {
        assert!(metrics.contains(&expected), "{expected} not in\n{metrics}");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_give_504_and_provider_client_errors_pass_through() {
    let text = &fixture().queries[2];
    let ranked = ranking(text, &defaults());
    let fast_timeouts: String = ranked[..2]
        .iter()
        .map(|m| format!("[upstream.\"{m}\"]\ntimeout_s = 0.2\n"))
        .collect();
    let options = ServeOptions {
        max_fallbacks: 1,
        ..Default::default()
    };
    let h = start(&fast_timeouts, options, EngineOptions::default()).await;
    for model in &ranked[..2] {
        h.mock.set(
            upstream_name(model),
            Behavior::Stall(Duration::from_secs(5)),
        );
    }
    expect_error(h.chat("kroute", text).await, 504).await;
    // With --max-fallbacks 1 the third-ranked model is never tried.
    assert_eq!(h.mock.requests().len(), 2);

    // A 400 from the provider is the client's problem: passed on, no fallback.
    h.mock.set(upstream_name(&ranked[0]), Behavior::Status(400));
    h.mock.set(upstream_name(&ranked[1]), Behavior::Answer);
    let response = h.chat("kroute", text).await;
    assert_eq!(response.status(), 400);
    assert_eq!(header(&response, "x-kroute-model"), ranked[0]);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "mock 400");
    assert_eq!(h.mock.requests().len(), 3);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_falls_back_once_streaming_began() {
    let h = start("", ServeOptions::default(), EngineOptions::default()).await;
    let text = &fixture().queries[3];
    let model = &ranking(text, &defaults())[0];
    h.mock.set(upstream_name(model), Behavior::StreamThenBreak);
    let response = h
        .post("/v1/chat/completions", &chat_body("kroute", text, true))
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(first, chunk(upstream_name(model), 0).as_bytes());
    // The break reaches the client as an error event ending the stream (no `[DONE]`), not as
    // another model's answer.
    let mut rest = Vec::new();
    while let Some(next) = body.next().await {
        rest.extend_from_slice(&next.unwrap());
    }
    let rest = String::from_utf8(rest).unwrap();
    let event: Value = serde_json::from_str(
        rest.strip_prefix("data: ")
            .and_then(|r| r.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("not one SSE event after the break: {rest:?}")),
    )
    .unwrap();
    assert_eq!(event["error"]["code"], "stream_broken", "{event}");
    assert!(event["error"]["message"]
        .as_str()
        .unwrap()
        .contains(model.as_str()));
    assert_eq!(h.mock.models_called(), [upstream_name(model)]);
    let metrics = h.metrics().await;
    assert!(metrics.contains(&format!(
        "kroute_upstream_errors_total{{model=\"{model}\",status=\"stream\"}} 1"
    )));
    assert!(!metrics.contains("kroute_fallbacks_total{"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_are_required_when_configured() {
    let options = ServeOptions {
        api_keys: vec!["client-key-1".into(), "client-key-2".into()],
        ..Default::default()
    };
    let h = start("", options, EngineOptions::default()).await;
    let text = &fixture().queries[4];
    let url = format!("{}/v1/chat/completions", h.base);
    let body = chat_body("kroute", text, false);
    let without = h.http.post(&url).json(&body).send().await.unwrap();
    let message = expect_error(without, 401).await;
    assert!(message.contains("Bearer"));
    let wrong = h
        .http
        .post(&url)
        .bearer_auth("client-key-3")
        .json(&body)
        .send()
        .await
        .unwrap();
    let message = expect_error(wrong, 401).await;
    assert!(
        !message.contains("client-key"),
        "a key is never echoed: {message}"
    );
    assert!(h.mock.requests().is_empty());
    let right = h
        .http
        .post(&url)
        .bearer_auth("client-key-2")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    // The client's key is not the provider's: the provider gets its own.
    assert_eq!(
        h.mock.requests()[0].authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(h.get("/health").await.status(), 200);
    assert_eq!(h.get("/metrics").await.status(), 200);
    expect_error(h.get("/v1/models").await, 401).await;
    h.shutdown().await;
}

/// Bodies, headers, `messages` and `input` arrays are bounded, and a request past a bound is
/// told which bound and which flag sets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_sizes_are_bounded_and_the_limits_named() {
    let options = ServeOptions {
        max_header_bytes: 1024,
        max_messages: 3,
        max_inputs: 2,
        ..Default::default()
    };
    let h = start("", options, EngineOptions::default()).await;
    let user = |text: &str| json!({"role": "user", "content": text});
    let messages: Vec<Value> = (0..4).map(|i| user(&format!("question {i}"))).collect();
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "kroute", "messages": messages}),
        ),
        ("/v1/route", json!({"messages": messages})),
        (
            "/v1/feedback",
            json!({"messages": messages, "model": &load_router().models[0], "score": 1}),
        ),
    ] {
        let message = expect_error(h.post(path, &body).await, 400).await;
        assert!(
            message.contains("`messages` has 4 entries") && message.contains("--max-messages"),
            "{path}: {message}"
        );
    }
    let within = json!({"model": "kroute", "messages": &messages[..3]});
    assert_eq!(h.post("/v1/chat/completions", &within).await.status(), 200);

    let inputs = json!({"input": ["one", "two", "three"]});
    let message = expect_error(h.post("/v1/embeddings", &inputs).await, 400).await;
    assert!(message.contains("--max-inputs"), "{message}");
    let within = json!({"input": ["one", "two"]});
    assert_eq!(h.post("/v1/embeddings", &within).await.status(), 200);

    let large = h
        .http
        .post(format!("{}/v1/route", h.base))
        .header("x-padding", "p".repeat(2000))
        .json(&json!({"input": "hello"}))
        .send()
        .await
        .unwrap();
    let message = expect_error(large, 431).await;
    assert!(message.contains("--max-header-bytes"), "{message}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors_with_their_status() {
    let options = ServeOptions {
        max_body_bytes: 2048,
        max_concurrent_requests: 1,
        ..Default::default()
    };
    let h = start("", options, EngineOptions::default()).await;
    let url = format!("{}/v1/chat/completions", h.base);
    let raw = |body: &'static str| h.http.post(&url).body(body).send();
    expect_error(raw("{not json").await.unwrap(), 400).await;
    let message = expect_error(
        h.post("/v1/chat/completions", &json!({"model": "kroute"}))
            .await,
        400,
    )
    .await;
    assert!(message.contains("messages"), "{message}");
    let message = expect_error(
        h.post("/v1/chat/completions", &json!({"messages": []}))
            .await,
        400,
    )
    .await;
    assert!(message.contains("model"), "{message}");
    let only_system = json!({"model": "kroute", "messages": [{"role": "system", "content": "hi"}]});
    expect_error(h.post("/v1/chat/completions", &only_system).await, 400).await;
    expect_error(h.chat("kroute:alpha=1.5", "hello").await, 400).await;
    let unknown = h.chat("gpt-5-ultra", "hello").await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    expect_error(h.get("/v1/nothing-here").await, 404).await;
    // An oversized body's answer closes its connection: the rest of the body is unread.
    let large = chat_body("kroute", &"long text ".repeat(500), false);
    let too_large = h.post("/v1/chat/completions", &large).await;
    assert_eq!(too_large.headers()["connection"], "close");
    expect_error(too_large, 413).await;
    expect_error(h.post("/v1/embeddings", &json!({"input": 3})).await, 400).await;

    // One request in flight at most: a second one while the first stalls upstream gets 429.
    let text = &fixture().queries[5];
    let model = &ranking(text, &defaults())[0];
    h.mock.set(
        upstream_name(model),
        Behavior::Stall(Duration::from_millis(1500)),
    );
    let first = tokio::spawn({
        let (http, url, body) = (
            h.http.clone(),
            url.clone(),
            chat_body("kroute", text, false),
        );
        async move { http.post(url).json(&body).send().await.unwrap().status() }
    });
    while h.mock.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    expect_error(h.chat("kroute", text).await, 429).await;
    assert_eq!(first.await.unwrap(), 200);
    assert!(h
        .metrics()
        .await
        .contains("kroute_requests_total{endpoint=\"/v1/chat/completions\",status=\"429\"} 1"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_all_answered_and_batched() {
    let h = start("", ServeOptions::default(), EngineOptions::default()).await;
    let queries: Vec<String> = fixture().queries[..64].to_vec();
    let answers = futures_util::future::join_all(queries.iter().map(|text| {
        let (http, url, body) = (
            h.http.clone(),
            format!("{}/v1/chat/completions", h.base),
            chat_body("kroute", text, false),
        );
        async move {
            let response = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let model = header(&response, "x-kroute-model").to_string();
            let body: Value = response.json().await.unwrap();
            (model, body)
        }
    }))
    .await;
    for (text, (model, body)) in queries.iter().zip(&answers) {
        // Batched and single embeddings differ by float noise: the choice must be a best model
        // up to that noise.
        let (models, totals, _) = reference(text, &defaults());
        let chosen = models.iter().position(|m| m == model).unwrap();
        let best = totals.iter().cloned().fold(f32::MIN, f32::max);
        assert!(totals[chosen] >= best - 1e-4, "{text}: {model}");
        assert_eq!(body["model"], upstream_name(model));
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("answer from {}", upstream_name(model))
        );
    }
    let metrics = h.metrics().await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("{name} not in\n{metrics}"))
            .parse()
            .unwrap()
    };
    let batches = value("kroute_embed_batches_total");
    assert_eq!(value("kroute_embedded_texts_total"), 64.0);
    assert!(batches < 64.0, "{batches} encoder batches for 64 requests");
    assert_eq!(value("kroute_batch_requests_count"), batches);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_models_health_and_metrics() {
    let h = start("", ServeOptions::default(), EngineOptions::default()).await;
    let texts = ["How far is the Moon?", "Write a haiku about routers."];
    let body: Value = h
        .post(
            "/v1/embeddings",
            &json!({"input": texts, "model": "anything"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let expected = fixture().embedder.embed_vecs(&texts).unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "sentence-transformers/all-MiniLM-L6-v2");
    for (i, vector) in expected.iter().enumerate() {
        let got: Vec<f32> = serde_json::from_value(body["data"][i]["embedding"].clone()).unwrap();
        assert_eq!(body["data"][i]["index"], i);
        assert!(cosine(&got, vector) > 0.9999);
    }
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 10);
    // base64: little-endian f32, as OpenAI's Python client asks for.
    let body: Value = h
        .post(
            "/v1/embeddings",
            &json!({"input": texts[0], "encoding_format": "base64"}),
        )
        .await
        .json()
        .await
        .unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(decoded.len(), 384);
    assert!(cosine(&decoded, &expected[0]) > 0.9999);

    let models: Value = h.get("/v1/models").await.json().await.unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    let mut expected_ids = vec!["kroute".to_string()];
    expected_ids.extend(load_router().models);
    assert_eq!(ids, expected_ids);

    let health: Value = h.get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ready");
    h.chat("kroute", "What is 2 + 2?").await;
    let metrics = h.metrics().await;
    for stage in [
        "tokenize",
        "queue",
        "embed",
        "route",
        "upstream_first_byte",
        "total",
    ] {
        let count = format!("kroute_latency_seconds_count{{stage=\"{stage}\"}}");
        assert!(metrics.contains(&count), "{count} not in\n{metrics}");
    }
    assert!(metrics.contains("kroute_ready 1"));
    assert!(metrics.contains("kroute_routed_total{model="));
    assert!(metrics.ends_with("# EOF\n"));
    h.shutdown().await;
}

/// `kroute serve` as a process: the port it picked, then SIGTERM while a request is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_finishes_in_flight_requests_on_sigterm() {
    let mock = MockUpstream::start().await;
    let text = &fixture().queries[6];
    let model = &ranking(text, &defaults())[0];
    mock.set(
        upstream_name(model),
        Behavior::Stall(Duration::from_millis(1500)),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kroute.toml");
    std::fs::write(&config, config_text(&mock.base_url, "")).unwrap();
    let router = fixture().router.to_str().unwrap();
    let config = config.to_str().unwrap();

    // A missing key variable stops start-up with the variable's name.
    let (ok, stderr) = common::run(&["serve", "--router", router, "--config", config]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("environment variable {KEY_VAR}")),
        "{stderr}"
    );
    // Embedding flags that would give other vectors than the router's stop start-up too.
    let refused = common::kroute_bin()
        .args([
            "serve", "--router", router, "--config", config, "--prompt", "query: ",
        ])
        .env(KEY_VAR, KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("embedding model mismatch in `prompt`"),
        "{stderr}"
    );

    // At debug level, so that what is never logged is checked where the most is.
    let client_key = "client-secret-key";
    let mut server = ServeProcess::start(
        &[
            "--router",
            router,
            "--config",
            config,
            "--api-key",
            client_key,
        ],
        &[(KEY_VAR, KEY), ("KROUTE_LOG", "debug")],
    )
    .await;
    // Without --host it listens on the loopback interface only.
    assert!(
        server.base.starts_with("http://127.0.0.1:"),
        "{}",
        server.base
    );
    let http = reqwest::Client::new();
    let wrong = http
        .post(format!("{}/v1/route", server.base))
        .bearer_auth("wrong-secret-key")
        .json(&json!({"input": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let in_flight = tokio::spawn({
        let (http, url) = (http.clone(), format!("{}/v1/chat/completions", server.base));
        let body = chat_body("kroute", text, false);
        async move {
            let request = http.post(url).bearer_auth(client_key).json(&body);
            request.send().await.unwrap().status()
        }
    });
    while mock.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.signal("-TERM");
    assert_eq!(in_flight.await.unwrap(), 200);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let log = server.log();
    assert!(log.contains("shutting down"), "{log}");
    // Neither the provider's key, nor a client's (right or wrong), nor the query is logged.
    for secret in [KEY, client_key, "wrong-secret-key", text.as_str()] {
        assert!(!log.contains(secret), "{secret} in {log}");
    }
}

/// `kroute route … | head` ends the command quietly once `head` has what it wants, as a Unix
/// tool does, instead of a panic about the broken pipe.
#[cfg(unix)]
#[test]
fn route_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("queries.txt");
    // Far more decisions than a pipe buffers (each line ranks every model).
    let queries: Vec<String> = (0..400).map(|i| format!("question {i}")).collect();
    std::fs::write(&input, queries.join("\n") + "\n").unwrap();
    let router = fixture().router.to_str().unwrap().to_string();
    let mut child = common::kroute_bin()
        .args([
            "route",
            &router,
            "--input",
            input.to_str().unwrap(),
            "--quiet",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = [0u8; 64];
    child
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut first_line)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
}
