//! `kroute serve`: an OpenAI-compatible HTTP front end. Requests are embedded and routed by the
//! [`Engine`] (the only place tensors live) and forwarded to the chosen model's provider.
//!
//! - [`config`]: `kroute.toml`, where each model is served;
//! - [`openai`]: the wire format: errors, `model` conventions, the text that is routed on;
//! - [`upstream`]: calling a provider and judging a failure;
//! - `chat`, `endpoints`, `feedback`, `admin`: the handlers; [`metrics`]: Prometheus.
//!
//! The served router and configuration are swapped whole on a reload ([`Server::reload`]): a
//! request reads the configuration once and finishes with it.

mod admin;
mod chat;
pub mod config;
mod endpoints;
mod feedback;
pub mod metrics;
pub mod openai;
mod sse;
pub mod tenants;
pub mod trace;
pub mod upstream;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use candle_core::Device;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use config::ServeConfig;
use metrics::Metrics;
use openai::{ApiError, RouteOn};
use tenants::{BudgetNow, RequestTenant, Tenant, Tenants};
use trace::{RequestTrace, Tracing};
use upstream::UpstreamClient;

use crate::embed::Embedder;
use crate::engine::{Decision, Engine, EngineError, EngineOptions, Limits, ReloadReport};
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
    /// Request header bytes at most, names and values (beyond it: 431).
    pub max_header_bytes: usize,
    /// Entries of a `messages` array at most (beyond it: 400).
    pub max_messages: usize,
    /// Texts of an `/v1/embeddings` `input` array at most (beyond it: 400).
    pub max_inputs: usize,
    /// Requests in flight at most (beyond it: 429).
    pub max_concurrent_requests: usize,
    /// Keys accepted by `/v1/feedback` besides the client keys (for a judge or a labelling
    /// pipeline that should not make requests).
    pub feedback_keys: Vec<String>,
    /// The key of `/admin/*`; `None`: those endpoints are refused.
    pub admin_key: Option<String>,
    /// Where a reload reads the configuration and the router from; `None`: no reloads.
    pub reload: Option<ReloadSource>,
    /// The OTLP/HTTP collector traces go to; `None`: no tracing.
    pub otlp_endpoint: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            route_on: RouteOn::LastUser,
            max_fallbacks: 2,
            api_keys: Vec::new(),
            max_body_bytes: 4 << 20,
            max_header_bytes: 64 << 10,
            max_messages: 2048,
            max_inputs: 2048,
            max_concurrent_requests: 512,
            feedback_keys: Vec::new(),
            admin_key: None,
            reload: None,
            otlp_endpoint: None,
        }
    }
}

impl ServeOptions {
    /// Refuses a `messages` array longer than `--max-messages`.
    pub fn check_messages(&self, messages: &[Value]) -> Result<(), ApiError> {
        within_limit(
            "messages",
            messages.len(),
            self.max_messages,
            "--max-messages",
        )
    }

    /// Refuses an `input` array longer than `--max-inputs`.
    pub fn check_inputs(&self, inputs: &[Value]) -> Result<(), ApiError> {
        within_limit("input", inputs.len(), self.max_inputs, "--max-inputs")
    }
}

fn within_limit(field: &str, len: usize, limit: usize, flag: &str) -> Result<(), ApiError> {
    match len <= limit {
        true => Ok(()),
        false => Err(ApiError::bad_request(format!(
            "`{field}` has {len} entries; at most {limit} are accepted ({flag})"
        ))
        .code("too_many_entries")),
    }
}

/// Environment lookups of a configuration (the process environment in production).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What a reload re-reads.
#[derive(Clone)]
pub struct ReloadSource {
    /// `kroute.toml`.
    pub config: PathBuf,
    /// The router directory.
    pub router: PathBuf,
    pub env: EnvLookup,
}

impl std::fmt::Debug for ReloadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadSource")
            .field("config", &self.config)
            .field("router", &self.router)
            .finish_non_exhaustive()
    }
}

