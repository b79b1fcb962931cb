//! `POST /v1/chat/completions`: route (or take the named model), forward, fall back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::{stream, StreamExt};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use serde_json::Value;

use super::config::ServeConfig;
use super::metrics::{Metrics, Stage};
use super::openai::{parse_model, routing_text, ApiError, ModelChoice};
use super::sse::{tokens, StreamTap};
use super::tenants::{BudgetNow, RequestTenant};
use super::trace::{OpenSpan, RequestTrace};
use super::upstream::{Answer, AnswerBody, Failure, Outcome};
use super::{AppState, JsonBody};
use crate::engine::{Decision, Engine, Served};
use crate::router::Price;
use crate::state::decision_log::DecisionRow;

const MODEL_HEADER: &str = "x-kroute-model";
const ALPHA_HEADER: &str = "x-kroute-alpha";
const ROUTE_MS_HEADER: &str = "x-kroute-route-ms";
const FALLBACKS_HEADER: &str = "x-kroute-fallbacks";
pub const DECISION_HEADER: &str = "x-kroute-decision-id";
pub const EXPLORED_HEADER: &str = "x-kroute-explored";

/// How the model was picked, for the response headers, remembering the decision and the
/// decision log.
struct Routing {
    decision: Decision,
    time: Duration,
    /// The routed text, when decisions are logged.
    text: Option<String>,
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<RequestTenant>,
    trace: Option<Extension<RequestTrace>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let trace = trace.map(|t| t.0).unwrap_or_default();
    let object = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let model = object
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("`model` is required (a string)"))?;
    let messages = object
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("`messages` is required (an array)"))?;
    state.options.check_messages(messages)?;
    let stream = object
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let config = state.config();
    let defaults = tenant.defaults(config.routing);
    let refused = |e| state.refused(&tenant, e);
    let budget = state.budget_now(&tenant, &config);
    let choice = parse_model(model, defaults, |name| config.upstreams.contains_key(name))?;
    // A tenant whose budget is spent gets the cheapest model, even when it named one.
    let cheapest_only = budget.is_some_and(|b| b.pace.exhausted);
    let (candidates, routing) = match choice {
        ModelChoice::Direct(name) if !cheapest_only => {
            tenant.check_model(&name).map_err(refused)?;
            (vec![name], None)
        }
        choice => {
            let asked = match choice {
                ModelChoice::Routed(params) => params,
                ModelChoice::Direct(_) => defaults,
            };
            let params = tenant.routing(asked, budget.as_ref()).map_err(refused)?;
            let limits = tenant.limits(&headers).map_err(refused)?;
            let text = routing_text(messages, state.options.route_on)?;
            let logged = state.engine.logs_decisions().then(|| text.clone());
            let decision = state.route(text, params, limits, &tenant, &trace).await?;
            let ranked: Vec<String> = (0..decision.ranking.len())
                .take(1 + state.options.max_fallbacks)
                .map(|rank| decision.model(rank).to_string())
                .collect();
            let routing = Routing {
                decision,
                time: started.elapsed(),
                text: logged,
            };
            (ranked, Some(routing))
        }
    };
    let request = Forward {
        body: &body,
        candidates: &candidates,
        stream,
        routing,
        started,
        tenant: &tenant,
        budget: budget.as_ref(),
        trace: &trace,
    };
    forward(&state, &config, request).await
}

/// One request on its way upstream.
struct Forward<'a> {
    body: &'a Value,
    candidates: &'a [String],
    stream: bool,
    routing: Option<Routing>,
    started: Instant,
    tenant: &'a RequestTenant,
    /// Where the answer's cost is charged.
    budget: Option<&'a BudgetNow>,
    trace: &'a RequestTrace,
}

