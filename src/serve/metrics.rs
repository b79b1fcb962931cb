//! Prometheus metrics of one server (its own registry, so several servers can share a process).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::{BatchReport, ModelLatency, Timings};

type Labels = [(&'static str, String); 1];
type PairLabels = [(&'static str, String); 2];

/// Where a request's latency goes.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Tokenize,
    Queue,
    Embed,
    Route,
    UpstreamFirstByte,
    Total,
    Feedback,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Tokenize => "tokenize",
            Stage::Queue => "queue",
            Stage::Embed => "embed",
            Stage::Route => "route",
            Stage::UpstreamFirstByte => "upstream_first_byte",
            Stage::Total => "total",
            Stage::Feedback => "feedback",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<PairLabels, Counter>,
    routed: Family<Labels, Counter>,
    fallbacks: Family<PairLabels, Counter>,
    upstream_errors: Family<PairLabels, Counter>,
    upstream_cost: Family<Labels, Counter<f64>>,
    explored: Family<Labels, Counter>,
    feedback: Family<PairLabels, Counter>,
    reloads: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    batches: Counter,
    batch_requests: Histogram,
    embedded_texts: Counter,
    ready: Gauge,
    tenant_routed: Family<PairLabels, Counter>,
    tenant_cost: Family<Labels, Counter<f64>>,
    tenant_alpha: Family<Labels, Gauge<f64, AtomicU64>>,
    tenant_refused: Family<PairLabels, Counter>,
    upstream_ttft: Family<Labels, Gauge<f64, AtomicU64>>,
    upstream_ttft_p90: Family<Labels, Gauge<f64, AtomicU64>>,
    upstream_tokens_per_second: Family<Labels, Gauge<f64, AtomicU64>>,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~100 s.
    Histogram::new(exponential_buckets(1e-4, 2.0, 21))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kroute");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests answered, by endpoint and HTTP status",
            requests.clone(),
        );
        let routed = Family::default();
        registry.register(
            "routed",
            "Routing decisions, by chosen model",
            routed.clone(),
        );
        let fallbacks = Family::default();
        registry.register(
            "fallbacks",
            "Requests moved to the next-ranked model, by failed and next model",
            fallbacks.clone(),
        );
        let upstream_errors = Family::default();
        registry.register(
            "upstream_errors",
            "Failed upstream calls, by model and status (an HTTP code, timeout, connect or stream)",
            upstream_errors.clone(),
        );
        let upstream_cost = Family::default();
        registry.register(
            "upstream_cost_usd",
            "Upstream spend from the answers' token usage and the configured prices",
            upstream_cost.clone(),
        );
        let explored = Family::default();
        registry.register(
            "explored",
            "Routing decisions that left the greedy choice to explore, by chosen model",
            explored.clone(),
        );
        let feedback = Family::default();
        registry.register(
            "feedback",
            "Outcomes posted to /v1/feedback, by model and result (recorded, duplicate)",
            feedback.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "reloads",
            "Configuration and router reloads, by result (ok, refused)",
            reloads.clone(),
        );
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "latency_seconds",
            "Request latency by stage: tokenize, queue, embed, route, upstream_first_byte, total, \
             feedback",
            latency.clone(),
        );
        let batches = Counter::default();
        registry.register("embed_batches", "Batches the encoder ran", batches.clone());
        let batch_requests = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "batch_requests",
            "Requests per encoder batch",
            batch_requests.clone(),
        );
        let embedded_texts = Counter::default();
        registry.register("embedded_texts", "Texts embedded", embedded_texts.clone());
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 once the model is loaded and warmed up",
            ready.clone(),
        );
        let tenant_routed = Family::default();
        registry.register(
            "tenant_routed",
            "Routing decisions by tenant (`default`: requests of no tenant) and chosen model",
            tenant_routed.clone(),
        );
        let tenant_cost = Family::default();
        registry.register(
            "tenant_cost_usd",
            "Upstream spend by tenant, from the answers' token usage and the configured prices",
            tenant_cost.clone(),
        );
        let tenant_alpha = Family::default();
        registry.register(
            "tenant_alpha",
            "The α a tenant with a budget was last routed at (its own, lowered by the pacer)",
            tenant_alpha.clone(),
        );
        let tenant_refused = Family::default();
        registry.register(
            "tenant_refused",
            "Requests refused by a tenant's policy, by tenant and reason (policy_violation, \
             budget_exhausted, over_cost)",
            tenant_refused.clone(),
        );
        let upstream_ttft = Family::default();
        registry.register(
            "upstream_ttft_seconds",
            "Exponentially weighted time to first byte by model (the whole answer when not \
             streamed)",
            upstream_ttft.clone(),
        );
        let upstream_ttft_p90 = Family::default();
        registry.register(
            "upstream_ttft_p90_seconds",
            "90th percentile time to first byte by model over the recent answers \
             (--latency-window); max_ttft_ms limits compare with it",
            upstream_ttft_p90.clone(),
        );
        let upstream_tokens_per_second = Family::default();
        registry.register(
            "upstream_output_tokens_per_second",
            "Exponentially weighted output tokens per second by model, from the answers' usage \
             (else their streamed pieces)",
            upstream_tokens_per_second.clone(),
        );
        Metrics {
            registry,
            upstream_ttft,
            upstream_ttft_p90,
            upstream_tokens_per_second,
            tenant_routed,
            tenant_cost,
            tenant_alpha,
            tenant_refused,
            requests,
            routed,
            fallbacks,
            upstream_errors,
            upstream_cost,
            explored,
            feedback,
            reloads,
            latency,
            batches,
            batch_requests,
            embedded_texts,
            ready,
        }
    }
}

