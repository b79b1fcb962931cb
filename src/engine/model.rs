//! The model thread: the one owner of the encoder's batches and of the router. It runs each
//! prepared batch, routes its requests (exploring when asked), and between batches takes in
//! outcomes, hands out snapshots and swaps routers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use candle_core::Tensor;
use crossbeam_channel::{Receiver, TryRecvError};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::sync::oneshot;

use super::batcher::fail_all;
use super::{BatchObserver, BatchReport, ClusterVote, Decision, EngineError, EngineInfo, Job};
use super::{Embeddings, LatencyBook, Limits, Timings, Work};
use crate::embed::Prepared;
use crate::router::{Exploration, ModelMask, RouteParams, RoutedBatch, Router};
use crate::state::{FeedbackRecord, FEEDBACK_SOURCE};
use crate::Embedder;

/// What a router swap did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub generation: u64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The clusters are the same, so what was learned carried over.
    pub same_clusters: bool,
    pub carried_over: u64,
    pub discarded: u64,
}

/// Messages to the model thread besides batches.
pub(super) enum Control {
    /// Outcomes accepted (and logged) under these sequence numbers, in order.
    Observe(Vec<(u64, FeedbackRecord)>),
    /// A copy of the router as of now, for a snapshot.
    Snapshot(std::sync::mpsc::SyncSender<SnapshotCopy>),
    Swap {
        router: Box<Router>,
        fingerprint: String,
        discard_learned: bool,
        reply: oneshot::Sender<Result<ReloadReport, String>>,
    },
}

pub(super) struct SnapshotCopy {
    pub router: Router,
    /// The last outcome's sequence it holds.
    pub sequence: u64,
    /// Routers swapped in so far (a swap alone is a change worth a snapshot).
    pub swaps: u64,
}

/// How far a model's outcomes stand from its training answers: the shift of its accuracy they
/// give (shrunk toward no change) and its standard error, and whether it applies (the model
/// is then learned from its outcomes).
#[derive(Debug, Clone, Serialize)]
pub struct ModelChange {
    pub outcomes: f64,
    pub shift: f64,
    pub standard_error: f64,
    pub applies: bool,
}

/// What the router has learned, as the model thread last published it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LearnedSummary {
    /// Outcomes taken in since training.
    pub observations: u64,
    /// Per model with outcomes.
    pub changes: BTreeMap<String, ModelChange>,
}

impl LearnedSummary {
    pub fn of(router: &Router) -> Self {
        let learned = router.learned();
        let changes = router
            .models
            .iter()
            .enumerate()
            .filter_map(|(m, model)| {
                let outcomes = learned.shift_evidence().get(m)?.weight;
                let (applied, shift, standard_error) = learned.shift(m);
                (outcomes > 0.0).then(|| {
                    let change = ModelChange {
                        outcomes,
                        shift,
                        standard_error,
                        applies: applied != 0.0,
                    };
                    (model.clone(), change)
                })
            })
            .collect();
        Self {
            observations: learned.observations,
            changes,
        }
    }
}

/// What the model thread keeps of learning.
pub(super) struct ModelLearning {
    pub half_life: Option<f64>,
    pub explorer: Explorer,
    /// The last outcome's sequence taken in.
    pub applied: u64,
    /// What the router has learned, published for the state endpoint.
    pub learned: Arc<ArcSwap<LearnedSummary>>,
}

/// Leaves the greedy choice as the exploration policy says, within a share of decisions.
pub(super) struct Explorer {
    policy: Exploration,
    max_share: f64,
    rng: StdRng,
    decisions: u64,
    explored: u64,
}

impl Explorer {
    pub fn new(policy: Exploration, max_share: f64, seed: Option<u64>) -> Self {
        Self {
            policy,
            max_share,
            rng: match seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_os_rng(),
            },
            decisions: 0,
            explored: 0,
        }
    }

    /// Query `i`'s ranking and whether it left the greedy choice.
    fn rank(
        &mut self,
        router: &Router,
        routed: &RoutedBatch,
        i: usize,
        params: &RouteParams,
    ) -> (Vec<(usize, f32)>, bool) {
        self.decisions += 1;
        let within_share = (self.explored + 1) as f64 <= self.max_share * self.decisions as f64;
        if self.policy != Exploration::Off && within_share {
            if let Some(ranking) = router.explore(routed, i, params, self.policy, &mut self.rng) {
                self.explored += 1;
                return (ranking, true);
            }
        }
        let totals = routed.totals(i);
        let greedy = routed.ranking(i).into_iter().map(|m| (m, totals[m]));
        (greedy.collect(), false)
    }
}

