//! `kroute serve`: an OpenAI-compatible HTTP front end. Requests are embedded and routed by the
//! [`Engine`] (the only place tensors live) and forwarded to the chosen model's provider.
//!
//! - [`config`]: `kroute.toml`, where each model is served;
//! - [`openai`]: the wire format: errors, `model` conventions, the text that is routed on;
//! - [`upstream`]: calling a provider and judging a failure;
//! - `chat`, `endpoints`: the handlers; [`metrics`]: Prometheus.

mod chat;
pub mod config;
mod endpoints;
pub mod metrics;
pub mod openai;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use config::ServeConfig;
use metrics::Metrics;
use openai::{ApiError, RouteOn};
use upstream::UpstreamClient;

use crate::embed::Embedder;
use crate::engine::{Decision, Engine, EngineError, EngineOptions};
use crate::error::{Error, Result};
use crate::router::{RouteParams, Router};

/// Server settings that are not about upstreams.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub route_on: RouteOn,
    /// Next-ranked models tried after a failed upstream call.
    pub max_fallbacks: usize,
    /// Client keys; empty: no authentication.
    pub api_keys: Vec<String>,
    pub max_body_bytes: usize,
    /// Requests in flight at most (beyond it: 429).
    pub max_concurrent_requests: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            route_on: RouteOn::LastUser,
            max_fallbacks: 2,
            api_keys: Vec::new(),
            max_body_bytes: 4 << 20,
            max_concurrent_requests: 512,
        }
    }
}

/// What every handler shares.
pub struct AppState {
    engine: Engine,
    config: ServeConfig,
    options: ServeOptions,
    upstream: UpstreamClient,
    metrics: Arc<Metrics>,
    /// SHA-256 of each client key: comparing digests does not leak a key's prefix via timing.
    key_digests: Vec<[u8; 32]>,
    in_flight: Arc<Semaphore>,
}

impl AppState {
    /// Embeds and routes `text`, recording the engine's timings and the choice.
    async fn route(&self, text: String, params: RouteParams) -> Result<Decision, ApiError> {
        let decision = self
            .engine
            .route(text, params)
            .await
            .map_err(engine_error)?;
        self.metrics.engine_timings(&decision.timings);
        self.metrics
            .routed(&self.engine.info().models[decision.best()]);
        Ok(decision)
    }
}

fn engine_error(error: EngineError) -> ApiError {
    match error {
        EngineError::QueueFull(_) => ApiError::overloaded(error.to_string()),
        EngineError::Stopped | EngineError::Failed(_) => ApiError::internal(error.to_string()),
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A kroute server: the engine running, ready to accept connections.
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// Starts the engine (it warms up in the background; `/health` says when it is ready).
    pub fn start(
        embedder: Embedder,
        router: Router,
        engine: EngineOptions,
        config: ServeConfig,
        options: ServeOptions,
    ) -> Result<Server> {
        let metrics = Arc::new(Metrics::default());
        let observer = {
            let metrics = metrics.clone();
            Box::new(move |report: &_| metrics.batch(report))
        };
        let engine = Engine::start(embedder, router, engine, Some(observer));
        let upstream =
            UpstreamClient::new().map_err(|e| Error::Invalid(format!("HTTP client: {e}")))?;
        Ok(Server {
            state: Arc::new(AppState {
                key_digests: options.api_keys.iter().map(|k| digest(k)).collect(),
                in_flight: Arc::new(Semaphore::new(options.max_concurrent_requests)),
                engine,
                config,
                options,
                upstream,
                metrics,
            }),
        })
    }

    /// The HTTP routes.
    pub fn app(&self) -> axum::Router {
        let api = axum::Router::new()
            .route("/v1/chat/completions", post(chat::chat_completions))
            .route("/v1/embeddings", post(endpoints::embeddings))
            .route("/v1/route", post(endpoints::route))
            .route("/v1/models", get(endpoints::models))
            .route_layer(middleware::from_fn_with_state(self.state.clone(), admit));
        axum::Router::new()
            .merge(api)
            .route("/health", get(endpoints::health))
            .route("/metrics", get(endpoints::metrics))
            .fallback(|| async { ApiError::not_found("no such endpoint") })
            .layer(middleware::from_fn_with_state(self.state.clone(), count))
            .layer(DefaultBodyLimit::max(self.state.options.max_body_bytes))
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting and finishes the
    /// requests in flight.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.app())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Authentication and back-pressure for the API routes.
async fn admit(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.key_digests.is_empty() {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|key| digest(key.trim()));
        if !presented.is_some_and(|d| state.key_digests.contains(&d)) {
            return Err(ApiError::unauthorized());
        }
    }
    let _permit = state.in_flight.clone().try_acquire_owned().map_err(|_| {
        ApiError::overloaded(format!(
            "too many requests in flight (--max-concurrent-requests {})",
            state.options.max_concurrent_requests
        ))
    })?;
    Ok(next.run(request).await)
}

/// Counts every answered request by endpoint and status.
async fn count(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    state.metrics.request(&endpoint, response.status().as_u16());
    response
}

/// A JSON request body, with OpenAI-shaped errors for a body that is too large or not JSON.
pub struct JsonBody(pub Value);

impl FromRequest<Arc<AppState>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        ApiError::too_large(state.options.max_body_bytes)
                    }
                    _ => ApiError::bad_request(rejection.body_text()),
                })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    }
}
