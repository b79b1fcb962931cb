//! Serving for teams through HTTP: `[tenants.*]` keys pick a policy (α, allowed models, a cost
//! ceiling, a budget), requests may narrow it and never widen it, and a spent budget holds
//! across a restart. A real router and model, a mock provider.

mod common;

use std::collections::BTreeSet;

use common::serve::*;
use kroute::engine::{EngineOptions, LearningOptions};
use kroute::serve::ServeOptions;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_key_picks_its_policy_and_requests_only_narrow_it() {
    let router = load_router();
    let cheap = router
        .models
        .iter()
        .find(|m| m.as_str() != RENAMED.0)
        .unwrap()
        .clone();
    let allowed = [RENAMED.0.to_string(), cheap.clone()];
    let config = format!(
        "[tenants.research]\napi_keys_env = \"RESEARCH_TENANT_KEYS\"\nalpha = 0.3\n\
         allowed_models = [\"{}\", \"{}\"]\nmax_cost_per_request = 1.0\n",
        allowed[0], allowed[1]
    );
    let h = start(&config, ServeOptions::default(), EngineOptions::default()).await;
    let key = tenant_key("research");
    let text = query_with_a_trade_off();

    // With tenants configured, a request must present a key.
    let no_key = h
        .post_as(
            None,
            "/v1/chat/completions",
            &chat_body("kroute", text, false),
            &[],
        )
        .await;
    expect_error(no_key, 401).await;

    // The tenant's α is its default; only its models are ranked.
    let route = h
        .post_as(Some(&key), "/v1/route", &json!({"input": text}), &[])
        .await;
    assert_eq!(route.status(), 200);
    let route: Value = route.json().await.unwrap();
    assert_eq!(route["tenant"], "research");
    assert_eq!(route["alpha"], 0.3);
    let ranked: BTreeSet<&str> = route["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    assert_eq!(ranked, allowed.iter().map(String::as_str).collect());
    let chat = h
        .post_as(
            Some(&key),
            "/v1/chat/completions",
            &chat_body("kroute", text, false),
            &[],
        )
        .await;
    assert_eq!(chat.status(), 200);
    assert!(allowed.contains(&header(&chat, "x-kroute-model").to_string()));
    assert_eq!(header(&chat, "x-kroute-alpha"), "0.3");

    // Narrower is allowed: a lower α, a subset of the models, a lower ceiling.
    let lower = h
        .post_as(
            Some(&key),
            "/v1/chat/completions",
            &chat_body("kroute:alpha=0.1", text, false),
            &[],
        )
        .await;
    assert_eq!(header(&lower, "x-kroute-alpha"), "0.1");
    let one = h
        .post_as(
            Some(&key),
            "/v1/chat/completions",
            &chat_body("kroute", text, false),
            &[("x-kroute-models", cheap.as_str())],
        )
        .await;
    assert_eq!(header(&one, "x-kroute-model"), cheap);

    // Wider is refused, naming what was asked and what the tenant allows.
    for (model, headers) in [
        ("kroute:alpha=0.9", vec![]),
        ("kroute", vec![("x-kroute-max-cost", "5")]),
    ] {
        let response = h
            .post_as(
                Some(&key),
                "/v1/chat/completions",
                &chat_body(model, text, false),
                &headers,
            )
            .await;
        let message = expect_error(response, 403).await;
        assert!(message.contains("research"), "{message}");
    }
    let outside = router.models.iter().find(|m| !allowed.contains(m)).unwrap();
    let direct = h
        .post_as(
            Some(&key),
            "/v1/chat/completions",
            &chat_body(outside, text, false),
            &[],
        )
        .await;
    assert!(expect_error(direct, 403).await.contains(outside.as_str()));
    let header_outside = h
        .post_as(
            Some(&key),
            "/v1/route",
            &json!({"input": text}),
            &[("x-kroute-models", outside.as_str())],
        )
        .await;
    expect_error(header_outside, 403).await;

    // A ceiling no model meets: refused, naming the cheapest expected cost.
    let too_cheap = h
        .post_as(
            Some(&key),
            "/v1/route",
            &json!({"input": text}),
            &[("x-kroute-max-cost", "1e-12")],
        )
        .await;
    assert!(expect_error(too_cheap, 403)
        .await
        .contains("expected to cost"));

    let metrics = h.metrics().await;
    assert!(
        metrics.contains("kroute_tenant_routed_total{tenant=\"research\""),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "kroute_tenant_refused_total{tenant=\"research\",reason=\"policy_violation\"} 4"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("kroute_tenant_refused_total{tenant=\"research\",reason=\"over_cost\"} 1"),
        "{metrics}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_is_refused_and_stays_spent_after_a_restart() {
    // Only the priced model: each mock answer costs 1000 × $10 + 500 × $30 per Mtok = $0.025.
    let config = format!(
        "[tenants.ops]\napi_keys_env = \"OPS_TENANT_KEYS\"\nallowed_models = [\"{}\"]\n\
         budget_usd = 0.05\nbudget_period = \"1d\"\non_budget_exhausted = \"reject\"\n",
        RENAMED.0
    );
    let state = tempfile::tempdir().unwrap();
    let engine = || EngineOptions {
        learning: LearningOptions {
            state_dir: Some(state.path().to_path_buf()),
            ..Default::default()
        },
        ..Default::default()
    };
    let key = tenant_key("ops");
    let text = query_with_a_trade_off();
    let chat = |h: &Harness| {
        let body = chat_body("kroute", text, false);
        let key = key.clone();
        let request = h
            .http
            .post(format!("{}/v1/chat/completions", h.base))
            .bearer_auth(key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let h = start(&config, ServeOptions::default(), engine()).await;
    for _ in 0..2 {
        assert_eq!(chat(&h).await.status(), 200);
    }
    let spent = chat(&h).await;
    assert!(expect_error(spent, 429).await.contains("budget"));
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("kroute_tenant_cost_usd_total{tenant=\"ops\"} 0.05"),
        "{metrics}"
    );
    h.shutdown().await;

    // The spend is in the state directory: a restarted server still refuses.
    let h = start(&config, ServeOptions::default(), engine()).await;
    let after = chat(&h).await;
    assert!(expect_error(after, 429).await.contains("budget"));
    h.shutdown().await;
}