/// What every handler shares.
pub struct AppState {
    engine: Engine,
    config: ArcSwap<ServeConfig>,
    options: ServeOptions,
    upstream: UpstreamClient,
    metrics: Arc<Metrics>,
    /// SHA-256 of each client key, compared in constant time (`authorised`).
    key_digests: Vec<[u8; 32]>,
    /// Client keys and feedback keys: who may post outcomes.
    feedback_digests: Vec<[u8; 32]>,
    admin_digest: Option<[u8; 32]>,
    in_flight: Arc<Semaphore>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Where reloaded routers are loaded.
    device: Device,
    tracing: Option<Tracing>,
}

impl AppState {
    /// Embeds and routes `text` for `tenant` within `limits`, recording the engine's timings
    /// (in the metrics and the request's trace) and the choice.
    async fn route(
        &self,
        text: String,
        params: RouteParams,
        limits: Limits,
        tenant: &RequestTenant,
        trace: &RequestTrace,
    ) -> Result<Decision, ApiError> {
        let started = std::time::Instant::now();
        let decision = self
            .engine
            .route_within(text, params, limits)
            .await
            .map_err(|e| {
                if let EngineError::NoModelWithinLimits(_) = e {
                    self.metrics.tenant_refused(tenant.name(), "over_cost");
                }
                engine_error(e)
            })?;
        self.metrics.engine_timings(&decision.timings);
        trace.engine_stages(started, &decision.timings);
        trace.annotate([
            opentelemetry::KeyValue::new("kroute.tenant", tenant.name().to_string()),
            opentelemetry::KeyValue::new("kroute.alpha", decision.params.scoring.alpha()),
        ]);
        self.metrics.routed(decision.model(0), decision.explored);
        self.metrics.tenant_routed(tenant.name(), decision.model(0));
        Ok(decision)
    }

    /// `error`, counted as a refusal of `tenant`'s request by its code.
    fn refused(&self, tenant: &RequestTenant, error: ApiError) -> ApiError {
        let reason = error.code.unwrap_or("policy_violation");
        self.metrics.tenant_refused(tenant.name(), reason);
        error
    }

    /// Where `tenant`'s budget stands now (`None` without one), its α gauge updated.
    fn budget_now(&self, tenant: &RequestTenant, config: &ServeConfig) -> Option<BudgetNow> {
        let alpha = tenant.defaults(config.routing).scoring.alpha();
        let budget = tenant.budget_now(crate::state::now_ms(), alpha, |name, period| {
            self.engine.spent(name, period)
        })?;
        self.metrics.tenant_alpha(tenant.name(), budget.pace.alpha);
        Some(budget)
    }

    /// The configuration as of now (a reload swaps it whole).
    fn config(&self) -> Arc<ServeConfig> {
        self.config.load_full()
    }
}

