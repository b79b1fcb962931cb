//! The model side of a server: a bounded queue, a dynamic batcher and a model thread that embeds
//! and routes, and the router's life while it serves: decisions remembered, outcomes taken in,
//! state kept durable, routers swapped. Callers hand in text and get back plain vectors and
//! decisions; tensors never leave this module, and nothing here knows about HTTP.
//!
//! ```text
//! caller (async) ── tokenize (blocking pool) ──▶ queue ──▶ batcher thread ──▶ model thread
//!        ▲                                    (bounded)   groups jobs up to a    owns the router:
//!        └──────────────────────── oneshot reply ◀─────── token budget and      encodes, routes,
//!                                                         prepares the batch    replies per job
//! outcome ──▶ journal thread: log append, one fsync per group ──▶ model thread: observe
//!        ◀──────────────────────── acknowledged after the fsync ──┘  (before its next batch)
//! ```
//!
//! The batcher prepares the next batch (padding, masks, tensors) while the model thread runs the
//! current one, so under load requests accumulate into large batches instead of serialising.
//! The model thread alone owns the router: outcomes reach it as messages taken between batches,
//! so routing never waits on a lock, and a request sent after an outcome was acknowledged is
//! routed with it.

mod batcher;
mod decisions;
mod latency;
mod learning;
mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::oneshot;

pub use decisions::LookupError;
pub use latency::{LatencyBook, ModelLatency};
pub use learning::{
    FeedbackError, FeedbackReceipt, FeedbackRequest, FeedbackTarget, LearningOptions,
    LearningState, ModelCounts, SnapshotInfo,
};
pub use model::{LearnedSummary, ModelChange, ReloadReport};

use crate::embed::{EmbeddingInfo, Tokens};
use crate::router::{RouteParams, Router};
use crate::state::decision_log::{DecisionLog, DecisionLogOptions, DecisionRow, OutcomeRow};
use crate::state::spend::{PeriodSpend, SpendLedger};
use crate::Embedder;

/// Batching, back-pressure and learning settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Real tokens per batch at most (a larger single request still runs, in its own batch).
    pub max_batch_tokens: usize,
    /// How long a batch may wait for requests that are already being tokenized. An idle engine
    /// never waits for a lone request.
    pub max_batch_wait: Duration,
    /// Requests waiting for the model at most; more are refused with [`EngineError::QueueFull`].
    pub max_queue: usize,
    pub learning: LearningOptions,
    /// Provider latencies older than this are forgotten ([`LatencyBook`]).
    pub latency_window: Duration,
    /// Where every decision and outcome is logged, if anywhere.
    pub decision_log: Option<DecisionLogOptions>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_batch_tokens: 2048,
            max_batch_wait: Duration::from_millis(2),
            max_queue: 1024,
            learning: LearningOptions::default(),
            latency_window: Duration::from_secs(300),
            decision_log: None,
        }
    }
}

/// What the engine reports about each batch it ran (for metrics).
#[derive(Debug, Clone, Copy)]
pub struct BatchReport {
    /// Requests in the batch.
    pub requests: usize,
    /// Texts in the batch.
    pub texts: usize,
    /// Real tokens, and tokens the encoder ran (padding included).
    pub tokens: usize,
    pub padded_tokens: usize,
    pub seconds: f64,
}

type BatchObserver = Box<dyn Fn(&BatchReport) + Send + Sync>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the embedding queue is full ({0} requests waiting); retry later")]
    QueueFull(usize),
    /// The request's [`Limits`] leave no model to route to.
    #[error("{0}")]
    NoModelWithinLimits(String),
    #[error("the engine has stopped")]
    Stopped,
    #[error("{0}")]
    Failed(String),
}

/// Where a request's time went inside the engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub tokenize: Duration,
    /// From entering the queue to its batch starting on the model.
    pub queue: Duration,
    /// The batch's encoder time (shared by every request in it).
    pub embed: Duration,
    pub route: Duration,
    /// Requests in the batch this one ran in.
    pub batch_requests: usize,
}

