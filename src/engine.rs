//! The model side of a server: a bounded queue, a dynamic batcher and a model thread that embeds
//! and routes. Callers hand in text and get back plain vectors and decisions; tensors never
//! leave this module, and nothing here knows about HTTP.
//!
//! ```text
//! caller (async) ── tokenize (blocking pool) ──▶ queue ──▶ batcher thread ──▶ model thread
//!        ▲                                    (bounded)   groups jobs up to a    encodes, routes,
//!        └──────────────────────── oneshot reply ◀─────── token budget and      replies per job
//!                                                         prepares the batch
//! ```
//!
//! The batcher prepares the next batch (padding, masks, tensors) while the model thread runs the
//! current one, so under load requests accumulate into large batches instead of serialising.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use tokio::sync::oneshot;

use crate::embed::{EmbeddingInfo, Prepared, Tokens};
use crate::router::{RouteParams, RoutedBatch, Router};
use crate::Embedder;

/// Batching and back-pressure settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Real tokens per batch at most (a larger single request still runs, in its own batch).
    pub max_batch_tokens: usize,
    /// How long a batch may wait for requests that are already being tokenized. An idle engine
    /// never waits for a lone request.
    pub max_batch_wait: Duration,
    /// Requests waiting for the model at most; more are refused with [`EngineError::QueueFull`].
    pub max_queue: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_batch_tokens: 2048,
            max_batch_wait: Duration::from_millis(2),
            max_queue: 1024,
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
    /// Model indices (into [`EngineInfo::models`]) with their totals, best first; equal totals
    /// keep model order.
    pub ranking: Vec<(usize, f32)>,
    /// The nearest clusters, nearest first.
    pub clusters: Vec<ClusterVote>,
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

/// What the engine serves.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// The router's models, in its order.
    pub models: Vec<String>,
    /// The router's stored routing parameters.
    pub defaults: RouteParams,
    pub embedding: EmbeddingInfo,
}

/// A handle on the running engine; cheap to clone. The threads stop once every handle is gone
/// and the queued work is answered.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

struct Shared {
    embedder: Arc<Embedder>,
    info: EngineInfo,
    queue: SyncSender<Job>,
    max_queue: usize,
    /// Requests between arrival and the queue (being tokenized): the batcher waits for these.
    incoming: Arc<AtomicUsize>,
    ready: Arc<AtomicBool>,
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
    Route(RouteParams, oneshot::Sender<Result<Decision, EngineError>>),
}

impl Work {
    fn fail(self, error: EngineError) {
        // A caller that went away no longer needs its answer.
        match self {
            Work::Embed(reply) => drop(reply.send(Err(error))),
            Work::Route(_, reply) => drop(reply.send(Err(error))),
        }
    }
}

impl Engine {
    /// Starts the batcher and model threads. The model thread first warms up (one embedding and
    /// one routing pass), then [`Engine::is_ready`] turns true.
    pub fn start(
        embedder: Embedder,
        router: Router,
        options: EngineOptions,
        observer: Option<BatchObserver>,
    ) -> Engine {
        let info = EngineInfo {
            models: router.models.clone(),
            defaults: router.defaults,
            embedding: EmbeddingInfo::of(&embedder),
        };
        let embedder = Arc::new(embedder);
        let (queue, queued) = sync_channel(options.max_queue);
        // Rendezvous: the batcher holds one prepared batch while the model runs another.
        let (to_model, batches) = sync_channel(0);
        let incoming = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let max_queue = options.max_queue;
        {
            let (embedder, incoming) = (embedder.clone(), incoming.clone());
            thread::Builder::new()
                .name("kroute-batcher".into())
                .spawn(move || batcher(&embedder, queued, to_model, &incoming, &options))
                .expect("spawn the batcher thread");
        }
        {
            let (embedder, ready) = (embedder.clone(), ready.clone());
            thread::Builder::new()
                .name("kroute-model".into())
                .spawn(move || model_loop(&embedder, &router, batches, &ready, observer))
                .expect("spawn the model thread");
        }
        Engine {
            shared: Arc::new(Shared {
                embedder,
                info,
                queue,
                max_queue,
                incoming,
                ready,
            }),
        }
    }

    pub fn info(&self) -> &EngineInfo {
        &self.shared.info
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

    /// Embeds `text` and routes it with `params`.
    pub async fn route(&self, text: String, params: RouteParams) -> Result<Decision, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.submit(vec![text], Work::Route(params, reply)).await?;
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
}

struct DecrementOnDrop<'a>(&'a AtomicUsize);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Groups queued jobs into batches of at most `max_batch_tokens` real tokens and prepares them.
fn batcher(
    embedder: &Embedder,
    queued: Receiver<Job>,
    to_model: SyncSender<(Vec<Job>, Prepared)>,
    incoming: &AtomicUsize,
    options: &EngineOptions,
) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match queued.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let deadline = Instant::now() + options.max_batch_wait;
        let mut tokens = first.token_count;
        let mut jobs = vec![first];
        while tokens < options.max_batch_tokens {
            let next = match queued.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    // Only wait for requests already on their way.
                    let now = Instant::now();
                    if incoming.load(Ordering::Acquire) == 0 || now >= deadline {
                        break;
                    }
                    match queued.recv_timeout(deadline - now) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let size = next.token_count;
            if tokens + size > options.max_batch_tokens {
                carried = Some(next);
                break;
            }
            tokens += size;
            jobs.push(next);
        }
        let texts = jobs
            .iter_mut()
            .flat_map(|job| job.tokens.drain(..))
            .collect();
        match embedder.prepare(texts) {
            Ok(prepared) => {
                if let Err(std::sync::mpsc::SendError((jobs, _))) = to_model.send((jobs, prepared))
                {
                    fail_all(jobs, EngineError::Stopped);
                    return;
                }
            }
            Err(e) => fail_all(jobs, EngineError::Failed(e.to_string())),
        }
    }
}

