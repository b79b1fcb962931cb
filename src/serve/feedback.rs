//! `POST /v1/feedback`: an outcome for a decision (`decision_id`) or for a text (`input` or
//! `messages`, with `model`), as a `score` in [0, 1] or a `verdict`, with an optional `cost`.
//! Bodies are read strictly: every error names the field.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::metrics::Stage;
use super::openai::{routing_text, ApiError};
use super::{AppState, JsonBody};
use crate::engine::{EngineError, FeedbackError, FeedbackRequest, FeedbackTarget, LookupError};

const FIELDS: [&str; 7] = [
    "decision_id",
    "input",
    "messages",
    "model",
    "score",
    "verdict",
    "cost",
];
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
const MAX_KEY_LENGTH: usize = 256;

pub async fn feedback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let request = parse(&state, &headers, &body)?;
    let receipt = state
        .engine
        .feedback(request)
        .await
        .map_err(feedback_error)?;
    state.metrics.feedback(&receipt.model, receipt.duplicate);
    state.metrics.latency(Stage::Feedback, started.elapsed());
    Ok(Json(json!(receipt)))
}

fn parse(state: &AppState, headers: &HeaderMap, body: &Value) -> Result<FeedbackRequest, ApiError> {
    let object = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field `{unknown}`; the fields are {}",
            FIELDS.map(|f| format!("`{f}`")).join(", ")
        )));
    }
    let text = |field: &str| -> Result<Option<String>, ApiError> {
        match object.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!(
                "`{field}` must be a non-empty string"
            ))),
        }
    };
    let routing = state.config().routing;
    let target = match (text("decision_id")?, text("input")?, object.get("messages")) {
        (Some(id), None, None) => FeedbackTarget::Decision(id),
        (None, Some(input), None) => FeedbackTarget::Text {
            text: input,
            params: routing,
        },
        (None, None, Some(Value::Array(messages))) => FeedbackTarget::Text {
            text: {
                state.options.check_messages(messages)?;
                routing_text(messages, state.options.route_on)?
            },
            params: routing,
        },
        (None, None, Some(_)) => {
            return Err(ApiError::bad_request(
                "`messages` must be an array of messages",
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `decision_id` (from x-kroute-decision-id), `input` or \
                 `messages`",
            ))
        }
    };
    let score = match (object.get("score"), object.get("verdict")) {
        (Some(score), None) => match score.as_f64() {
            Some(s) if (0.0..=1.0).contains(&s) => s,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "`score` must be a number in [0, 1], got {score}"
                )))
            }
        },
        (None, Some(verdict)) => match verdict.as_str() {
            Some("good") => 1.0,
            Some("bad") => 0.0,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "`verdict` must be \"good\" or \"bad\", got {verdict}"
                )))
            }
        },
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give `score` or `verdict`, not both"))
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "`score` (a number in [0, 1]) or `verdict` (\"good\" or \"bad\") is required",
            ))
        }
    };
    let cost = match object.get("cost") {
        None | Some(Value::Null) => None,
        Some(cost) => match cost.as_f64() {
            Some(c) if c.is_finite() && c >= 0.0 => Some(c),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "`cost` must be a number of dollars ≥ 0, got {cost}"
                )))
            }
        },
    };
    Ok(FeedbackRequest {
        target,
        model: text("model")?,
        score,
        cost,
        idempotency_key: idempotency_key(headers)?,
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LENGTH => Ok(Some(key.to_string())),
        _ => Err(ApiError::bad_request(format!(
            "the Idempotency-Key header must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"
        ))),
    }
}

fn feedback_error(error: FeedbackError) -> ApiError {
    let message = error.to_string();
    match error {
        FeedbackError::Lookup(LookupError::Unknown(_) | LookupError::Expired(_)) => {
            ApiError::not_found(message).code("decision_not_found")
        }
        FeedbackError::Lookup(LookupError::UnknownModel { .. }) | FeedbackError::Invalid(_) => {
            ApiError::bad_request(message)
        }
        FeedbackError::Lookup(LookupError::Replaced { .. } | LookupError::InProgress { .. })
        | FeedbackError::KeyInProgress(_) => ApiError::conflict(message),
        FeedbackError::Engine(EngineError::QueueFull(_)) => ApiError::overloaded(message),
        FeedbackError::Engine(_) => ApiError::internal(message),
        FeedbackError::Storage(_) => ApiError::unavailable(message),
    }
}
