//! The OpenAI wire format as far as kroute reads it: errors, the `model` field's routing
//! conventions, and the text of a chat request that gets embedded.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::router::RouteParams;

/// The `model` name that asks kroute to route.
pub const ROUTED_MODEL: &str = "kroute";

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code: None,
        }
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing or invalid API key: send `Authorization: Bearer <key>`",
        )
        .code("invalid_api_key")
    }

    pub fn unknown_model(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("the model `{model}` does not exist; GET /v1/models lists the models"),
        )
        .code("model_not_found")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "invalid_request_error", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_request_error", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than {limit} bytes (--max-body-bytes)"),
        )
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
    }

    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "upstream_error", message)
    }
}

impl ApiError {
    fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": null,
            "code": self.code,
        }})
    }

    /// The error as the last event of a server-sent stream whose status has already gone out
    /// (OpenAI's SDKs raise on a `data:` event that carries `error`).
    pub fn stream_event(&self) -> Bytes {
        Bytes::from(format!("data: {}\n\n", self.body()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is left unread and the server may drop the connection once
            // it has answered; saying so keeps a client from sending its next request on it.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// What a request's `model` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelChoice {
    /// Route with these settings.
    Routed(RouteParams),
    /// Call this model directly.
    Direct(String),
}

/// Reads `model`: `kroute` routes with `defaults`; `kroute:alpha=0.3` (also `top_p=`, `beta=`,
/// comma-separated) overrides them; any name in `known` is called directly.
pub fn parse_model(
    model: &str,
    defaults: RouteParams,
    known: impl Fn(&str) -> bool,
) -> Result<ModelChoice, ApiError> {
    let settings = match model.split_once(':') {
        None if model == ROUTED_MODEL => "",
        Some((ROUTED_MODEL, settings)) => settings,
        _ if known(model) => return Ok(ModelChoice::Direct(model.to_string())),
        _ => return Err(ApiError::unknown_model(model)),
    };
    let mut params = defaults;
    for setting in settings.split(',').filter(|s| !s.is_empty()) {
        let bad = |why: &str| {
            ApiError::bad_request(format!(
                "model `{model}`: `{setting}` {why}; expected e.g. `kroute:alpha=0.3` \
                 (settings: alpha, top_p, beta)"
            ))
        };
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| bad("is not key=value"))?;
        match key.trim() {
            "alpha" => {
                let alpha: f64 = value.trim().parse().map_err(|_| bad("is not a number"))?;
                params.scoring = params.scoring.at_alpha(alpha);
            }
            "top_p" => params.top_p = value.trim().parse().map_err(|_| bad("is not a count"))?,
            "beta" => params.beta = value.trim().parse().map_err(|_| bad("is not a number"))?,
            _ => return Err(bad("is unknown")),
        }
    }
    params
        .validate()
        .map_err(|e| ApiError::bad_request(format!("model `{model}`: {e}")))?;
    Ok(ModelChoice::Routed(params))
}

/// Which messages of a chat request are embedded for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RouteOn {
    /// The last user message.
    LastUser,
    /// Every user message, joined by newlines.
    AllUser,
    /// Every message of the conversation, joined by newlines.
    Conversation,
}

/// The text of `messages` that routing embeds.
pub fn routing_text(messages: &[Value], route_on: RouteOn) -> Result<String, ApiError> {
    let is_user = |m: &&Value| m.get("role").and_then(Value::as_str) == Some("user");
    let chosen: Vec<&Value> = match route_on {
        RouteOn::LastUser => messages.iter().rev().find(is_user).into_iter().collect(),
        RouteOn::AllUser => messages.iter().filter(is_user).collect(),
        RouteOn::Conversation => messages.iter().collect(),
    };
    let texts = chosen
        .into_iter()
        .map(message_text)
        .collect::<Result<Vec<_>, _>>()?;
    let text = texts.join("\n");
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(match route_on {
            RouteOn::Conversation => "`messages` has no text to route on",
            _ => "`messages` has no user message with text to route on",
        }));
    }
    Ok(text)
}

/// A message's text: `content` as a string, or the `text` of its `type: "text"` parts.
fn message_text(message: &Value) -> Result<String, ApiError> {
    match message.get("content") {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n")),
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => Err(ApiError::bad_request(
            "`messages[].content` must be a string or an array of content parts",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Scoring;

    fn known(name: &str) -> bool {
        name == "gpt-4"
    }

    #[test]
    fn model_names_route_or_pass_through() {
        let defaults = RouteParams::default();
        assert_eq!(
            parse_model("kroute", defaults, known).unwrap(),
            ModelChoice::Routed(defaults)
        );
        let ModelChoice::Routed(params) =
            parse_model("kroute:alpha=0.3,top_p=2", defaults, known).unwrap()
        else {
            panic!("routed")
        };
        assert_eq!(params.scoring, Scoring::Paper { alpha: 0.3 });
        assert_eq!(params.top_p, 2);
        assert_eq!(
            parse_model("gpt-4", defaults, known).unwrap(),
            ModelChoice::Direct("gpt-4".into())
        );
        let unknown = parse_model("gpt-5", defaults, known).unwrap_err();
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        for bad in [
            "kroute:alpha=2",
            "kroute:alpha=x",
            "kroute:gamma=1",
            "kroute:alpha",
        ] {
            let err = parse_model(bad, defaults, known).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn routing_text_follows_route_on() {
        let messages: Vec<Value> = serde_json::from_str(
            r#"[{"role":"system","content":"be brief"},
                {"role":"user","content":"first"},
                {"role":"assistant","content":"ok"},
                {"role":"user","content":[{"type":"text","text":"second"},{"type":"image_url"}]}]"#,
        )
        .unwrap();
        assert_eq!(
            routing_text(&messages, RouteOn::LastUser).unwrap(),
            "second"
        );
        assert_eq!(
            routing_text(&messages, RouteOn::AllUser).unwrap(),
            "first\nsecond"
        );
        assert_eq!(
            routing_text(&messages, RouteOn::Conversation).unwrap(),
            "be brief\nfirst\nok\nsecond"
        );
        let no_user = &messages[..1];
        assert!(routing_text(no_user, RouteOn::LastUser).is_err());
    }
}