fn fail_all(jobs: Vec<Job>, error: EngineError) {
    for job in jobs {
        job.work.fail(error.clone());
    }
}

fn model_loop(
    embedder: &Embedder,
    router: &Router,
    batches: Receiver<(Vec<Job>, Prepared)>,
    ready: &AtomicBool,
    observer: Option<BatchObserver>,
) {
    match warm_up(embedder, router) {
        Ok(()) => ready.store(true, Ordering::Release),
        Err(e) => {
            tracing::error!("warm-up failed, the engine stops: {e}");
            return;
        }
    }
    for (jobs, prepared) in batches {
        let started = Instant::now();
        let encoded = embedder.encode(&prepared, |_| {});
        let embed = started.elapsed();
        let stats = prepared.stats();
        if let Some(observe) = &observer {
            observe(&BatchReport {
                requests: jobs.len(),
                texts: stats.texts,
                tokens: stats.tokens,
                padded_tokens: stats.padded_tokens,
                seconds: embed.as_secs_f64(),
            });
        }
        match encoded {
            Ok(vectors) => answer(router, jobs, &vectors, started, embed),
            Err(e) => fail_all(jobs, EngineError::Failed(e.to_string())),
        }
    }
}

fn warm_up(embedder: &Embedder, router: &Router) -> crate::Result<()> {
    let started = Instant::now();
    let vectors = embedder.encode(
        &embedder.prepare(embedder.tokenize(&["warm up the encoder"])?)?,
        |_| {},
    )?;
    router.route(&vectors, &router.defaults)?;
    tracing::info!(
        "model warmed up in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// Splits a batch's vectors back into its jobs: routes the routing jobs (one pass per distinct
/// set of parameters) and copies the embedding jobs' rows to the host.
fn answer(router: &Router, jobs: Vec<Job>, vectors: &Tensor, started: Instant, embed: Duration) {
    let batch_requests = jobs.len();
    let timings = |job: &Job| Timings {
        tokenize: job.tokenize,
        queue: started.saturating_duration_since(job.enqueued),
        embed,
        route: Duration::ZERO,
        batch_requests,
    };
    let mut first_row = 0;
    let mut groups: Vec<(RouteParams, Vec<(usize, Job)>)> = Vec::new();
    for job in jobs {
        let first = first_row;
        first_row += job.texts;
        let params = match &job.work {
            Work::Route(params, _) => *params,
            Work::Embed(_) => {
                let result = vectors
                    .narrow(0, first, job.texts)
                    .and_then(|rows| rows.to_vec2::<f32>())
                    .map(|vectors| Embeddings {
                        vectors,
                        tokens: job.token_count,
                        timings: timings(&job),
                    })
                    .map_err(|e| EngineError::Failed(e.to_string()));
                if let Work::Embed(reply) = job.work {
                    let _ = reply.send(result);
                }
                continue;
            }
        };
        match groups.iter_mut().find(|(p, _)| *p == params) {
            Some((_, group)) => group.push((first, job)),
            None => groups.push((params, vec![(first, job)])),
        }
    }
    for (params, group) in groups {
        let started = Instant::now();
        let rows: Vec<u32> = group.iter().map(|&(row, _)| row as u32).collect();
        let routed = Tensor::new(rows.as_slice(), vectors.device())
            .and_then(|rows| vectors.index_select(&rows, 0))
            .map_err(crate::Error::from)
            .and_then(|queries| router.route(&queries, &params));
        let route = started.elapsed();
        let routed = match routed {
            Ok(routed) => routed,
            Err(e) => {
                fail_all(
                    group.into_iter().map(|(_, job)| job).collect(),
                    EngineError::Failed(e.to_string()),
                );
                continue;
            }
        };
        for (i, (_, job)) in group.into_iter().enumerate() {
            let decision = Decision {
                ranking: decision_ranking(&routed, i),
                clusters: routed
                    .nearest(i)
                    .map(|(cluster, distance, weight)| ClusterVote {
                        cluster,
                        distance,
                        weight,
                        size: router.clusters[cluster].size,
                        scores: router.cluster_scores(cluster, &params),
                    })
                    .collect(),
                tokens: job.token_count,
                truncated: job.truncated,
                timings: Timings {
                    route,
                    ..timings(&job)
                },
            };
            if let Work::Route(_, reply) = job.work {
                let _ = reply.send(Ok(decision));
            }
        }
    }
}

fn decision_ranking(routed: &RoutedBatch, i: usize) -> Vec<(usize, f32)> {
    let totals = routed.totals(i);
    routed
        .ranking(i)
        .into_iter()
        .map(|m| (m, totals[m]))
        .collect()
}