pub(super) struct ModelThread {
    embedder: Arc<Embedder>,
    router: Router,
    fingerprint: String,
    info: Arc<ArcSwap<EngineInfo>>,
    current: Arc<EngineInfo>,
    learning: ModelLearning,
    swaps: u64,
    latency: Arc<LatencyBook>,
    observer: Option<BatchObserver>,
}

impl ModelThread {
    pub fn new(
        embedder: Arc<Embedder>,
        router: Router,
        info: Arc<ArcSwap<EngineInfo>>,
        learning: ModelLearning,
        latency: Arc<LatencyBook>,
        observer: Option<BatchObserver>,
    ) -> Self {
        let current = info.load_full();
        let fingerprint = router
            .clusters_fingerprint()
            .expect("the router's centroids read back");
        let thread = Self {
            embedder,
            router,
            fingerprint,
            info,
            current,
            learning,
            swaps: 0,
            latency,
            observer,
        };
        thread.publish_learned();
        thread
    }

    pub fn run(
        mut self,
        batches: Receiver<(Vec<Job>, Prepared)>,
        controls: Receiver<Control>,
        ready: &AtomicBool,
    ) {
        match self.warm_up() {
            Ok(()) => ready.store(true, Ordering::Release),
            Err(e) => {
                tracing::error!("warm-up failed, the engine stops: {e}");
                return;
            }
        }
        loop {
            crossbeam_channel::select! {
                recv(batches) -> batch => match batch {
                    Ok((jobs, prepared)) => {
                        // Outcomes acknowledged before these requests arrived count for them.
                        self.take_controls(&controls);
                        self.run_batch(jobs, prepared);
                    }
                    Err(_) => return,
                },
                recv(controls) -> control => match control {
                    Ok(control) => self.control(control),
                    Err(_) => {
                        // Learning has stopped; finish the batches still coming.
                        for (jobs, prepared) in batches.iter() {
                            self.run_batch(jobs, prepared);
                        }
                        return;
                    }
                },
            }
        }
    }

