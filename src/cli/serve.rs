use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kroute::engine::EngineOptions;
use kroute::router::Router;
use kroute::serve::openai::RouteOn;
use kroute::serve::{ServeConfig, ServeOptions, Server};
use kroute::{default_batch_tokens, Error, Result};

use super::args::EmbedderArgs;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute serve --router router --config kroute.toml
  KROUTE_API_KEYS=key1,key2 kroute serve --router router --config kroute.toml --port 9000

Endpoints (OpenAI-compatible):
  POST /v1/chat/completions  model \"kroute\" routes (\"kroute:alpha=0.3\" sets α for the request), a
                             model name calls that model; stream: true passes SSE through.
                             Headers: x-kroute-model, x-kroute-alpha, x-kroute-route-ms.
  POST /v1/embeddings        local embeddings (input: string or array; encoding_format float|base64)
  POST /v1/route             the decision only: {\"input\": \"...\"} or {\"messages\": [...]}, explain
  GET  /v1/models, /health (200 once warmed up), /metrics (Prometheus)

kroute.toml says where each of the router's models is served:
  [upstream.default]                  # every model without a block of its own
  base_url = \"https://llm-gateway.example/v1\"
  api_key_env = \"GATEWAY_API_KEY\"     # the env var holding the key (keys are never logged)
  [upstream.\"gpt-4-1106-preview\"]
  model = \"gpt-4-turbo\"               # name sent upstream; also timeout_s, price, headers
An optional [routing] table sets alpha, top_p and beta for model \"kroute\".
Every flag can also be set by its environment variable (shown in brackets).")]
pub struct ServeArgs {
    /// Router directory written by `kroute train`.
    #[arg(long, env = "KROUTE_ROUTER")]
    pub router: PathBuf,

    /// Upstream configuration (TOML).
    #[arg(long, env = "KROUTE_CONFIG")]
    pub config: PathBuf,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "KROUTE_HOST")]
    pub host: String,

    /// Port to listen on (0: any free port; the log line says which).
    #[arg(long, default_value_t = 8080, env = "KROUTE_PORT")]
    pub port: u16,

    /// Which messages of a chat request are embedded for routing.
    #[arg(long, value_enum, default_value = "last-user", env = "KROUTE_ROUTE_ON")]
    pub route_on: RouteOn,

    /// Next-ranked models tried when a model's provider fails (connect error, timeout, 429 or
    /// 5xx) before the answer has begun.
    #[arg(long, default_value_t = 2, env = "KROUTE_MAX_FALLBACKS")]
    pub max_fallbacks: usize,

    /// Client API keys (repeat or comma-separate); requests must send `Authorization: Bearer
    /// KEY`. None: no authentication.
    #[arg(
        long = "api-key",
        env = "KROUTE_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Largest request body accepted (bytes); larger ones get 413.
    #[arg(long, default_value_t = 4 << 20, env = "KROUTE_MAX_BODY_BYTES")]
    pub max_body_bytes: usize,

    /// Requests in flight at most; more get 429.
    #[arg(long, default_value_t = 512, env = "KROUTE_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: usize,

    /// Requests waiting for the embedding model at most; more get 429.
    #[arg(long, default_value_t = 1024, env = "KROUTE_MAX_QUEUE")]
    pub max_queue: usize,

    /// How long a batch waits for requests that are already being tokenized (milliseconds); a
    /// lone request on an idle server never waits.
    #[arg(long, default_value_t = 2.0, env = "KROUTE_BATCH_WAIT_MS")]
    pub batch_wait_ms: f64,

    #[command(flatten)]
    pub embedder: EmbedderArgs,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let device = args.embedder.device.open()?;
    let router = Router::load(&args.router, &device)?;
    let config = ServeConfig::load(&args.config, &router.models, router.defaults, |var| {
        std::env::var(var).ok()
    })?;
    let embedder = args.embedder.load_for(&router)?;
    if !(args.batch_wait_ms >= 0.0 && args.batch_wait_ms.is_finite()) {
        return Err(Error::Invalid(format!(
            "--batch-wait-ms must be ≥ 0, got {}",
            args.batch_wait_ms
        )));
    }
    let engine = EngineOptions {
        max_batch_tokens: args
            .embedder
            .max_batch_tokens
            .unwrap_or_else(|| default_batch_tokens(&device)),
        max_batch_wait: Duration::from_secs_f64(args.batch_wait_ms / 1e3),
        max_queue: args.max_queue,
    };
    let options = ServeOptions {
        route_on: args.route_on,
        max_fallbacks: args.max_fallbacks,
        api_keys: args.api_keys,
        max_body_bytes: args.max_body_bytes,
        max_concurrent_requests: args.max_concurrent_requests,
    };
    let upstreams = config.upstreams.len();
    let auth = match options.api_keys.is_empty() {
        true => "no client keys",
        false => "client keys required",
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Error::Invalid(e.to_string()))?;
    runtime.block_on(async move {
        let address = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| Error::Invalid(format!("cannot listen on {address}: {e}")))?;
        // The port the OS picked for --port 0.
        let address = listener
            .local_addr()
            .map_err(|e| Error::Invalid(format!("{address}: {e}")))?;
        let server = Server::start(embedder, router, engine, config, options)?;
        tracing::info!(
            "listening on http://{address} ({upstreams} models, {auth}); GET /health turns 200 once warmed up"
        );
        server
            .run(listener, shutdown_signal())
            .await
            .map_err(|e| Error::Invalid(format!("server: {e}")))
    })
}

/// Ctrl-C or SIGTERM: stop accepting, finish what is in flight.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