/// What became of a decision, for the decision log.
#[derive(Debug, Clone, Default)]
pub struct Served {
    /// `chat` (an answer was forwarded) or `route` (a decision only).
    pub endpoint: &'static str,
    pub tenant: String,
    pub decision_id: Option<String>,
    /// The rank of the model that answered; `None` when none did or nothing was forwarded.
    pub answered_rank: Option<usize>,
    /// Models that failed before the one that answered (or before giving up).
    pub fallbacks: usize,
    /// From the request's arrival to the decision.
    pub route_time: Duration,
    pub first_byte: Option<Duration>,
    pub total: Option<Duration>,
    /// `(input, output)` tokens as the provider reported them.
    pub usage: Option<(u64, u64)>,
    pub cost: Option<f64>,
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a routing may choose (a tenant's policy, narrowed by its request); the default limits
/// nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Only these models, by name (names the router lacks are ignored); `None`: every model.
    pub allowed: Option<Arc<BTreeSet<String>>>,
    /// Models whose expected cost for the query (the vote-weighted mean of their voting cells'
    /// cost estimates) is above this many dollars are skipped.
    pub max_cost: Option<f64>,
    /// Models whose recent 90th percentile time to first byte is above this many milliseconds
    /// are skipped while another qualifies (an unmeasured model qualifies).
    pub max_ttft_ms: Option<f64>,
    /// Weight `w` in [0, 1] of latency beside the router's score: models are ranked by
    /// `(1 − w)·s̃ + w·(1 − l̃)`, with `s̃` the min-max normalised routing totals and `l̃` the
    /// min-max normalised time to first byte (for a model not yet measured: its training mean,
    /// else 0).
    pub latency_weight: f64,
}

/// Embeddings of one request, in input order.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
    pub timings: Timings,
}

/// A routing decision for one text.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The router it was made with; model indices below are into its `models`.
    pub info: Arc<EngineInfo>,
    pub params: RouteParams,
    /// Model indices with their totals, best first; equal totals keep model order. When the
    /// decision explored, the first is the explored model and the totals are the drawn ones.
    pub ranking: Vec<(usize, f32)>,
    /// The nearest clusters, nearest first.
    pub clusters: Vec<ClusterVote>,
    /// The first model is not the greedy choice (see [`LearningOptions::exploration`]).
    pub explored: bool,
    /// Each model's expected cost for the query, in model order, when the request's
    /// [`Limits::max_cost`] asked for it (empty otherwise).
    pub expected_costs: Vec<Option<f64>>,
    pub tokens: usize,
    /// The text was longer than the model's limit and was cut.
    pub truncated: bool,
    pub timings: Timings,
}

impl Decision {
    /// The chosen model's index.
    pub fn best(&self) -> usize {
        self.ranking[0].0
    }

    /// The name of the model ranked `rank` (0: the chosen one).
    pub fn model(&self, rank: usize) -> &str {
        &self.info.models[self.ranking[rank].0]
    }
}

/// One cluster's part in a decision.
#[derive(Debug, Clone)]
pub struct ClusterVote {
    pub cluster: usize,
    pub distance: f32,
    pub weight: f32,
    /// Training queries in the cluster.
    pub size: usize,
    /// Each model's score there (None: no data for the model in this cluster).
    pub scores: Vec<Option<f64>>,
}

/// The router being served.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// The router's models, in its order.
    pub models: Vec<String>,
    /// The router's stored routing parameters.
    pub defaults: RouteParams,
    pub embedding: EmbeddingInfo,
    /// [`crate::state::clusters_id`] of its clusters.
    pub clusters: String,
    /// Routers swapped in since start (0: the first).
    pub generation: u64,
}

impl EngineInfo {
    fn of(router: &Router, embedding: EmbeddingInfo, generation: u64) -> crate::Result<Self> {
        Ok(Self {
            models: router.models.clone(),
            defaults: router.defaults,
            embedding,
            clusters: crate::state::clusters_id(router)?,
            generation,
        })
    }
}

/// A handle on the running engine; cheap to clone. The threads stop once every handle is gone
/// and the queued work is answered.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

struct Shared {
    embedder: Arc<Embedder>,
    info: Arc<ArcSwap<EngineInfo>>,
    queue: SyncSender<Job>,
    max_queue: usize,
    /// Requests between arrival and the queue (being tokenized): the batcher waits for these.
    incoming: Arc<AtomicUsize>,
    ready: Arc<AtomicBool>,
    learning: learning::Learning,
    spend: Arc<SpendLedger>,
    latency: Arc<LatencyBook>,
    decision_log: Option<DecisionLog>,
}

