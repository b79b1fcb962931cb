//! Latency as an objective, through HTTP: streamed answers are charged and measured like full
//! ones, and a model whose provider turns slow loses traffic under a time-to-first-byte limit,
//! and regains it once it recovers. A real router and model, a mock provider.

mod common;

use std::time::Duration;

use common::serve::*;
use common::upstream::Behavior;
use kroute::engine::EngineOptions;
use kroute::router::ModelMask;
use kroute::serve::ServeOptions;
use serde_json::{json, Value};

/// Streams `body` as `key`, letting the mock's `chunks` chunks out, and returns the text.
async fn stream(h: &Harness, key: &str, body: &Value, chunks: usize) -> (u16, String) {
    let response = h
        .post_as(Some(key), "/v1/chat/completions", body, &[])
        .await;
    for _ in 0..chunks {
        h.mock.release();
    }
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answers_are_charged_and_the_usage_kroute_asked_for_stays_private() {
    // Only the priced model: each answer costs 1000 × $10 + 500 × $30 per Mtok = $0.025.
    let config = format!(
        "[tenants.ops]\napi_keys_env = \"OPS_TENANT_KEYS\"\nallowed_models = [\"{}\"]\n\
         budget_usd = 0.05\non_budget_exhausted = \"reject\"\n",
        RENAMED.0
    );
    let h = start(&config, ServeOptions::default(), EngineOptions::default()).await;
    h.mock.set(RENAMED.1, Behavior::Stream { chunks: 2 });
    let key = tenant_key("ops");
    let text = query_with_a_trade_off();

    // The client did not ask for usage: kroute asks for it and keeps the event to itself.
    let (status, plain) = stream(&h, &key, &chat_body("kroute", text, true), 2).await;
    assert_eq!(status, 200, "{plain}");
    assert!(plain.ends_with("data: [DONE]\n\n"), "{plain}");
    assert!(!plain.contains("usage"), "{plain}");
    // The client asked: it gets the event as the provider sent it.
    let mut asked = chat_body("kroute", text, true);
    asked["stream_options"] = json!({"include_usage": true});
    let (status, with_usage) = stream(&h, &key, &asked, 2).await;
    assert_eq!(status, 200);
    assert!(
        with_usage.contains(&common::upstream::usage_event(RENAMED.1)),
        "{with_usage}"
    );
    for request in h.mock.requests() {
        assert_eq!(request.body["stream_options"]["include_usage"], true);
    }

    // Two streamed answers spent the budget.
    let spent = stream(&h, &key, &chat_body("kroute", text, true), 0).await;
    assert_eq!(spent.0, 429, "{}", spent.1);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("kroute_tenant_cost_usd_total{tenant=\"ops\"} 0.05"),
        "{metrics}"
    );
    // Two pieces in each answer's time, but the provider's usage counts the tokens: 500.
    let rate = gauge(
        &metrics,
        "kroute_upstream_output_tokens_per_second",
        RENAMED.0,
    );
    assert!(rate > 500.0, "{rate}");
    h.shutdown().await;
}