fn engine_error(error: EngineError) -> ApiError {
    match error {
        EngineError::QueueFull(_) => ApiError::overloaded(error.to_string()),
        EngineError::NoModelWithinLimits(why) => tenants::not_allowed(why),
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
        let device = router.device().clone();
        let engine = Engine::start(embedder, router, engine, Some(observer))?;
        let upstream =
            UpstreamClient::new().map_err(|e| Error::Invalid(format!("HTTP client: {e}")))?;
        let key_digests: Vec<[u8; 32]> = options.api_keys.iter().map(|k| digest(k)).collect();
        let tracing = match &options.otlp_endpoint {
            None => None,
            Some(endpoint) => {
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    Error::Invalid(
                        "--otlp-endpoint needs the server started on a tokio runtime".into(),
                    )
                })?;
                Some(Tracing::start(endpoint, runtime)?)
            }
        };
        let feedback_digests = match options.feedback_keys.is_empty() {
            true => key_digests.clone(),
            false => (options.api_keys.iter().chain(&options.feedback_keys))
                .map(|k| digest(k))
                .collect(),
        };
        Ok(Server {
            state: Arc::new(AppState {
                key_digests,
                feedback_digests,
                admin_digest: options.admin_key.as_deref().map(digest),
                in_flight: Arc::new(Semaphore::new(options.max_concurrent_requests)),
                reloading: tokio::sync::Mutex::new(()),
                device,
                engine,
                config: ArcSwap::from_pointee(config),
                options,
                upstream,
                metrics,
                tracing,
            }),
        })
    }

    /// Re-reads the configuration and the router ([`ServeOptions::reload`]), checks both, and
    /// swaps them in; on any error the running ones keep serving. `discard_learned` allows a
    /// router with other clusters to replace one that has learned outcomes.
    pub async fn reload(&self, discard_learned: bool) -> Result<ReloadReport, String> {
        reload(&self.state, discard_learned).await
    }

    /// The HTTP routes.
    pub fn app(&self) -> axum::Router {
        let api = axum::Router::new()
            .route("/v1/chat/completions", post(chat::chat_completions))
            .route("/v1/embeddings", post(endpoints::embeddings))
            .route("/v1/route", post(endpoints::route))
            .route("/v1/models", get(endpoints::models))
            .route_layer(middleware::from_fn_with_state(self.state.clone(), admit))
            .route_layer(middleware::from_fn_with_state(
                self.state.clone(),
                trace_request,
            ));
        let feedback = axum::Router::new()
            .route("/v1/feedback", post(feedback::feedback))
            .route_layer(middleware::from_fn_with_state(
                self.state.clone(),
                admit_feedback,
            ))
            .route_layer(middleware::from_fn_with_state(
                self.state.clone(),
                trace_request,
            ));
        let admin = axum::Router::new()
            .route("/admin/reload", post(admin::reload))
            .route("/admin/state", get(admin::state))
            .route_layer(middleware::from_fn_with_state(
                self.state.clone(),
                admit_admin,
            ));
        axum::Router::new()
            .merge(api)
            .merge(feedback)
            .merge(admin)
            .route("/health", get(endpoints::health))
            .route("/metrics", get(endpoints::metrics))
            .fallback(|| async { ApiError::not_found("no such endpoint") })
            .layer(middleware::from_fn_with_state(self.state.clone(), count))
            .layer(middleware::from_fn_with_state(
                self.state.clone(),
                limit_headers,
            ))
            .layer(DefaultBodyLimit::max(self.state.options.max_body_bytes))
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting, finishes the
    /// requests in flight and writes a last snapshot of what was learned.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.app())
            .with_graceful_shutdown(shutdown)
            .await?;
        let engine = self.state.engine.clone();
        match tokio::task::spawn_blocking(move || engine.snapshot()).await {
            Ok(Ok(Some(snapshot))) => tracing::info!("last snapshot {}", snapshot.path),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::error!("last snapshot failed (the log holds every outcome): {e}")
            }
            Err(e) => tracing::error!("last snapshot failed: {e}"),
        }
        if let Some(exporter) = self.state.tracing.clone() {
            // The exporter sends through this runtime: wait for it off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
        }
        Ok(())
    }

    /// A handle for reloading while [`Server::run`] serves.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            state: self.state.clone(),
        }
    }
}

/// Reloads a running server (from a signal handler, say).
#[derive(Clone)]
pub struct ServerHandle {
    state: Arc<AppState>,
}

impl ServerHandle {
    /// See [`Server::reload`].
    pub async fn reload(&self, discard_learned: bool) -> Result<ReloadReport, String> {
        reload(&self.state, discard_learned).await
    }
}

async fn reload(state: &Arc<AppState>, discard_learned: bool) -> Result<ReloadReport, String> {
    let _one_at_a_time = state.reloading.lock().await;
    let result = reload_once(state, discard_learned).await;
    match &result {
        Ok(report) => {
            state.metrics.reload("ok");
            tracing::info!(
                "reloaded: router generation {}, models added {:?}, removed {:?}, {} outcomes \
                 carried over",
                report.generation,
                report.added,
                report.removed,
                report.carried_over
            );
        }
        Err(why) => {
            state.metrics.reload("refused");
            tracing::error!(
                "reload refused, the running configuration and router keep serving: {why}"
            );
        }
    }
    result
}

