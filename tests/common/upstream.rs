//! A mock LLM provider on a loopback port: answers `POST /v1/chat/completions` per upstream
//! model name as told (answer, fail, stall, stream), and records every request it gets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use futures_util::stream;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// How the mock answers one upstream model.
#[derive(Debug, Clone, Copy)]
pub enum Behavior {
    /// A chat completion naming the model (the default).
    Answer,
    /// This status with an OpenAI-shaped error body.
    Status(u16),
    /// Nothing for this long, then an answer.
    Stall(Duration),
    /// `chunks` SSE chunks, each after a permit from [`MockUpstream::release`] (the first one
    /// goes out at once), then (with the usage event when the request asked for it,
    /// `stream_options.include_usage`) `data: [DONE]`.
    Stream { chunks: usize },
    /// One SSE chunk, then the connection breaks.
    StreamThenBreak,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub model: String,
    pub authorization: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

struct Mock {
    behaviors: Mutex<HashMap<String, Behavior>>,
    requests: Mutex<Vec<Recorded>>,
    gate: Arc<Semaphore>,
}

pub struct MockUpstream {
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
    mock: Arc<Mock>,
}

impl MockUpstream {
    /// Starts the mock on the current tokio runtime.
    pub async fn start() -> MockUpstream {
        let mock = Arc::new(Mock {
            behaviors: Mutex::default(),
            requests: Mutex::default(),
            gate: Arc::new(Semaphore::new(0)),
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(mock.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MockUpstream {
            base_url: format!("http://{address}/v1"),
            mock,
        }
    }

    pub fn set(&self, model: &str, behavior: Behavior) {
        self.mock
            .behaviors
            .lock()
            .unwrap()
            .insert(model.to_string(), behavior);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.mock.requests.lock().unwrap().clone()
    }

    /// Models of the requests received so far, in order.
    pub fn models_called(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.model).collect()
    }

    /// Lets a streaming answer send its next chunk.
    pub fn release(&self) {
        self.mock.gate.add_permits(1);
    }
}

/// The completion the mock answers with for `model`.
pub fn completion(model: &str) -> Value {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": format!("answer from {model}")}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
    })
}

/// The last event of a stream that asked for its usage: the usage of [`completion`].
pub fn usage_event(model: &str) -> String {
    let usage = json!({"model": model, "choices": [], "usage": completion(model)["usage"]});
    format!("data: {usage}\n\n")
}

/// The text of streamed chunk `i` for `model`.
pub fn chunk(model: &str, i: usize) -> String {
    let delta = json!({"model": model, "choices": [{"index": 0, "delta": {"content": format!("part {i}")}}]});
    format!("data: {delta}\n\n")
}

async fn chat(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let include_usage = body["stream_options"]["include_usage"] == true;
    mock.requests.lock().unwrap().push(Recorded {
        model: model.clone(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        headers: headers.clone(),
        body,
    });
    let behavior = mock
        .behaviors
        .lock()
        .unwrap()
        .get(&model)
        .copied()
        .unwrap_or(Behavior::Answer);
    match behavior {
        Behavior::Answer => Json(completion(&model)).into_response(),
        Behavior::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"error": {"message": format!("mock {code}"), "type": "mock"}})),
        )
            .into_response(),
        Behavior::Stall(time) => {
            tokio::time::sleep(time).await;
            Json(completion(&model)).into_response()
        }
        Behavior::Stream { chunks } => {
            let gate = mock.gate.clone();
            let parts = stream::unfold(0, move |i| {
                let (gate, model) = (gate.clone(), model.clone());
                async move {
                    if i > chunks {
                        return None;
                    }
                    if i > 0 {
                        gate.acquire().await.unwrap().forget();
                    }
                    let text = match (i < chunks, include_usage) {
                        (true, _) => chunk(&model, i),
                        (false, true) => format!("{}data: [DONE]\n\n", usage_event(&model)),
                        (false, false) => "data: [DONE]\n\n".to_string(),
                    };
                    Some((Ok::<_, std::io::Error>(text), i + 1))
                }
            });
            sse(Body::from_stream(parts))
        }
        Behavior::StreamThenBreak => {
            let parts = stream::unfold(0, move |i| {
                let model = model.clone();
                async move {
                    match i {
                        0 => Some((Ok(chunk(&model, 0)), 1)),
                        1 => {
                            // Let the first chunk reach the client before the break.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Some((Err(std::io::Error::other("mock connection broke")), 2))
                        }
                        _ => None,
                    }
                }
            });
            sse(Body::from_stream(parts))
        }
    }
}

fn sse(body: Body) -> Response {
    ([("content-type", "text/event-stream")], body).into_response()
}
