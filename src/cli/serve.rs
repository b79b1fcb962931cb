use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kroute::engine::{EngineOptions, LearningOptions};
use kroute::router::{Exploration, Router};
use kroute::serve::openai::RouteOn;
use kroute::serve::{ReloadSource, ServeConfig, ServeOptions, Server, ServerHandle};
use kroute::settings::EmbedderSettings;
use kroute::state::decision_log::DecisionLogOptions;
use kroute::{default_batch_tokens, Error, Result};

use super::args::{parse_duration, FeedbackArgs};

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
  POST /v1/feedback          an outcome: {\"decision_id\": \"...\" (x-kroute-decision-id), \"score\": 0..1
                             or \"verdict\": \"good\"|\"bad\", \"model\", \"cost\"}; or {\"input\"|\"messages\",
                             \"model\", \"score\"}. Idempotency-Key header: counted once.
  GET  /v1/models, /health (200 once warmed up), /metrics (Prometheus)
  POST /admin/reload         re-read kroute.toml and the router (as SIGHUP does); --admin-key
  GET  /admin/state          what the router learned and decided since start; --admin-key

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

    /// Largest request headers accepted (bytes, names and values together); larger get 431.
    #[arg(long, default_value_t = 64 << 10, env = "KROUTE_MAX_HEADER_BYTES")]
    pub max_header_bytes: usize,

    /// Entries of a request's `messages` array at most; more get 400.
    #[arg(long, default_value_t = 2048, env = "KROUTE_MAX_MESSAGES")]
    pub max_messages: usize,

    /// Texts of an /v1/embeddings `input` array at most; more get 400.
    #[arg(long, default_value_t = 2048, env = "KROUTE_MAX_INPUTS")]
    pub max_inputs: usize,

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

    /// Keys accepted by /v1/feedback besides the client keys (for a judge or a labelling
    /// pipeline; repeat or comma-separate). Without them, /v1/feedback takes the client keys.
    #[arg(
        long = "feedback-key",
        env = "KROUTE_FEEDBACK_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub feedback_keys: Vec<String>,

    /// The key of /admin/reload and /admin/state (`Authorization: Bearer KEY`). Without it
    /// those endpoints answer 403; SIGHUP still reloads.
    #[arg(long, env = "KROUTE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Keep what the router learns here: every accepted outcome is logged and fsynced before
    /// it is acknowledged, the learned router is snapshotted (DIR/snapshot is a router
    /// directory), and a restart picks up where it stopped. Without it learning lasts as long
    /// as the process.
    #[arg(long, value_name = "DIR", env = "KROUTE_STATE")]
    pub state: Option<PathBuf>,

    /// How often the learned router is snapshotted into --state (when outcomes arrived).
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "KROUTE_SNAPSHOT_EVERY")]
    pub snapshot_every: Duration,

    /// Routing decisions remembered for /v1/feedback (the oldest are dropped).
    #[arg(long, default_value_t = 1_000_000, env = "KROUTE_MAX_DECISIONS")]
    pub max_decisions: usize,

    /// Decisions older than this are dropped too.
    #[arg(long, default_value = "7d", value_parser = parse_duration, env = "KROUTE_DECISION_TTL")]
    pub decision_ttl: Duration,

    /// How long a provider's measured latency counts: `max_ttft_ms` and `latency_weight`
    /// (tenant blocks and request headers) use the answers of this window, and a model skipped
    /// for being slow is tried again once its slow answers have aged out.
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "KROUTE_LATENCY_WINDOW")]
    pub latency_window: Duration,

    /// Log every routing decision (tenant, a hash of the query, α, the ranked models with
    /// their scores, the voting clusters, the model that answered, fallbacks, latency, tokens,
    /// cost) and every outcome posted for one, as Parquet files in DIR for `kroute replay`.
    /// Each file is written whole once it is complete (see --decision-log-rotate).
    #[arg(long, value_name = "DIR", env = "KROUTE_DECISION_LOG")]
    pub decision_log: Option<PathBuf>,

    /// A decision log file is written once it holds this many rows or is this old (whichever
    /// comes first; N,DURATION). A killed server loses at most the file being gathered.
    #[arg(long, default_value = "100000,1m", value_name = "ROWS,DURATION", value_parser = parse_rotation)]
    pub decision_log_rotate: (usize, Duration),

    /// Put the routed texts themselves in the decision log (else only their SHA-256). A log
    /// with texts can be replayed against a router with other clusters or another model.
    #[arg(long, requires = "decision_log")]
    pub log_queries: bool,

    /// Send a trace of every API request to this OpenTelemetry collector (OTLP over
    /// HTTP/protobuf, e.g. http://localhost:4318; a URL without a path gets /v1/traces). Spans:
    /// admission, tokenize, queue, embed, route, each upstream try (GenAI attributes) and the
    /// stream; an incoming `traceparent` is continued and sent on upstream. Off by default.
    #[arg(long, value_name = "URL", env = "KROUTE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    #[command(flatten)]
    pub feedback: FeedbackArgs,

    /// Leave the greedy choice now and then, so that a model that improved is chosen and its
    /// outcomes seen: `optimistic` ranks with every model's shift at the upper end of what its
    /// outcomes allow (exploring goes to the model whose improvement would matter most), `screen`
    /// lifts only the models whose outcomes still allow an improvement of 0.3 (one outcome no
    /// better than the model's training level rules it out; with `screen:R`, outcomes R times
    /// likelier without it than with it: larger odds miss fewer changes and cost more looks)
    /// and so looks at each model a few times and then stops (a change once found is not looked
    /// at again: the model is learned from the outcomes it gets as the greedy choice),
    /// `thompson` draws each voting cluster's accuracies and each model's shift from their
    /// posteriors, `epsilon:E` sends a share E to a random other model, `off` never explores.
    /// Explored answers carry `x-kroute-explored: true`.
    #[arg(
        long,
        default_value = "off",
        value_name = "off|optimistic|screen[:R]|thompson|epsilon:E",
        env = "KROUTE_EXPLORE"
    )]
    pub explore: Exploration,

    /// Share of routed requests that may leave the greedy choice at most.
    #[arg(long, default_value_t = 0.1, env = "KROUTE_EXPLORE_MAX_SHARE")]
    pub explore_max_share: f64,

    /// Seed of the exploration draws, for reproducible runs [default: random].
    #[arg(long)]
    pub explore_seed: Option<u64>,

    #[command(flatten)]
    pub embedder: EmbedderSettings,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let device = args.embedder.device.open()?;
    let mut router = Router::load(&args.router, &device)?;
    let config = ServeConfig::load(&args.config, &router.models, router.defaults, |var| {
        std::env::var(var).ok()
    })?;
    for repriced in config.reprice(&mut router)? {
        tracing::info!(
            "`{}` repriced from kroute.toml: {} cells, mean cost per answer {:?} → {:?}",
            repriced.model,
            repriced.cells,
            repriced.mean_cost_before,
            repriced.mean_cost_after
        );
    }
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
        learning: LearningOptions {
            max_decisions: args.max_decisions,
            decision_ttl: args.decision_ttl,
            half_life: args.feedback.feedback_half_life,
            exploration: args.explore,
            max_explore_share: args.explore_max_share,
            explore_seed: args.explore_seed,
            state_dir: args.state.clone(),
            snapshot_every: args.snapshot_every,
        },
        latency_window: args.latency_window,
        decision_log: args.decision_log.map(|dir| DecisionLogOptions {
            dir,
            max_rows: args.decision_log_rotate.0,
            rotate_every: args.decision_log_rotate.1,
            log_queries: args.log_queries,
        }),
    };
    let options = ServeOptions {
        route_on: args.route_on,
        max_fallbacks: args.max_fallbacks,
        api_keys: args.api_keys,
        max_body_bytes: args.max_body_bytes,
        max_header_bytes: args.max_header_bytes,
        max_messages: args.max_messages,
        max_inputs: args.max_inputs,
        max_concurrent_requests: args.max_concurrent_requests,
        feedback_keys: args.feedback_keys,
        admin_key: args.admin_key,
        reload: Some(ReloadSource {
            config: args.config.clone(),
            router: args.router.clone(),
            env: Arc::new(|var| std::env::var(var).ok()),
        }),
        otlp_endpoint: args.otlp_endpoint,
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
        tokio::spawn(reload_on_hangup(server.handle()));
        tracing::info!(
            "listening on http://{address} ({upstreams} models, {auth}); GET /health turns 200 once warmed up"
        );
        server
            .run(listener, shutdown_signal())
            .await
            .map_err(|e| Error::Invalid(format!("server: {e}")))
    })
}

/// SIGHUP: re-read kroute.toml and the router; a refused reload leaves the server as it was.
async fn reload_on_hangup(server: ServerHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration and the router");
            // The outcome is logged (and counted in kroute_reloads_total) by the reload.
            let _ = server.reload(false).await;
        }
    }
    #[cfg(not(unix))]
    drop(server);
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

/// `ROWS,DURATION` of --decision-log-rotate.
fn parse_rotation(text: &str) -> std::result::Result<(usize, Duration), String> {
    let (rows, every) = text
        .split_once(',')
        .ok_or_else(|| format!("expected ROWS,DURATION (e.g. 100000,1m), got {text:?}"))?;
    let rows: usize = rows
        .trim()
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("ROWS must be a positive whole number, got {rows:?}"))?;
    Ok((rows, parse_duration(every.trim())?))
}