impl Metrics {
    pub fn request(&self, endpoint: &str, status: u16) {
        self.requests
            .get_or_create(&[
                ("endpoint", endpoint.into()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    pub fn routed(&self, model: &str, explored: bool) {
        self.routed.get_or_create(&[("model", model.into())]).inc();
        if explored {
            self.explored
                .get_or_create(&[("model", model.into())])
                .inc();
        }
    }

    pub fn tenant_routed(&self, tenant: &str, model: &str) {
        self.tenant_routed
            .get_or_create(&[("tenant", tenant.into()), ("model", model.into())])
            .inc();
    }

    pub fn tenant_cost(&self, tenant: &str, dollars: f64) {
        self.tenant_cost
            .get_or_create(&[("tenant", tenant.into())])
            .inc_by(dollars);
    }

    pub fn tenant_alpha(&self, tenant: &str, alpha: f64) {
        self.tenant_alpha
            .get_or_create(&[("tenant", tenant.into())])
            .set(alpha);
    }

    pub fn tenant_refused(&self, tenant: &str, reason: &str) {
        self.tenant_refused
            .get_or_create(&[("tenant", tenant.into()), ("reason", reason.into())])
            .inc();
    }

    pub fn feedback(&self, model: &str, duplicate: bool) {
        let result = if duplicate { "duplicate" } else { "recorded" };
        self.feedback
            .get_or_create(&[("model", model.into()), ("result", result.into())])
            .inc();
    }

    pub fn reload(&self, result: &str) {
        self.reloads
            .get_or_create(&[("result", result.into())])
            .inc();
    }

    pub fn fallback(&self, from: &str, to: &str) {
        self.fallbacks
            .get_or_create(&[("from", from.into()), ("to", to.into())])
            .inc();
    }

    pub fn upstream_error(&self, model: &str, status: &str) {
        self.upstream_errors
            .get_or_create(&[("model", model.into()), ("status", status.into())])
            .inc();
    }

    /// A model's provider latency after an answer.
    pub fn upstream_latency(&self, model: &str, latency: &ModelLatency) {
        let label = [("model", model.into())];
        self.upstream_ttft
            .get_or_create(&label)
            .set(latency.ttft_ms / 1e3);
        self.upstream_ttft_p90
            .get_or_create(&label)
            .set(latency.p90_ttft_ms / 1e3);
        if let Some(rate) = latency.output_tokens_per_s {
            self.upstream_tokens_per_second
                .get_or_create(&label)
                .set(rate);
        }
    }

    pub fn upstream_cost(&self, model: &str, dollars: f64) {
        self.upstream_cost
            .get_or_create(&[("model", model.into())])
            .inc_by(dollars);
    }

    pub fn latency(&self, stage: Stage, time: Duration) {
        self.latency
            .get_or_create(&[("stage", stage.as_str().into())])
            .observe(time.as_secs_f64());
    }

    /// The engine's share of a request's latency.
    pub fn engine_timings(&self, timings: &Timings) {
        self.latency(Stage::Tokenize, timings.tokenize);
        self.latency(Stage::Queue, timings.queue);
        self.latency(Stage::Embed, timings.embed);
        self.latency(Stage::Route, timings.route);
    }

    pub fn batch(&self, report: &BatchReport) {
        self.batches.inc();
        self.batch_requests.observe(report.requests as f64);
        self.embedded_texts.inc_by(report.texts as u64);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(ready as i64);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
