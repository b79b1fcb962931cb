//! OpenTelemetry traces (`kroute serve --otlp-endpoint URL`): one trace per API request, sent
//! to an OTLP collector over HTTP/protobuf.
//!
//! ```text
//! POST /v1/chat/completions      (server; kroute.tenant, kroute.decision_id, kroute.alpha)
//! ├─ admission                   keys, tenant, concurrency
//! ├─ tokenize ─ queue ─ embed ─ route     the engine's stages, from its timings
//! ├─ chat <model>                (client) one per upstream try, with fallbacks; GenAI
//! │                              attributes (gen_ai.request.model, gen_ai.usage.*_tokens)
//! └─ stream                      from the first chunk to the last
//! ```
//!
//! An incoming W3C `traceparent` is continued, and each upstream try sends its own on. Spans
//! are built with the times the request measured anyway, so nothing on the request's path
//! waits on the exporter (a batch processor of the SDK sends them from its own thread). Off,
//! it costs one branch per request. `/health` and `/metrics` are not traced.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::engine::Timings;
use crate::error::{Error, Result};

/// The exporter of a server that traces.
#[derive(Clone)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Tracing {
    /// Exports to `endpoint` (`http://host:4318` gets the OTLP path `/v1/traces`; a URL with a
    /// path is used as it is), sending through `runtime`.
    pub fn start(endpoint: &str, runtime: tokio::runtime::Handle) -> Result<Tracing> {
        let invalid = |e: &dyn std::fmt::Display| Error::Invalid(format!("--otlp-endpoint: {e}"));
        let url = reqwest::Url::parse(endpoint).map_err(|e| invalid(&e))?;
        let url = match url.path() {
            "" | "/" => url.join("/v1/traces").map_err(|e| invalid(&e))?,
            _ => url,
        };
        let client = Sender {
            http: reqwest::Client::new(),
            runtime,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.as_str())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| invalid(&e))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("kroute").build())
            .build();
        let tracer = provider.tracer("kroute");
        Ok(Tracing { provider, tracer })
    }

    /// Starts the trace of a request that arrived at `arrived` (continuing its `traceparent`).
    pub fn request(&self, name: String, headers: &HeaderMap, arrived: Instant) -> RequestTrace {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let clock = Clock::now();
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(clock.at(arrived))
            .start_with_context(&self.tracer, &parent);
        RequestTrace(Some(Arc::new(Traced {
            tracer: self.tracer.clone(),
            cx: parent.with_span(span),
            clock,
        })))
    }

    /// Sends what is waiting and stops the exporter.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("trace exporter shutdown: {e}");
        }
    }
}

/// Maps the request's `Instant`s onto wall-clock time.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    fn now() -> Self {
        Self {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    fn at(&self, instant: Instant) -> SystemTime {
        match instant.checked_duration_since(self.mono) {
            Some(after) => self.wall + after,
            None => self.wall - self.mono.duration_since(instant),
        }
    }
}

struct Traced {
    tracer: SdkTracer,
    /// The request's span as the current one.
    cx: Context,
    clock: Clock,
}

/// The trace of one request (empty when the server does not trace): a request extension.
#[derive(Clone, Default)]
pub struct RequestTrace(Option<Arc<Traced>>);

impl RequestTrace {
    /// Sets attributes of the request's span.
    pub fn annotate(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(traced) = &self.0 {
            traced.cx.span().set_attributes(attributes);
        }
    }

    /// Ends the request's span (its answer has left; a stream's span may end later).
    pub fn end(&self, status: u16) {
        if let Some(traced) = &self.0 {
            let span = traced.cx.span();
            span.set_attribute(KeyValue::new("http.response.status_code", status as i64));
            if status >= 500 {
                span.set_status(Status::error(format!("HTTP {status}")));
            }
            span.end();
        }
    }

    /// A finished child span from `start` to `end`.
    pub fn stage(&self, name: &'static str, start: Instant, end: Instant) {
        if let Some(traced) = &self.0 {
            let mut span = traced
                .tracer
                .span_builder(name)
                .with_start_time(traced.clock.at(start))
                .start_with_context(&traced.tracer, &traced.cx);
            span.end_with_timestamp(traced.clock.at(end));
        }
    }

    /// The engine's stages of a request routed from `started`, laid end to end by its timings.
    pub fn engine_stages(&self, started: Instant, timings: &Timings) {
        if self.0.is_none() {
            return;
        }
        let mut at = started;
        for (name, took) in [
            ("tokenize", timings.tokenize),
            ("queue", timings.queue),
            ("embed", timings.embed),
            ("route", timings.route),
        ] {
            self.stage(name, at, at + took);
            at += took;
        }
    }

    /// A child span that runs until it is ended or dropped (an upstream try, a stream).
    pub fn open(
        &self,
        name: String,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> Option<OpenSpan> {
        let traced = self.0.as_ref()?;
        let span = traced
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&traced.tracer, &traced.cx);
        Some(OpenSpan(traced.cx.with_span(span)))
    }
}

/// A child span in progress; it ends when dropped.
pub struct OpenSpan(Context);

impl OpenSpan {
    pub fn annotate(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        self.0.span().set_attributes(attributes);
    }

    pub fn fail(&self, why: String) {
        self.0.span().set_status(Status::error(why));
    }

    /// The `traceparent` (and `tracestate`) that make a call this span's child.
    pub fn propagation(&self) -> Vec<(String, String)> {
        let mut headers = HeaderMap::new();
        TraceContextPropagator::new().inject_context(&self.0, &mut HeaderInjector(&mut headers));
        headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect()
    }
}

impl Drop for OpenSpan {
    fn drop(&mut self) {
        self.0.span().end();
    }
}

/// The exporter's HTTP client: the server's reqwest, run on its tokio runtime (the SDK's batch
/// processor exports from a thread of its own, outside any runtime).
#[derive(Debug)]
struct Sender {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for Sender {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<Bytes>,
    ) -> std::result::Result<opentelemetry_http::Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let call = self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body);
        let answer = self.runtime.spawn(async move {
            let response = call.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = answer.await??;
        let mut response = opentelemetry_http::Response::new(body);
        *response.status_mut() = status;
        Ok(response)
    }
}
