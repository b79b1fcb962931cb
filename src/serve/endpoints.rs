//! The endpoints that never call a provider: embeddings, routing decisions, the model list,
//! health and metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use base64::Engine as _;
use opentelemetry::KeyValue;
use serde_json::{json, Map, Value};

use super::chat::{DECISION_HEADER, EXPLORED_HEADER};
use super::openai::{parse_model, routing_text, ApiError, ModelChoice, ROUTED_MODEL};
use super::tenants::RequestTenant;
use super::trace::RequestTrace;
use super::{engine_error, AppState, JsonBody};
use crate::engine::Served;

/// `POST /v1/embeddings`: `input` is a string or an array of strings; `encoding_format` is
/// `float` (default) or `base64` (little-endian f32, what OpenAI's Python client asks for).
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let texts: Vec<String> = match body.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) if !items.is_empty() => {
            state.options.check_inputs(items)?;
            items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    ApiError::bad_request("`input` must be a string or an array of strings")
                })?
        }
        _ => {
            return Err(ApiError::bad_request(
                "`input` is required: a string or a non-empty array of strings",
            ))
        }
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`encoding_format` `{other}`: expected float or base64"
            )))
        }
    };
    let embedded = state.engine.embed(texts).await.map_err(engine_error)?;
    state.metrics.engine_timings(&embedded.timings);
    let data: Vec<Value> = embedded
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = match base64 {
                true => {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
                false => json!(vector),
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": state.engine.info().embedding.model,
        "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens},
    })))
}

/// `POST /v1/route`: the decision alone. The text is `input`, or taken from `messages` as for a
/// chat request; `model` may carry settings (`kroute:alpha=0.3`); `explain: true` adds the
/// nearest clusters and each model's score in them. The decision is remembered as answered by
/// the chosen model (`decision_id`, for `/v1/feedback`).
pub async fn route(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<RequestTenant>,
    trace: Option<Extension<RequestTrace>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(ROUTED_MODEL);
    let config = state.config();
    // Every name but `kroute[:settings]` is unknown here: there is nothing to decide.
    let ModelChoice::Routed(asked) =
        parse_model(model, tenant.defaults(config.routing), |_| false)?
    else {
        return Err(ApiError::unknown_model(model));
    };
    let budget = state.budget_now(&tenant, &config);
    let refused = |e| state.refused(&tenant, e);
    let params = tenant.routing(asked, budget.as_ref()).map_err(refused)?;
    let limits = tenant.limits(&headers).map_err(refused)?;
    let text = match (body.get("input"), body.get("messages")) {
        (Some(Value::String(text)), _) => text.clone(),
        (None, Some(Value::Array(messages))) => {
            state.options.check_messages(messages)?;
            routing_text(messages, state.options.route_on)?
        }
        _ => {
            return Err(ApiError::bad_request(
                "give `input` (a string) or `messages` (an array)",
            ))
        }
    };
    let explain = body
        .get("explain")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let logged = state.engine.logs_decisions().then(|| text.clone());
    let trace = trace.map(|t| t.0).unwrap_or_default();
    let decision = state.route(text, params, limits, &tenant, &trace).await?;
    let decision_id = state.engine.remember(&decision, 0);
    trace.annotate([KeyValue::new("kroute.decision_id", decision_id.clone())]);
    if let Some(text) = logged {
        let served = Served {
            endpoint: "route",
            tenant: tenant.name().to_string(),
            decision_id: Some(decision_id.clone()),
            route_time: started.elapsed(),
            ..Served::default()
        };
        state.engine.log_decision(&decision, &text, served);
    }
    let models = &decision.info.models;
    let ranking: Vec<Value> = decision
        .ranking
        .iter()
        .map(|&(m, score)| json!({"model": models[m], "score": score}))
        .collect();
    let mut answer = json!({
        "model": decision.model(0),
        "decision_id": decision_id,
        "explored": decision.explored,
        "alpha": params.scoring.alpha(),
        "tenant": tenant.name(),
        "ranking": ranking,
        "tokens": decision.tokens,
        "truncated": decision.truncated,
        "route_ms": started.elapsed().as_secs_f64() * 1e3,
    });
    if explain {
        answer["clusters"] = decision
            .clusters
            .iter()
            .map(|vote| {
                let scores: Map<String, Value> = models
                    .iter()
                    .cloned()
                    .zip(vote.scores.iter().map(|s| json!(s)))
                    .collect();
                json!({
                    "cluster": vote.cluster,
                    "distance": vote.distance,
                    "weight": vote.weight,
                    "size": vote.size,
                    "scores": scores,
                })
            })
            .collect();
    }
    let mut response = Json(answer).into_response();
    for (name, value) in [
        (DECISION_HEADER, decision_id),
        (EXPLORED_HEADER, decision.explored.to_string()),
    ] {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// `GET /v1/models`: `kroute` (routed) and every model that can be named directly.
pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let entry = |id: &str, owned_by: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": owned_by});
    let data: Vec<Value> = std::iter::once(entry(ROUTED_MODEL, "kroute"))
        .chain(
            state
                .config()
                .upstreams
                .keys()
                .map(|name| entry(name, "upstream")),
        )
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// `GET /health`: 200 once the model is loaded and warmed up, 503 before.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.engine.is_ready() {
        true => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.set_ready(state.engine.is_ready());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