struct Job {
    /// Taken by the batcher; the counts below stay.
    tokens: Vec<Tokens>,
    texts: usize,
    token_count: usize,
    truncated: bool,
    work: Work,
    tokenize: Duration,
    enqueued: Instant,
}

enum Work {
    Embed(oneshot::Sender<Result<Embeddings, EngineError>>),
    /// Route with these settings; `explore`: the decision may leave the greedy choice.
    Route {
        params: RouteParams,
        limits: Limits,
        explore: bool,
        reply: oneshot::Sender<Result<Decision, EngineError>>,
    },
}

impl Work {
    fn fail(self, error: EngineError) {
        // A caller that went away no longer needs its answer.
        match self {
            Work::Embed(reply) => drop(reply.send(Err(error))),
            Work::Route { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

impl Engine {
    /// Brings the router up to the state directory's saved state (when there is one), then
    /// starts the batcher, model and learning threads. The model thread first warms up (one
    /// embedding and one routing pass), then [`Engine::is_ready`] turns true.
    pub fn start(
        embedder: Embedder,
        mut router: Router,
        options: EngineOptions,
        observer: Option<BatchObserver>,
    ) -> crate::Result<Engine> {
        let recovery = learning::recover(&options.learning, &mut router)?;
        let info = Arc::new(ArcSwap::from_pointee(EngineInfo::of(
            &router,
            EmbeddingInfo::of(&embedder),
            0,
        )?));
        let embedder = Arc::new(embedder);
        let (queue, queued) = sync_channel(options.max_queue);
        // Rendezvous: the batcher holds one prepared batch while the model runs another.
        let (to_model, batches) = crossbeam_channel::bounded(0);
        let (control, controls) = crossbeam_channel::unbounded();
        let incoming = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let max_queue = options.max_queue;
        let (learning, model_learning) =
            learning::Learning::start(&options.learning, recovery, control, info.clone())?;
        let spend = open_spend(options.learning.state_dir.as_deref())?;
        let latency = Arc::new(LatencyBook::new(options.latency_window));
        let decision_log = options
            .decision_log
            .clone()
            .map(DecisionLog::open)
            .transpose()?;
        {
            let (embedder, incoming) = (embedder.clone(), incoming.clone());
            let options = options.clone();
            thread::Builder::new()
                .name("kroute-batcher".into())
                .spawn(move || batcher::run(&embedder, queued, to_model, &incoming, &options))
                .expect("spawn the batcher thread");
        }
        {
            let model = model::ModelThread::new(
                embedder.clone(),
                router,
                info.clone(),
                model_learning,
                latency.clone(),
                observer,
            );
            let ready = ready.clone();
            thread::Builder::new()
                .name("kroute-model".into())
                .spawn(move || model.run(batches, controls, &ready))
                .expect("spawn the model thread");
        }
        Ok(Engine {
            shared: Arc::new(Shared {
                embedder,
                info,
                queue,
                max_queue,
                incoming,
                ready,
                learning,
                spend,
                latency,
                decision_log,
            }),
        })
    }

    /// The router being served (it changes when one is swapped in).
    pub fn info(&self) -> Arc<EngineInfo> {
        self.shared.info.load_full()
    }

    /// Loaded and warmed up.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Embeds `texts` (L2-normalised when the embedder normalises).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embeddings, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.submit(texts, Work::Embed(reply)).await?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// Embeds `text` and routes it with `params` (exploring, when the engine explores).
    pub async fn route(&self, text: String, params: RouteParams) -> Result<Decision, EngineError> {
        self.route_within(text, params, Limits::default()).await
    }

    /// [`Engine::route`] among the models `limits` leave; exploring stays within them too.
    pub async fn route_within(
        &self,
        text: String,
        params: RouteParams,
        limits: Limits,
    ) -> Result<Decision, EngineError> {
        self.route_as(text, params, limits, true).await
    }

    async fn route_as(
        &self,
        text: String,
        params: RouteParams,
        limits: Limits,
        explore: bool,
    ) -> Result<Decision, EngineError> {
        let (reply, answer) = oneshot::channel();
        let work = Work::Route {
            params,
            limits,
            explore,
            reply,
        };
        self.submit(vec![text], work).await?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    async fn submit(&self, texts: Vec<String>, work: Work) -> Result<(), EngineError> {
        let shared = &self.shared;
        shared.incoming.fetch_add(1, Ordering::AcqRel);
        // Counted until the job is queued (or refused), whatever happens in between.
        let _incoming = DecrementOnDrop(&shared.incoming);
        let embedder = shared.embedder.clone();
        let started = Instant::now();
        let tokens = tokio::task::spawn_blocking(move || embedder.tokenize(&texts))
            .await
            .map_err(|e| EngineError::Failed(format!("tokenizer task: {e}")))?
            .map_err(|e| EngineError::Failed(e.to_string()))?;
        let job = Job {
            texts: tokens.len(),
            token_count: tokens.iter().map(|t| t.ids.len()).sum(),
            truncated: tokens.iter().any(|t| t.truncated),
            tokens,
            work,
            tokenize: started.elapsed(),
            enqueued: Instant::now(),
        };
        shared.queue.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => EngineError::QueueFull(shared.max_queue),
            std::sync::mpsc::TrySendError::Disconnected(_) => EngineError::Stopped,
        })
    }

    /// Remembers `decision`, whose model ranked `answered_rank` answered (after fallbacks),
    /// so that an outcome can be reported for it; returns its id.
    pub fn remember(&self, decision: &Decision, answered_rank: usize) -> String {
        self.shared.learning.remember(decision, answered_rank)
    }

    /// Takes in an outcome: for a remembered decision, or for a text (embedded and routed to
    /// find its clusters). With a state directory it is on disk before this returns, and the
    /// next routed request uses it.
    pub async fn feedback(
        &self,
        request: FeedbackRequest,
    ) -> Result<FeedbackReceipt, FeedbackError> {
        let learning = &self.shared.learning;
        if let Some(key) = &request.idempotency_key {
            if let Some(earlier) = learning.claim_key(key) {
                return match earlier.pending {
                    true => Err(FeedbackError::KeyInProgress(key.clone())),
                    false => Ok(FeedbackReceipt {
                        decision_id: earlier.decision_id,
                        model: earlier.model,
                        duplicate: true,
                        sequence: None,
                    }),
                };
            }
        }
        let result = match &request.target {
            FeedbackTarget::Decision(id) => learning.feedback_for_decision(id, &request).await,
            FeedbackTarget::Text { text, params } => {
                let model = learning.check_text_feedback(&request, &self.info())?;
                let decision = self
                    .route_as(text.clone(), *params, Limits::default(), false)
                    .await
                    .map_err(FeedbackError::Engine)?;
                learning.feedback_for_text(&decision, model, &request).await
            }
        };
        if let Some(key) = &request.idempotency_key {
            learning.settle_key(key, result.as_ref().ok());
        }
        if let (Some(log), Ok(receipt)) = (&self.shared.decision_log, &result) {
            if !receipt.duplicate {
                log.outcome(OutcomeRow {
                    time_ms: unix_ms(),
                    decision_id: receipt.decision_id.clone(),
                    model: receipt.model.clone(),
                    score: request.score,
                    cost_usd: request.cost,
                });
            }
        }
        result
    }

    /// Whether decisions are logged ([`Engine::log_decision`] does nothing otherwise).
    pub fn logs_decisions(&self) -> bool {
        self.shared.decision_log.is_some()
    }

    /// Logs `decision`, made for `text`, with what became of it.
    pub fn log_decision(&self, decision: &Decision, text: &str, served: Served) {
        if let Some(row) = self.decision_row(decision, text, served) {
            self.log_row(row);
        }
    }

    /// The decision log's row for `decision` (`None` when decisions are not logged), for a
    /// caller that completes it later and logs it with [`Engine::log_row`].
    pub fn decision_row(
        &self,
        decision: &Decision,
        text: &str,
        served: Served,
    ) -> Option<DecisionRow> {
        let log = self.shared.decision_log.as_ref()?;
        let models = &decision.info.models;
        let params = &decision.params;
        let ms = |time: Duration| time.as_secs_f64() * 1e3;
        Some(DecisionRow {
            time_ms: unix_ms(),
            endpoint: served.endpoint.to_string(),
            tenant: served.tenant,
            decision_id: served.decision_id,
            query_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())),
            query: log.log_queries().then(|| text.to_string()),
            router_clusters: decision.info.clusters.clone(),
            router_generation: decision.info.generation,
            alpha: params.scoring.alpha(),
            top_p: params.top_p as u32,
            beta: params.beta,
            prior_strength: params.prior_strength,
            ranked_models: decision
                .ranking
                .iter()
                .map(|&(m, _)| models[m].clone())
                .collect(),
            ranked_scores: decision.ranking.iter().map(|&(_, score)| score).collect(),
            clusters: decision.clusters.iter().map(|v| v.cluster as u32).collect(),
            cluster_weights: decision.clusters.iter().map(|v| v.weight).collect(),
            explored: decision.explored,
            answered: served
                .answered_rank
                .map(|rank| decision.model(rank).to_string()),
            fallbacks: served.fallbacks as u32,
            route_ms: ms(served.route_time),
            first_byte_ms: served.first_byte.map(ms),
            total_ms: served.total.map(ms),
            input_tokens: served.usage.map(|(input, _)| input),
            output_tokens: served.usage.map(|(_, output)| output),
            cost_usd: served.cost,
        })
    }

    /// Hands a row to the decision log (when there is one).
    pub fn log_row(&self, row: DecisionRow) {
        if let Some(log) = &self.shared.decision_log {
            log.decision(row);
        }
    }

    /// Rows the decision log dropped because its writer fell behind.
    pub fn decision_log_dropped(&self) -> u64 {
        self.shared
            .decision_log
            .as_ref()
            .map_or(0, DecisionLog::dropped)
    }

    /// Swaps in `router` (already checked to embed like the one served): what was learned
    /// carries over when its clusters are the same; otherwise it is refused while outcomes
    /// were learned, unless `discard_learned`.
    pub async fn swap_router(
        &self,
        router: Router,
        discard_learned: bool,
    ) -> Result<ReloadReport, String> {
        router
            .embedding
            .check(&self.shared.embedder, "the new router")
            .map_err(|e| format!("{e}; restart the server to change the embedding model"))?;
        self.shared.learning.swap(router, discard_learned).await
    }

    /// What the engine has learned and decided since start.
    pub fn learning_state(&self) -> LearningState {
        self.shared.learning.state(&self.info())
    }

    /// Adds `usd` to `tenant`'s spend in the budget period that starts at `period_ms`; with a
    /// state directory it is logged before this returns.
    pub fn charge(&self, tenant: &str, period_ms: u64, usd: f64) -> crate::Result<()> {
        self.shared.spend.charge(tenant, period_ms, usd)
    }

    /// What `tenant` has spent in the budget period that starts at `period_ms`.
    pub fn spent(&self, tenant: &str, period_ms: u64) -> f64 {
        self.shared.spend.spent(tenant, period_ms)
    }

    /// An answer of `model`'s provider: its time to first byte and, where known, its output
    /// tokens and how long they took. Routing with latency limits reads these.
    pub fn observe_latency(
        &self,
        model: &str,
        first_byte: Duration,
        output: Option<(u64, Duration)>,
    ) -> ModelLatency {
        self.shared.latency.observe(model, first_byte, output)
    }

    /// The latency of every model that answered recently.
    pub fn latency(&self) -> BTreeMap<String, ModelLatency> {
        self.shared.latency.report()
    }

    /// Every tenant's spend in its latest budget period.
    pub fn spend(&self) -> BTreeMap<String, PeriodSpend> {
        self.shared.spend.totals()
    }

    /// Writes a snapshot now if anything changed since the last (with a state directory).
    pub fn snapshot(&self) -> crate::Result<Option<SnapshotInfo>> {
        self.shared.learning.snapshot()
    }
}

/// The spend ledger: in `STATE/spend/` when there is a state directory (fsynced each second by
/// a thread of its own), else in memory.
fn open_spend(state_dir: Option<&std::path::Path>) -> crate::Result<Arc<SpendLedger>> {
    let Some(dir) = state_dir else {
        return Ok(Arc::new(SpendLedger::in_memory()));
    };
    let (ledger, warnings) = SpendLedger::open(&dir.join("spend"))?;
    for warning in warnings {
        tracing::warn!("spend ledger: {warning}");
    }
    let ledger = Arc::new(ledger);
    let weak = Arc::downgrade(&ledger);
    thread::Builder::new()
        .name("kroute-spend".into())
        .spawn(move || loop {
            thread::sleep(Duration::from_secs(1));
            let Some(ledger) = weak.upgrade() else { break };
            if let Err(e) = ledger.sync() {
                tracing::error!("spend ledger: {e}");
            }
        })
        .expect("spawn the spend ledger thread");
    Ok(ledger)
}

struct DecrementOnDrop<'a>(&'a AtomicUsize);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