/// The value of a gauge with `model` as its label.
fn gauge(metrics: &str, name: &str, model: &str) -> f64 {
    let prefix = format!("{name}{{model=\"{model}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
        .parse()
        .unwrap()
}

/// The model that answered a routed chat request with `headers`.
async fn answered_by(h: &Harness, text: &str, headers: &[(&str, &str)]) -> String {
    let body = chat_body("kroute", text, false);
    let response = h
        .post_as(None, "/v1/chat/completions", &body, headers)
        .await;
    assert_eq!(response.status(), 200);
    header(&response, "x-kroute-model").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_model_loses_traffic_under_a_ttft_limit_and_regains_it_when_it_recovers() {
    let window = Duration::from_millis(1500);
    let engine = EngineOptions {
        latency_window: window,
        ..Default::default()
    };
    let h = start("", ServeOptions::default(), engine).await;
    let text = query_with_a_trade_off();
    let limit = [("x-kroute-max-ttft-ms", "150")];
    let best = ranking(text, &defaults())[0].clone();
    h.mock.set(
        upstream_name(&best),
        Behavior::Stall(Duration::from_millis(400)),
    );

    // Unmeasured, the router's choice qualifies: it answers, slowly.
    assert_eq!(answered_by(&h, text, &limit).await, best);
    let metrics = h.metrics().await;
    assert!(gauge(&metrics, "kroute_upstream_ttft_p90_seconds", &best) >= 0.4);
    // Now its p90 is over the limit: the request goes elsewhere; without the limit, not.
    let other = answered_by(&h, text, &limit).await;
    assert_ne!(other, best);
    assert_eq!(answered_by(&h, text, &[]).await, best);

    // With latency weighing fully, the faster of the two ranks first.
    let pair = format!("{best},{other}");
    let weighed = [
        ("x-kroute-models", pair.as_str()),
        ("x-kroute-latency-weight", "1"),
    ];
    let route = h
        .post_as(None, "/v1/route", &json!({"input": text}), &weighed)
        .await;
    let route: Value = route.json().await.unwrap();
    assert_eq!(route["ranking"][0]["model"], other.as_str(), "{route}");

    // It recovers; its slow answers still count until they age out of the window.
    h.mock.set(upstream_name(&best), Behavior::Answer);
    assert_eq!(answered_by(&h, text, &limit).await, other);
    tokio::time::sleep(window + Duration::from_millis(100)).await;
    // Unmeasured again, it is tried, found fast, and keeps the traffic.
    for _ in 0..3 {
        assert_eq!(answered_by(&h, text, &limit).await, best);
    }

    // A limit or weight out of range is a 400 naming the header.
    for bad in [
        ("x-kroute-max-ttft-ms", "0"),
        ("x-kroute-latency-weight", "2"),
    ] {
        let response = h
            .post_as(None, "/v1/route", &json!({"input": text}), &[bad])
            .await;
        assert!(expect_error(response, 400).await.contains(bad.0));
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_a_model_is_measured_its_training_latency_counts() {
    let text = query_with_a_trade_off();
    let mut router = load_router();
    // The router's order of its first two models when routing among those two alone.
    let ranked = ranking(text, &defaults());
    let pair: Vec<usize> = ranked[..2]
        .iter()
        .map(|name| router.models.iter().position(|m| m == name).unwrap())
        .collect();
    let query = fixture().embedder.embed(&[text]).unwrap();
    let among = router
        .route_among(&query, &defaults(), ModelMask::of(pair.clone()).unwrap())
        .unwrap()
        .ranking(0);
    let (first, second) = (
        router.models[among[0]].clone(),
        router.models[among[1]].clone(),
    );
    // As if the training records had said the router's choice is slow and the other fast.
    router.training.mean_latency_s = [(first.clone(), 30.0), (second.clone(), 0.1)].into();
    let mock = common::upstream::MockUpstream::start().await;
    let h = start_serving(
        router,
        mock,
        "",
        ServeOptions::default(),
        EngineOptions::default(),
    )
    .await;
    let pair = format!("{first},{second}");
    let first_of = |weight: &'static str| {
        let headers = [
            ("x-kroute-models", pair.clone()),
            ("x-kroute-latency-weight", weight.to_string()),
        ];
        let h = &h;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let route = h
                .post_as(None, "/v1/route", &json!({"input": text}), &headers)
                .await;
            let route: Value = route.json().await.unwrap();
            route["ranking"][0]["model"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(first_of("0").await, first);
    assert_eq!(first_of("1").await, second);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_latency_policy_applies_and_requests_only_tighten_it() {
    let config = "[tenants.live]\napi_keys_env = \"LIVE_TENANT_KEYS\"\nmax_ttft_ms = 500\n\
                  latency_weight = 0.3\n";
    let h = start(config, ServeOptions::default(), EngineOptions::default()).await;
    let key = tenant_key("live");
    let text = query_with_a_trade_off();
    let route = |headers: Vec<(&'static str, &'static str)>| {
        let key = key.clone();
        let h = &h;
        async move {
            h.post_as(Some(&key), "/v1/route", &json!({"input": text}), &headers)
                .await
        }
    };
    assert_eq!(route(vec![]).await.status(), 200);
    let tighter = vec![
        ("x-kroute-max-ttft-ms", "200"),
        ("x-kroute-latency-weight", "0.5"),
    ];
    assert_eq!(route(tighter).await.status(), 200);
    for wider in [
        ("x-kroute-max-ttft-ms", "900"),
        ("x-kroute-latency-weight", "0.1"),
    ] {
        let message = expect_error(route(vec![wider]).await, 403).await;
        assert!(
            message.contains("live") && message.contains(wider.0),
            "{message}"
        );
    }
    h.shutdown().await;
}
