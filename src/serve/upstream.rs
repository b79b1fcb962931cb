//! Calling a model's provider: one pooled HTTP client, one attempt per call, and a verdict on
//! whether a failed attempt may move to the next-ranked model.

use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::timeout_at;

use super::config::Upstream;

pub type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An answer from the provider that the client will get.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: AnswerBody,
    /// From sending the request to the response head (full answers) or the first chunk
    /// (streams).
    pub first_byte: Duration,
}

pub enum AnswerBody {
    Full(Bytes),
    /// A stream whose first chunk has arrived (so nothing can fail before the client sees it).
    Stream {
        first: Bytes,
        rest: ByteStream,
        /// kroute asked for the usage event, not the client: it is not passed on.
        drop_usage_event: bool,
    },
}

/// An attempt that got no answer worth passing on, before any byte reached the client: the
/// next-ranked model may be tried.
#[derive(Debug)]
pub enum Failure {
    Connect(String),
    Timeout,
    /// 429 or 5xx, with the provider's body.
    Status(StatusCode, Bytes),
    Transport(String),
    /// The configuration in use has no upstream for the model (a reload is switching both).
    Unconfigured,
}

impl Failure {
    /// The `status` label of the upstream error metric.
    pub fn label(&self) -> String {
        match self {
            Failure::Connect(_) => "connect".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Status(status, _) => status.as_u16().to_string(),
            Failure::Transport(_) => "transport".into(),
            Failure::Unconfigured => "unconfigured".into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect error: {e}"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Status(status, _) => write!(f, "HTTP {status}"),
            Failure::Transport(e) => write!(f, "transport error: {e}"),
            Failure::Unconfigured => f.write_str("no upstream configured"),
        }
    }
}

pub enum Outcome {
    Answer(Answer),
    /// The provider refused the request itself (a 4xx other than 429): another model would
    /// refuse it too, so it is passed on as is.
    Rejected(Answer),
    Failed(Failure),
}

pub struct UpstreamClient {
    http: reqwest::Client,
}

impl UpstreamClient {
    pub fn new() -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Self { http })
    }

    /// Sends `body` (a chat request) to `upstream` under its model name. A streamed answer
    /// returns after its first chunk; the upstream's timeout covers everything up to there
    /// (for a full answer: up to its last byte). A priced upstream's stream is asked for its
    /// token usage, so that it can be charged. `propagate`: trace headers to send on.
    pub async fn chat(
        &self,
        upstream: &Upstream,
        body: &Value,
        stream: bool,
        propagate: &[(String, String)],
    ) -> Outcome {
        let mut body = body.clone();
        body["model"] = Value::String(upstream.model.clone());
        let client_asked_usage = body["stream_options"]["include_usage"] == Value::Bool(true);
        let drop_usage_event = stream && upstream.price.is_some() && !client_asked_usage;
        if drop_usage_event {
            match body
                .get_mut("stream_options")
                .and_then(Value::as_object_mut)
            {
                Some(options) => drop(options.insert("include_usage".into(), Value::Bool(true))),
                None => body["stream_options"] = serde_json::json!({"include_usage": true}),
            }
        }
        let mut request = self
            .http
            .post(format!("{}/chat/completions", upstream.base_url))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(key) = &upstream.api_key {
            request = request.header(AUTHORIZATION, format!("Bearer {}", key.expose()));
        }
        for (name, value) in upstream.headers.iter().chain(propagate) {
            request = request.header(name, value);
        }
        let sent = Instant::now();
        let deadline = tokio::time::Instant::now() + upstream.timeout;
        let response = match timeout_at(deadline, request.send()).await {
            Err(_) => return Outcome::Failed(Failure::Timeout),
            Ok(Err(e)) if e.is_connect() => {
                return Outcome::Failed(Failure::Connect(e.to_string()))
            }
            Ok(Err(e)) if e.is_timeout() => return Outcome::Failed(Failure::Timeout),
            Ok(Err(e)) => return Outcome::Failed(Failure::Transport(e.to_string())),
            Ok(Ok(response)) => response,
        };
        let headers_at = sent.elapsed();
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        if stream && status.is_success() {
            let mut rest = response.bytes_stream().boxed();
            return match timeout_at(deadline, rest.next()).await {
                Err(_) => Outcome::Failed(Failure::Timeout),
                Ok(None) => Outcome::Failed(Failure::Transport("empty stream".into())),
                Ok(Some(Err(e))) => Outcome::Failed(Failure::Transport(e.to_string())),
                Ok(Some(Ok(first))) => Outcome::Answer(Answer {
                    status,
                    content_type,
                    first_byte: sent.elapsed(),
                    body: AnswerBody::Stream {
                        first,
                        rest,
                        drop_usage_event,
                    },
                }),
            };
        }
        let body = match timeout_at(deadline, response.bytes()).await {
            Err(_) => return Outcome::Failed(Failure::Timeout),
            Ok(Err(e)) => return Outcome::Failed(Failure::Transport(e.to_string())),
            Ok(Ok(body)) => body,
        };
        if retryable {
            return Outcome::Failed(Failure::Status(status, body));
        }
        let answer = Answer {
            status,
            content_type,
            first_byte: headers_at,
            body: AnswerBody::Full(body),
        };
        match status.is_success() {
            true => Outcome::Answer(answer),
            false => Outcome::Rejected(answer),
        }
    }
}