    fn warm_up(&self) -> crate::Result<()> {
        let started = Instant::now();
        let embedder = &self.embedder;
        let vectors = embedder.encode(
            &embedder.prepare(embedder.tokenize(&["warm up the encoder"])?)?,
            |_| {},
        )?;
        self.router.route(&vectors, &self.router.defaults)?;
        tracing::info!(
            "model warmed up in {:.0} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }

    fn take_controls(&mut self, controls: &Receiver<Control>) {
        loop {
            match controls.try_recv() {
                Ok(control) => self.control(control),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    fn control(&mut self, control: Control) {
        match control {
            Control::Observe(records) => self.observe(records),
            Control::Snapshot(reply) => {
                let _ = reply.send(SnapshotCopy {
                    router: self.router.clone(),
                    sequence: self.learning.applied,
                    swaps: self.swaps,
                });
            }
            Control::Swap {
                router,
                fingerprint,
                discard_learned,
                reply,
            } => {
                let _ = reply.send(self.swap(*router, fingerprint, discard_learned));
            }
        }
    }

    fn observe(&mut self, records: Vec<(u64, FeedbackRecord)>) {
        let half_life = self.learning.half_life;
        let mut taken = 0;
        for (sequence, record) in records {
            let applied = record
                .observation(&self.router, &self.current.clusters)
                .and_then(|o| {
                    self.router
                        .observe(&o, half_life)
                        .map_err(|e| e.to_string())
                });
            match applied {
                Ok(()) => taken += 1,
                Err(why) => tracing::warn!("outcome {sequence} not taken in: {why}"),
            }
            self.learning.applied = sequence;
        }
        self.router
            .note_feedback_source(FEEDBACK_SOURCE, taken, half_life);
        self.publish_learned();
    }

    fn swap(
        &mut self,
        mut router: Router,
        fingerprint: String,
        discard_learned: bool,
    ) -> Result<ReloadReport, String> {
        let learned = self.router.learned().observations;
        let same_clusters = fingerprint == self.fingerprint;
        if same_clusters {
            let carried = self
                .router
                .learned()
                .remap(&self.router.models, &router.models);
            router.set_learned(carried).map_err(|e| e.to_string())?;
        } else if learned > 0 && !discard_learned {
            return Err(format!(
                "the new router's clusters differ from those of the router being served, which \
                 has learned {learned} outcomes that would be lost; keep its clusters (e.g. \
                 `kroute add-model`, `kroute reprice`), or reload with {{\"discard_learned\": \
                 true}} to drop them"
            ));
        }
        let info = EngineInfo::of(
            &router,
            self.current.embedding.clone(),
            self.current.generation + 1,
        )
        .map_err(|e| e.to_string())?;
        let report = ReloadReport {
            generation: info.generation,
            added: diff(&router.models, &self.router.models),
            removed: diff(&self.router.models, &router.models),
            same_clusters,
            carried_over: if same_clusters { learned } else { 0 },
            discarded: if same_clusters { 0 } else { learned },
        };
        self.router = router;
        self.fingerprint = fingerprint;
        self.current = Arc::new(info);
        self.info.store(self.current.clone());
        self.swaps += 1;
        self.publish_learned();
        Ok(report)
    }

    fn publish_learned(&self) {
        let summary = LearnedSummary::of(&self.router);
        self.learning.learned.store(Arc::new(summary));
    }

    fn run_batch(&mut self, jobs: Vec<Job>, prepared: Prepared) {
        let started = Instant::now();
        let encoded = self.embedder.encode(&prepared, |_| {});
        let embed = started.elapsed();
        let stats = prepared.stats();
        if let Some(observe) = &self.observer {
            observe(&BatchReport {
                requests: jobs.len(),
                texts: stats.texts,
                tokens: stats.tokens,
                padded_tokens: stats.padded_tokens,
                seconds: embed.as_secs_f64(),
            });
        }
        match encoded {
            Ok(vectors) => self.answer(jobs, &vectors, started, embed),
            Err(e) => fail_all(jobs, EngineError::Failed(e.to_string())),
        }
    }

    /// Splits a batch's vectors back into its jobs: routes the routing jobs (one pass per
    /// distinct set of parameters) and copies the embedding jobs' rows to the host.
    fn answer(&mut self, jobs: Vec<Job>, vectors: &Tensor, started: Instant, embed: Duration) {
        let batch_requests = jobs.len();
        let timings = |job: &Job| Timings {
            tokenize: job.tokenize,
            queue: started.saturating_duration_since(job.enqueued),
            embed,
            route: Duration::ZERO,
            batch_requests,
        };
        let mut first_row = 0;
        // Jobs routed alike, with their first rows.
        type Group = Vec<(usize, Job)>;
        let mut groups: Vec<((RouteParams, ModelMask), Group)> = Vec::new();
        for job in jobs {
            let first = first_row;
            first_row += job.texts;
            let key = match &job.work {
                Work::Route { params, limits, .. } => match self.mask(limits) {
                    Ok(mask) => (*params, mask),
                    Err(e) => {
                        job.work.fail(e);
                        continue;
                    }
                },
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
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push((first, job)),
                None => groups.push((key, vec![(first, job)])),
            }
        }
        for ((params, mask), group) in groups {
            let started = Instant::now();
            let rows: Vec<u32> = group.iter().map(|&(row, _)| row as u32).collect();
            let routed = Tensor::new(rows.as_slice(), vectors.device())
                .and_then(|rows| vectors.index_select(&rows, 0))
                .map_err(crate::Error::from)
                .and_then(|queries| self.router.route_among(&queries, &params, mask));
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
                let timings = Timings {
                    route,
                    ..timings(&job)
                };
                let Work::Route {
                    explore,
                    reply,
                    limits,
                    ..
                } = job.work
                else {
                    unreachable!("only routing jobs are grouped")
                };
                let (mut ranking, mut explored) = match explore {
                    true => self
                        .learning
                        .explorer
                        .rank(&self.router, &routed, i, &params),
                    false => (greedy(&routed, i), false),
                };
                let mut expected_costs = Vec::new();
                if let Some(max_cost) = limits.max_cost {
                    expected_costs = self.router.expected_costs(&routed, i, &params);
                    let within = |m: usize| expected_costs[m].is_none_or(|cost| cost <= max_cost);
                    if !ranking.iter().any(|&(m, _)| within(m)) {
                        let _ = reply.send(Err(self.over_cost(&expected_costs, mask, max_cost)));
                        continue;
                    }
                    let first = ranking[0].0;
                    ranking.retain(|&(m, _)| within(m));
                    explored &= ranking[0].0 == first;
                }
                if limits.max_ttft_ms.is_some() || limits.latency_weight > 0.0 {
                    let first = ranking[0].0;
                    self.weigh_latency(&mut ranking, &limits);
                    explored &= ranking[0].0 == first;
                }
                let decision = Decision {
                    info: self.current.clone(),
                    params,
                    ranking,
                    clusters: routed
                        .nearest(i)
                        .map(|(cluster, distance, weight)| ClusterVote {
                            cluster,
                            distance,
                            weight,
                            size: self.router.clusters[cluster].size,
                            scores: self.router.cluster_scores(cluster, &params),
                        })
                        .collect(),
                    explored,
                    expected_costs,
                    tokens: job.token_count,
                    truncated: job.truncated,
                    timings,
                };
                let _ = reply.send(Ok(decision));
            }
        }
    }

    /// The router's models that `limits` allow.
    fn mask(&self, limits: &Limits) -> Result<ModelMask, EngineError> {
        let Some(allowed) = &limits.allowed else {
            return Ok(ModelMask::all());
        };
        let models = &self.router.models;
        let indices: Vec<usize> = (0..models.len())
            .filter(|&m| allowed.contains(&models[m]))
            .collect();
        if indices.is_empty() {
            return Err(EngineError::NoModelWithinLimits(format!(
                "none of the allowed models ({}) is served by the router",
                allowed.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        ModelMask::of(indices).map_err(|e| EngineError::NoModelWithinLimits(e.to_string()))
    }

    /// Skips models slower than `limits.max_ttft_ms` while another qualifies, then reorders by
    /// the latency-weighted score ([`Limits::latency_weight`]).
    fn weigh_latency(&self, ranking: &mut Vec<(usize, f32)>, limits: &Limits) {
        let names: Vec<String> = ranking
            .iter()
            .map(|&(m, _)| self.router.models[m].clone())
            .collect();
        let latencies = self.latency.of(&names);
        // Until the server has measured a model, its training records' mean answer time.
        let trained = &self.router.training.mean_latency_s;
        let mut ranked: Vec<((usize, f32), Option<f64>)> = ranking
            .iter()
            .zip(&latencies)
            .zip(&names)
            .map(|((&entry, latency), name)| {
                let measured = latency.map(|l| l.ttft_ms);
                (entry, measured.or(trained.get(name).map(|s| s * 1e3)))
            })
            .collect();
        if let Some(max) = limits.max_ttft_ms {
            let fast = |i: usize| latencies[i].is_none_or(|l| l.p90_ttft_ms <= max);
            if (0..ranked.len()).any(fast) {
                let mut i = 0;
                ranked.retain(|_| {
                    i += 1;
                    fast(i - 1)
                });
            }
        }
        let w = limits.latency_weight;
        if w > 0.0 && ranked.len() > 1 {
            let normalise = |values: Vec<f64>| -> Vec<f64> {
                let (lo, hi) = values
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                let span = hi - lo;
                values
                    .iter()
                    .map(|v| if span > 0.0 { (v - lo) / span } else { 0.0 })
                    .collect()
            };
            let totals = normalise(ranked.iter().map(|((_, t), _)| *t as f64).collect());
            // A model with neither counts as the fastest, so that it gets measured.
            let known: Vec<f64> = ranked.iter().filter_map(|(_, l)| *l).collect();
            let fastest = known.iter().copied().fold(f64::MAX, f64::min);
            let slowness = normalise(ranked.iter().map(|(_, l)| l.unwrap_or(fastest)).collect());
            let score = |i: usize| (1.0 - w) * totals[i] + w * (1.0 - slowness[i]);
            let mut order: Vec<usize> = (0..ranked.len()).collect();
            // Stable: equal scores keep the router's order.
            order.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
            ranked = order.into_iter().map(|i| ranked[i]).collect();
        }
        *ranking = ranked.into_iter().map(|(entry, _)| entry).collect();
    }

    /// The error for a query whose every allowed model is expected to cost more than allowed.
    fn over_cost(&self, costs: &[Option<f64>], mask: ModelMask, max_cost: f64) -> EngineError {
        let cheapest = (0..costs.len())
            .filter(|&m| mask.allows(m))
            .filter_map(|m| Some((m, costs[m]?)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let cheapest = cheapest.map_or(String::new(), |(m, cost)| {
            format!(
                " (the cheapest, {}, is expected to cost ${cost:.6})",
                self.router.models[m]
            )
        });
        EngineError::NoModelWithinLimits(format!(
            "no allowed model is expected to cost at most ${max_cost} for this query{cheapest}"
        ))
    }
}

fn greedy(routed: &RoutedBatch, i: usize) -> Vec<(usize, f32)> {
    let totals = routed.totals(i);
    routed
        .ranking(i)
        .into_iter()
        .map(|m| (m, totals[m]))
        .collect()
}

/// Names in `a` that are not in `b`.
fn diff(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|m| !b.contains(m)).cloned().collect()
}
