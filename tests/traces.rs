//! OpenTelemetry traces through HTTP: `kroute serve --otlp-endpoint` exports to a real OTLP
//! receiver (the official protobuf messages, decoded here) one trace per API request, continuing
//! the incoming `traceparent`, with the span tree the docs promise and the trace sent on to
//! each upstream try; `/health` and `/metrics` are not traced. A real router and model, a mock
//! provider.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::serve::*;
use common::upstream::Behavior;
use kroute::engine::EngineOptions;
use kroute::serve::ServeOptions;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

type Spans = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP receiver on a loopback port: every span it is sent.
async fn receiver() -> (String, Spans) {
    async fn export(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export");
        let mut spans = spans.lock().unwrap();
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        ExportTraceServiceResponse::default().encode_to_vec()
    }
    let spans = Spans::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(export))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

fn attribute(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone()?.value)
}

fn text(span: &Span, key: &str) -> String {
    match attribute(span, key) {
        Some(AnyValue::StringValue(s)) => s,
        other => panic!("{key} of {}: {other:?}", span.name),
    }
}

fn number(span: &Span, key: &str) -> i64 {
    match attribute(span, key) {
        Some(AnyValue::IntValue(n)) => n,
        other => panic!("{key} of {}: {other:?}", span.name),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_exports_its_span_tree_and_continues_the_callers_trace() {
    let (url, spans) = receiver().await;
    let options = ServeOptions {
        otlp_endpoint: Some(url),
        ..Default::default()
    };
    let h = start("", options, EngineOptions::default()).await;
    let query = query_with_a_trade_off();
    let ranked = ranking(query, &defaults());
    h.mock.set(upstream_name(&ranked[0]), Behavior::Status(500));

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let routed = h
        .http
        .post(format!("{}/v1/chat/completions", h.base))
        .header("traceparent", format!("00-{trace_id}-{caller}-01"))
        .json(&chat_body("kroute", query, false))
        .send()
        .await
        .unwrap();
    assert_eq!(routed.status(), 200);
    assert_eq!(header(&routed, "x-kroute-model"), ranked[1]);
    let decision_id = header(&routed, "x-kroute-decision-id").to_string();
    h.mock.set(RENAMED.1, Behavior::Stream { chunks: 1 });
    let streamed = h
        .post("/v1/chat/completions", &chat_body(RENAMED.0, query, true))
        .await;
    h.mock.release();
    assert!(streamed.text().await.unwrap().ends_with("[DONE]\n\n"));
    assert_eq!(h.get("/health").await.status(), 200);
    h.metrics().await;
    let upstream_calls = h.mock.requests();
    // Stopping the server sends what the exporter holds.
    h.shutdown().await;

    let spans = spans.lock().unwrap().clone();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("health") || n.contains("metrics")),
        "{names:?}"
    );
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "POST /v1/chat/completions")
        .collect();
    assert_eq!(roots.len(), 2, "{names:?}");

    // The routed request continues the caller's trace.
    let root = roots
        .iter()
        .find(|s| hex::encode(&s.trace_id) == trace_id)
        .expect("the caller's trace");
    assert_eq!(hex::encode(&root.parent_span_id), caller);
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(text(root, "kroute.decision_id"), decision_id);
    assert_eq!(text(root, "kroute.tenant"), "default");
    assert_eq!(text(root, "kroute.model"), ranked[1]);
    assert_eq!(number(root, "http.response.status_code"), 200);
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == root.span_id)
        .collect();
    let child_names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    for stage in ["admission", "tokenize", "queue", "embed", "route"] {
        assert!(
            child_names.contains(&stage),
            "{stage} missing: {child_names:?}"
        );
    }
    // One span per upstream try: the failed first choice, then the fallback that answered.
    let tries: Vec<&&Span> = children
        .iter()
        .filter(|s| s.name.starts_with("chat "))
        .collect();
    assert_eq!(tries.len(), 2, "{child_names:?}");
    let (failed, answered) = match number(tries[0], "kroute.attempt") {
        0 => (tries[0], tries[1]),
        _ => (tries[1], tries[0]),
    };
    assert_eq!(text(failed, "kroute.model"), ranked[0]);
    assert_eq!(text(failed, "error.type"), "500");
    assert_eq!(
        text(answered, "gen_ai.request.model"),
        upstream_name(&ranked[1])
    );
    assert_eq!(answered.kind, SpanKind::Client as i32);
    assert_eq!(number(answered, "gen_ai.usage.input_tokens"), 1000);
    assert_eq!(number(answered, "gen_ai.usage.output_tokens"), 500);
    // Each try sent its own span on as the upstream call's parent.
    for try_span in [failed, answered] {
        let expected = format!("00-{trace_id}-{}-01", hex::encode(&try_span.span_id));
        assert!(
            upstream_calls.iter().any(|r| r
                .headers
                .get("traceparent")
                .is_some_and(|v| v.to_str().unwrap() == expected)),
            "no upstream call carried {expected}"
        );
    }

    // The streamed request: a trace of its own, with the stream's span.
    let other = roots
        .iter()
        .find(|s| hex::encode(&s.trace_id) != trace_id)
        .unwrap();
    assert!(other.parent_span_id.is_empty());
    let stream = spans
        .iter()
        .find(|s| s.name == "stream" && s.parent_span_id == other.span_id)
        .expect("a stream span");
    assert_eq!(number(stream, "kroute.stream.pieces"), 1);
    assert!(stream.end_time_unix_nano >= stream.start_time_unix_nano);
}