/// Tries the candidates in order until one answers; see [`Outcome`] for what moves on. A
/// routed request's decision is remembered with the model that answered.
async fn forward(
    state: &AppState,
    config: &ServeConfig,
    request: Forward<'_>,
) -> Result<Response, ApiError> {
    let Forward {
        body,
        candidates,
        stream,
        routing,
        started,
        tenant,
        budget,
        trace,
    } = request;
    let metrics = &state.metrics;
    let mut failures: Vec<(String, Failure)> = Vec::new();
    for (attempt, name) in candidates.iter().enumerate() {
        let Some(upstream) = config.upstreams.get(name) else {
            tracing::warn!("{name} has no upstream in the configuration in use; skipped");
            failures.push((name.clone(), Failure::Unconfigured));
            continue;
        };
        let attempt_span = trace.open(
            format!("chat {}", upstream.model),
            SpanKind::Client,
            vec![
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("gen_ai.request.model", upstream.model.clone()),
                KeyValue::new("kroute.model", name.clone()),
                KeyValue::new("kroute.attempt", attempt as i64),
            ],
        );
        let propagate = attempt_span
            .as_ref()
            .map_or_else(Vec::new, OpenSpan::propagation);
        let outcome = state
            .upstream
            .chat(upstream, body, stream, &propagate)
            .await;
        let answer = match outcome {
            Outcome::Answer(answer) => answer,
            Outcome::Rejected(answer) => {
                metrics.upstream_error(name, answer.status.as_str());
                answer
            }
            Outcome::Failed(failure) => {
                if let Some(span) = &attempt_span {
                    span.annotate([KeyValue::new("error.type", failure.label())]);
                    span.fail(failure.to_string());
                }
                metrics.upstream_error(name, &failure.label());
                match candidates.get(attempt + 1) {
                    Some(next) => {
                        tracing::warn!("{name} failed ({failure}); falling back to {next}");
                        metrics.fallback(name, next);
                    }
                    None => tracing::warn!("{name} failed ({failure}); no model left to try"),
                }
                failures.push((name.clone(), failure));
                continue;
            }
        };
        metrics.latency(Stage::UpstreamFirstByte, answer.first_byte);
        // Candidates are the ranking's first models, so the attempt is the rank.
        let decision_id = routing
            .as_ref()
            .map(|routing| state.engine.remember(&routing.decision, attempt));
        let mut headers = vec![
            (MODEL_HEADER, name.clone()),
            (FALLBACKS_HEADER, attempt.to_string()),
        ];
        if let Some(span) = &attempt_span {
            span.annotate([KeyValue::new(
                "http.response.status_code",
                answer.status.as_u16() as i64,
            )]);
        }
        if let Some(id) = &decision_id {
            trace.annotate([
                KeyValue::new("kroute.decision_id", id.clone()),
                KeyValue::new("kroute.model", name.clone()),
            ]);
        }
        if let (Some(routing), Some(id)) = (&routing, &decision_id) {
            let decision = &routing.decision;
            headers.extend([
                (ALPHA_HEADER, decision.params.scoring.alpha().to_string()),
                (
                    ROUTE_MS_HEADER,
                    format!("{:.3}", routing.time.as_secs_f64() * 1e3),
                ),
                (DECISION_HEADER, id.clone()),
                (EXPLORED_HEADER, decision.explored.to_string()),
            ]);
        }
        let log = routing.and_then(|routing| {
            let served = Served {
                endpoint: "chat",
                tenant: tenant.name().to_string(),
                decision_id,
                answered_rank: Some(attempt),
                fallbacks: attempt,
                route_time: routing.time,
                first_byte: Some(answer.first_byte),
                ..Served::default()
            };
            let text = routing.text?;
            state.engine.decision_row(&routing.decision, &text, served)
        });
        let settle = Settle {
            engine: state.engine.clone(),
            metrics: state.metrics.clone(),
            model: name.clone(),
            price: upstream.price.filter(|_| answer.status.is_success()),
            tenant: tenant.name().to_string(),
            period_ms: budget.map(|b| b.period_ms),
            first_byte: answer.first_byte,
            started,
            log,
            attempt_span,
            stream_span: match stream {
                true => trace.open("stream".into(), SpanKind::Internal, Vec::new()),
                false => None,
            },
        };
        let mut response = respond(answer, settle, upstream.timeout);
        for (name, value) in headers {
            if let Ok(value) = HeaderValue::try_from(value) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(name), value);
            }
        }
        return Ok(response);
    }
    if let Some(Routing {
        decision,
        time,
        text: Some(text),
    }) = &routing
    {
        let served = Served {
            endpoint: "chat",
            tenant: tenant.name().to_string(),
            fallbacks: failures.len(),
            route_time: *time,
            total: Some(started.elapsed()),
            ..Served::default()
        };
        state.engine.log_decision(decision, text, served);
    }
    let tried = failures
        .iter()
        .map(|(name, failure)| format!("{name}: {failure}"))
        .collect::<Vec<_>>()
        .join("; ");
    let message = format!("no upstream answered ({tried})");
    Err(match failures.last() {
        Some((_, Failure::Timeout)) => ApiError::gateway_timeout(message),
        _ => ApiError::bad_gateway(message),
    })
}

/// The client's response: the provider's status, content type and body. A stream is passed on
/// event by event as it arrives; if the provider then stalls for longer than `idle` or breaks,
/// the stream is cut (it is too late to fall back). The answer is settled when it is complete.
fn respond(answer: Answer, mut settle: Settle, idle: Duration) -> Response {
    let success = answer.status.is_success();
    let body = match answer.body {
        AnswerBody::Full(bytes) => {
            if success {
                let usage = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|body| tokens(body.get("usage")?));
                settle.answered(usage, None, settle.first_byte);
            }
            settle.log(None, None);
            settle
                .metrics
                .latency(Stage::Total, settle.started.elapsed());
            Body::from(bytes)
        }
        AnswerBody::Stream {
            first,
            rest,
            drop_usage_event,
        } => {
            let mut stream = Streaming {
                tap: StreamTap::new(drop_usage_event),
                first_chunk: Instant::now(),
                settle,
            };
            let first = stream.tap.pass(&first);
            // A break ends the stream with an error event and no `[DONE]`, cleanly: aborting
            // the connection instead could drop the status and first chunk still buffered.
            let rest = stream::unfold(Some((rest, stream)), move |state| async move {
                let (mut rest, mut stream) = state?;
                loop {
                    let why = match tokio::time::timeout(idle, rest.next()).await {
                        Ok(None) => {
                            let tail = stream.end();
                            return (!tail.is_empty()).then_some((Ok(tail), None));
                        }
                        Ok(Some(Ok(chunk))) => {
                            let events = stream.tap.pass(&chunk);
                            match events.is_empty() {
                                true => continue,
                                false => return Some((Ok(events), Some((rest, stream)))),
                            }
                        }
                        Ok(Some(Err(e))) => e.to_string(),
                        Err(_) => format!("no data for {idle:?}"),
                    };
                    return Some((Ok::<_, std::io::Error>(stream.broken(why)), None));
                }
            });
            Body::from_stream(stream::once(async { Ok(first) }).chain(rest))
        }
    };
    let mut response = (answer.status, body).into_response();
    if let Some(content_type) = answer.content_type {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, content_type);
    }
    response
}