async fn reload_once(state: &Arc<AppState>, discard_learned: bool) -> Result<ReloadReport, String> {
    let source = state
        .options
        .reload
        .clone()
        .ok_or("this server was started without paths to reload from")?;
    let device = state.device.clone();
    let (router, config) = tokio::task::spawn_blocking(move || {
        let mut router = Router::load(&source.router, &device)?;
        let config = ServeConfig::load(&source.config, &router.models, router.defaults, |var| {
            (source.env)(var)
        })?;
        config.reprice(&mut router)?;
        Ok::<_, Error>((router, config))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let report = state.engine.swap_router(router, discard_learned).await?;
    state.config.store(Arc::new(config));
    Ok(report)
}

/// Whether the request's bearer key is one of `digests` (none configured: anyone).
fn authorised(request: &Request, digests: &[[u8; 32]]) -> bool {
    if digests.is_empty() {
        return true;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|key| digest(key.trim()));
    // Every digest is compared in full, in constant time, whichever matches.
    presented.is_some_and(|presented| {
        digests
            .iter()
            .fold(Choice::from(0), |found, d| found | d.ct_eq(&presented))
            .into()
    })
}

/// The tenant whose key the request presents, if any.
fn tenant_of(request: &Request, tenants: &Tenants) -> Option<Arc<Tenant>> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|key| digest(key.trim()))?;
    tenants.by_key(&presented)
}

/// Authentication for `/v1/feedback`: a client key (a tenant's included) or a feedback key.
async fn admit_feedback(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let config = state.config();
    let open = state.feedback_digests.is_empty() && config.tenants.is_empty();
    if !open
        && tenant_of(&request, &config.tenants).is_none()
        && (state.feedback_digests.is_empty() || !authorised(&request, &state.feedback_digests))
    {
        return Err(ApiError::unauthorized());
    }
    admitted(&request, started);
    Ok(next.run(request).await)
}

/// Records the admission span of a traced request.
fn admitted(request: &Request, started: std::time::Instant) {
    if let Some(trace) = request.extensions().get::<RequestTrace>() {
        trace.stage("admission", started, std::time::Instant::now());
    }
}

/// Starts the trace of an API request when the server traces (`--otlp-endpoint`), and ends
/// its span with the response.
async fn trace_request(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(tracing) = &state.tracing else {
        return next.run(request).await;
    };
    let path = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_string(),
        |p| p.as_str().to_string(),
    );
    let name = format!("{} {path}", request.method());
    let trace = tracing.request(name, request.headers(), std::time::Instant::now());
    trace.annotate([
        opentelemetry::KeyValue::new("http.request.method", request.method().to_string()),
        opentelemetry::KeyValue::new("url.path", path),
    ]);
    request.extensions_mut().insert(trace.clone());
    let response = next.run(request).await;
    trace.end(response.status().as_u16());
    response
}

/// Authentication for `/admin/*`: the admin key, and no way in without one configured.
async fn admit_admin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(admin) = state.admin_digest else {
        return Err(ApiError::forbidden(
            "the admin endpoints are off: start kroute serve with --admin-key",
        ));
    };
    if !authorised(&request, &[admin]) {
        return Err(ApiError::unauthorized());
    }
    Ok(next.run(request).await)
}

/// Authentication, the request's tenant and back-pressure for the API routes. With client keys
/// configured (`--api-key` or a tenant's), a request must present one of them.
async fn admit(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let config = state.config();
    let tenant = tenant_of(&request, &config.tenants);
    let open = state.key_digests.is_empty() && config.tenants.is_empty();
    if !open
        && tenant.is_none()
        && (state.key_digests.is_empty() || !authorised(&request, &state.key_digests))
    {
        return Err(ApiError::unauthorized());
    }
    request.extensions_mut().insert(RequestTenant(tenant));
    let _permit = state.in_flight.clone().try_acquire_owned().map_err(|_| {
        ApiError::overloaded(format!(
            "too many requests in flight (--max-concurrent-requests {})",
            state.options.max_concurrent_requests
        ))
    })?;
    admitted(&request, started);
    Ok(next.run(request).await)
}

/// Refuses requests whose headers (names and values) exceed `--max-header-bytes`.
async fn limit_headers(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let limit = state.options.max_header_bytes;
    if bytes > limit {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request_error",
            format!("the request headers are larger than {limit} bytes (--max-header-bytes)"),
        )
        .code("headers_too_large"));
    }
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