/// What a complete answer settles: its cost, charged to its tenant, and its provider's latency.
struct Settle {
    engine: Engine,
    metrics: Arc<Metrics>,
    model: String,
    /// `None` for an unpriced model or an answer that is not a success.
    price: Option<Price>,
    tenant: String,
    /// The tenant's budget period, when it has a budget.
    period_ms: Option<u64>,
    first_byte: Duration,
    started: Instant,
    /// The decision's log row, completed and logged once the answer is complete.
    log: Option<DecisionRow>,
    /// The upstream try's span and the stream's (when traced): they end with the answer.
    attempt_span: Option<OpenSpan>,
    stream_span: Option<OpenSpan>,
}

impl Settle {
    /// Settles an answer whose provider reported `usage` (else `pieces` of output, counted in
    /// a stream) that took `generating` to produce.
    fn answered(&mut self, usage: Option<(u64, u64)>, pieces: Option<u64>, generating: Duration) {
        let cost = self.charge(usage);
        self.log(usage, cost);
        if let (Some(span), Some((input, output))) = (&self.attempt_span, usage) {
            span.annotate([
                KeyValue::new("gen_ai.usage.input_tokens", input as i64),
                KeyValue::new("gen_ai.usage.output_tokens", output as i64),
            ]);
        }
        if let (Some(span), Some(pieces)) = (&self.stream_span, pieces) {
            span.annotate([KeyValue::new("kroute.stream.pieces", pieces as i64)]);
        }
        let output = usage.map(|(_, output)| output).or(pieces);
        let latency = self.engine.observe_latency(
            &self.model,
            self.first_byte,
            output.map(|tokens| (tokens, generating)),
        );
        self.metrics.upstream_latency(&self.model, &latency);
    }

    /// Charges the answer's cost, where it is priced and its usage known.
    fn charge(&self, usage: Option<(u64, u64)>) -> Option<f64> {
        let (input, output) = usage?;
        let cost = self.price?.cost(input, output);
        self.metrics.upstream_cost(&self.model, cost);
        self.metrics.tenant_cost(&self.tenant, cost);
        if let Some(period_ms) = self.period_ms {
            if let Err(e) = self.engine.charge(&self.tenant, period_ms, cost) {
                tracing::error!("spend of tenant `{}` not recorded: {e}", self.tenant);
            }
        }
        Some(cost)
    }

    /// Logs the decision (once) with what its answer used and cost.
    fn log(&mut self, usage: Option<(u64, u64)>, cost: Option<f64>) {
        let Some(row) = self.log.take() else { return };
        self.engine.log_row(DecisionRow {
            total_ms: Some(self.started.elapsed().as_secs_f64() * 1e3),
            input_tokens: usage.map(|(input, _)| input),
            output_tokens: usage.map(|(_, output)| output),
            cost_usd: cost,
            ..row
        });
    }
}

/// A stream on its way to the client.
struct Streaming {
    tap: StreamTap,
    first_chunk: Instant,
    settle: Settle,
}

impl Streaming {
    /// The stream ended as it should: settles it and returns its unterminated tail.
    fn end(&mut self) -> Bytes {
        let tap = &self.tap;
        let generating = self.first_chunk.elapsed();
        self.settle
            .answered(tap.usage, Some(tap.pieces), generating);
        self.tap.rest()
    }

    /// The event that tells the client the stream broke.
    fn broken(&self, why: String) -> Bytes {
        let model = &self.settle.model;
        tracing::warn!("{model}'s stream broke after streaming began ({why}); not falling back");
        self.settle.metrics.upstream_error(model, "stream");
        if let Some(span) = &self.settle.stream_span {
            span.fail(why.clone());
        }
        ApiError::bad_gateway(format!(
            "{model}'s stream broke after streaming began: {why}"
        ))
        .code("stream_broken")
        .stream_event()
    }
}

/// Records a stream's total latency when the stream ends (or the client goes away).
impl Drop for Streaming {
    fn drop(&mut self) {
        let settle = &self.settle;
        settle
            .metrics
            .latency(Stage::Total, settle.started.elapsed());
    }
}
