//! Learning while serving: decisions remembered, outcomes journaled (logged and synced in
//! groups, then handed to the model thread), snapshots of the learned router, router swaps,
//! and the counts the state endpoint shows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::oneshot;

use super::decisions::{Decisions, KeyRecord, Keys, LookupError};
use super::model::{Control, Explorer, LearnedSummary, ModelChange, ModelLearning, ReloadReport};
use super::{Decision, EngineError, EngineInfo};
use crate::error::{Error, Result};
use crate::router::{Exploration, RouteParams, Router};
use crate::state::wal::WalWriter;
use crate::state::{now_ms, FeedbackRecord, IdempotencyKey, ServerState, StateDir};

/// How the engine learns from outcomes and keeps what it learned.
#[derive(Debug, Clone)]
pub struct LearningOptions {
    /// Decisions remembered for outcomes to be reported against; the oldest are dropped.
    pub max_decisions: usize,
    /// Decisions older than this are dropped too.
    pub decision_ttl: Duration,
    /// Forget with this half-life, in observations per cell (`None`: remember everything).
    pub half_life: Option<f64>,
    pub exploration: Exploration,
    /// Share of routed decisions that may leave the greedy choice at most.
    pub max_explore_share: f64,
    /// Seed of the exploration draws (`None`: from the OS).
    pub explore_seed: Option<u64>,
    /// Where outcomes are logged and the learned router snapshotted (`None`: in memory only).
    pub state_dir: Option<PathBuf>,
    pub snapshot_every: Duration,
}

impl Default for LearningOptions {
    fn default() -> Self {
        Self {
            max_decisions: 1_000_000,
            decision_ttl: Duration::from_secs(7 * 24 * 3600),
            half_life: None,
            exploration: Exploration::Off,
            max_explore_share: 0.1,
            explore_seed: None,
            state_dir: None,
            snapshot_every: Duration::from_secs(60),
        }
    }
}

impl LearningOptions {
    fn validate(&self) -> Result<()> {
        if self.max_decisions == 0 {
            return Err(Error::Invalid("--max-decisions must be at least 1".into()));
        }
        if let Some(h) = self.half_life.filter(|h| !(h.is_finite() && *h > 0.0)) {
            return Err(Error::Invalid(format!(
                "--feedback-half-life must be a positive number of observations, got {h}"
            )));
        }
        if !(0.0..=1.0).contains(&self.max_explore_share) {
            return Err(Error::Invalid(format!(
                "--explore-max-share must be in [0, 1], got {}",
                self.max_explore_share
            )));
        }
        if self.snapshot_every.is_zero() {
            return Err(Error::Invalid("--snapshot-every must be positive".into()));
        }
        Ok(())
    }
}

/// What an outcome is about.
#[derive(Debug, Clone)]
pub enum FeedbackTarget {
    /// A decision this server made (`x-kroute-decision-id`).
    Decision(String),
    /// A text, embedded and routed with these settings to find its clusters.
    Text { text: String, params: RouteParams },
}

/// An outcome reported for a decision or a text.
#[derive(Debug, Clone)]
pub struct FeedbackRequest {
    pub target: FeedbackTarget,
    /// The model it is about (default for a decision: the model that answered).
    pub model: Option<String>,
    /// In [0, 1].
    pub score: f64,
    /// Dollars actually paid.
    pub cost: Option<f64>,
    /// Outcomes under the same key count once.
    pub idempotency_key: Option<String>,
}

/// An outcome taken in (or found to have been).
#[derive(Debug, Clone, Serialize)]
pub struct FeedbackReceipt {
    pub decision_id: Option<String>,
    pub model: String,
    /// It had been recorded before; nothing changed.
    pub duplicate: bool,
    /// Its place in the log (none for a duplicate).
    pub sequence: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("{0}")]
    Invalid(String),
    #[error("an outcome with Idempotency-Key `{0}` is being recorded; retry to learn its result")]
    KeyInProgress(String),
    #[error(transparent)]
    Engine(EngineError),
    /// The log could not be written: the outcome was not taken in.
    #[error("the outcome could not be recorded durably: {0}")]
    Storage(String),
}

/// The latest snapshot written.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub path: String,
    /// The last outcome it holds.
    pub sequence: u64,
    pub at_ms: u64,
}

/// Per model, since the server started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelCounts {
    /// Decisions answered by the model.
    pub selected: u64,
    /// Of those, decisions that explored.
    pub explored: u64,
    pub feedback: u64,
    /// Mean score of its outcomes.
    pub mean_feedback: Option<f64>,
    #[serde(skip)]
    score_sum: f64,
}

/// What `GET /admin/state` shows.
#[derive(Debug, Clone, Serialize)]
pub struct LearningState {
    /// Routers swapped in since start.
    pub generation: u64,
    pub clusters: String,
    pub models: Vec<String>,
    /// Outcomes the router has taken in, since training.
    pub observations: u64,
    pub observations_since_start: u64,
    /// Log records taken in at start, after the snapshot.
    pub replayed_at_start: u64,
    pub decisions_since_start: u64,
    pub decisions_remembered: usize,
    pub exploration: String,
    pub explored_share: f64,
    pub state_dir: Option<String>,
    pub last_snapshot: Option<SnapshotInfo>,
    pub per_model: BTreeMap<String, ModelCounts>,
    /// Per model with outcomes since training: how far they stand from its training answers.
    pub changes: BTreeMap<String, ModelChange>,
}

/// What recovery found, for starting the learning threads.
pub(super) struct Recovery {
    state: Option<StateDir>,
    sequence: u64,
    replayed: u64,
    keys: Vec<IdempotencyKey>,
    /// A snapshot holds everything recovered (nothing replayed on top).
    snapshot: Option<SnapshotInfo>,
}

/// Validates the options and brings `router` to the state directory's state.
pub(super) fn recover(options: &LearningOptions, router: &mut Router) -> Result<Recovery> {
    options.validate()?;
    let Some(path) = &options.state_dir else {
        return Ok(Recovery {
            state: None,
            sequence: 0,
            replayed: 0,
            keys: Vec::new(),
            snapshot: None,
        });
    };
    let state = StateDir::open(path)?;
    let recovered = state.recover(router, options.half_life)?;
    for warning in &recovered.warnings {
        tracing::warn!("{}: {warning}", path.display());
    }
    let mut snapshot = None;
    match &recovered.snapshot {
        Some(dir) => tracing::info!(
            "state {}: {} outcomes learned ({} from the log after {})",
            path.display(),
            router.learned().observations,
            recovered.replayed,
            dir.display()
        ),
        None => {
            // The directory is always self-contained: it starts with the router as given.
            let saved = ServerState {
                sequence: recovered.sequence,
                saved_at_ms: now_ms(),
                half_life: options.half_life,
                idempotency_keys: recovered.idempotency_keys.clone(),
            };
            let dir = state.write_snapshot(router, &saved)?;
            tracing::info!(
                "state {}: new, first snapshot {}",
                path.display(),
                dir.display()
            );
            snapshot = Some(SnapshotInfo {
                path: dir.display().to_string(),
                sequence: saved.sequence,
                at_ms: saved.saved_at_ms,
            });
        }
    }
    Ok(Recovery {
        state: Some(state),
        sequence: recovered.sequence,
        replayed: recovered.replayed,
        keys: recovered.idempotency_keys,
        snapshot: snapshot.filter(|_| recovered.replayed == 0),
    })
}

enum JournalMessage {
    Commit(FeedbackRecord, oneshot::Sender<Result<u64, String>>),
    /// A snapshot holds everything through this sequence.
    Truncate(u64),
}

pub(super) struct Learning {
    options: LearningOptions,
    decisions: Mutex<Decisions>,
    keys: Arc<Mutex<Keys>>,
    journal: mpsc::Sender<JournalMessage>,
    control: crossbeam_channel::Sender<Control>,
    info: Arc<ArcSwap<EngineInfo>>,
    counts: Mutex<Counts>,
    learned: Arc<ArcSwap<LearnedSummary>>,
    replayed: u64,
    snapshots: Option<Arc<Snapshots>>,
    /// Dropped with the engine, which stops the snapshot thread.
    _stop: Option<mpsc::Sender<()>>,
}

#[derive(Default)]
struct Counts {
    decisions: u64,
    explored: u64,
    observations: u64,
    per_model: BTreeMap<String, ModelCounts>,
}

impl Learning {
    pub fn start(
        options: &LearningOptions,
        recovery: Recovery,
        control: crossbeam_channel::Sender<Control>,
        info: Arc<ArcSwap<EngineInfo>>,
    ) -> Result<(Learning, ModelLearning)> {
        let wal = match &recovery.state {
            Some(state) => Some(WalWriter::open(&state.wal_dir(), recovery.sequence + 1)?),
            None => None,
        };
        let (journal, journal_inbox) = mpsc::channel();
        {
            let control = control.clone();
            let next = recovery.sequence;
            thread::Builder::new()
                .name("kroute-journal".into())
                .spawn(move || run_journal(journal_inbox, wal, next, control))
                .expect("spawn the journal thread");
        }
        let mut keys = Keys::new(options.max_decisions);
        keys.restore(recovery.keys);
        let keys = Arc::new(Mutex::new(keys));
        let (snapshots, stop) = match recovery.state {
            Some(dir) => {
                let snapshots = Arc::new(Snapshots {
                    dir,
                    control: control.clone(),
                    journal: journal.clone(),
                    keys: keys.clone(),
                    half_life: options.half_life,
                    last: Mutex::new(recovery.snapshot.map(|info| (info, 0))),
                });
                let (stop, stopped) = mpsc::channel::<()>();
                let every = options.snapshot_every;
                let background = snapshots.clone();
                thread::Builder::new()
                    .name("kroute-snapshots".into())
                    .spawn(move || loop {
                        let last = matches!(
                            stopped.recv_timeout(every),
                            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected)
                        );
                        if let Err(e) = background.take(true) {
                            tracing::error!(
                                "snapshot failed (the log still holds every outcome): {e}"
                            );
                        }
                        if last {
                            return;
                        }
                    })
                    .expect("spawn the snapshot thread");
                (Some(snapshots), Some(stop))
            }
            None => (None, None),
        };
        let learned = Arc::new(ArcSwap::from_pointee(LearnedSummary::default()));
        let model = ModelLearning {
            half_life: options.half_life,
            explorer: Explorer::new(
                options.exploration,
                options.max_explore_share,
                options.explore_seed,
            ),
            applied: recovery.sequence,
            learned: learned.clone(),
        };
        let learning = Learning {
            options: options.clone(),
            decisions: Mutex::new(Decisions::new(
                options.max_decisions,
                options.decision_ttl,
                rand::random(),
            )),
            keys,
            journal,
            control,
            info,
            counts: Mutex::new(Counts::default()),
            learned,
            replayed: recovery.replayed,
            snapshots,
            _stop: stop,
        };
        Ok((learning, model))
    }

    pub fn remember(&self, decision: &Decision, answered_rank: usize) -> String {
        let answered = decision.ranking[answered_rank].0;
        let id = self
            .decisions
            .lock()
            .expect("decisions lock")
            .insert(decision, answered);
        let mut counts = self.counts.lock().expect("counts lock");
        let explored = decision.explored && answered_rank == 0;
        counts.decisions += 1;
        counts.explored += explored as u64;
        let model = per_model(&mut counts.per_model, &decision.info.models[answered]);
        model.selected += 1;
        model.explored += explored as u64;
        id
    }

    pub fn claim_key(&self, key: &str) -> Option<KeyRecord> {
        self.keys.lock().expect("keys lock").claim(key)
    }

    pub fn settle_key(&self, key: &str, receipt: Option<&FeedbackReceipt>) {
        let recorded = receipt.map(|r| {
            (
                r.model.as_str(),
                r.decision_id.as_deref(),
                r.sequence.unwrap_or(0),
            )
        });
        self.keys.lock().expect("keys lock").settle(key, recorded);
    }

    pub async fn feedback_for_decision(
        &self,
        id: &str,
        request: &FeedbackRequest,
    ) -> Result<FeedbackReceipt, FeedbackError> {
        check_outcome(request)?;
        let claim = self
            .decisions
            .lock()
            .expect("decisions lock")
            .claim(id, request.model.as_deref())?;
        let receipt = |sequence: Option<u64>| FeedbackReceipt {
            decision_id: Some(id.to_string()),
            model: claim.model.clone(),
            duplicate: sequence.is_none(),
            sequence,
        };
        if claim.duplicate {
            return Ok(receipt(None));
        }
        let result = match claim.info.clusters == self.info.load().clusters {
            true => {
                let record = FeedbackRecord {
                    at_ms: now_ms(),
                    clusters: claim.info.clusters.clone(),
                    votes: claim.votes.clone(),
                    model: claim.model.clone(),
                    score: request.score,
                    cost: request.cost,
                    decision_id: Some(id.to_string()),
                    idempotency_key: request.idempotency_key.clone(),
                };
                self.commit(record).await
            }
            false => Err(LookupError::Replaced { id: id.to_string() }.into()),
        };
        self.decisions
            .lock()
            .expect("decisions lock")
            .settle(&claim, result.is_ok());
        let sequence = result?;
        self.count_feedback(&claim.model, request.score);
        Ok(receipt(Some(sequence)))
    }

    /// The model a text's outcome is about, once the request is checked.
    pub fn check_text_feedback(
        &self,
        request: &FeedbackRequest,
        info: &EngineInfo,
    ) -> Result<String, FeedbackError> {
        check_outcome(request)?;
        let model = request.model.clone().ok_or_else(|| {
            FeedbackError::Invalid("`model` is required with `input` or `messages`".into())
        })?;
        if !info.models.contains(&model) {
            return Err(FeedbackError::Invalid(format!(
                "`model`: `{model}` is not one of the router's models"
            )));
        }
        Ok(model)
    }

    pub async fn feedback_for_text(
        &self,
        decision: &Decision,
        model: String,
        request: &FeedbackRequest,
    ) -> Result<FeedbackReceipt, FeedbackError> {
        let record = FeedbackRecord {
            at_ms: now_ms(),
            clusters: decision.info.clusters.clone(),
            votes: decision
                .clusters
                .iter()
                .map(|vote| (vote.cluster as u32, vote.weight))
                .collect(),
            model: model.clone(),
            score: request.score,
            cost: request.cost,
            decision_id: None,
            idempotency_key: request.idempotency_key.clone(),
        };
        let sequence = self.commit(record).await?;
        self.count_feedback(&model, request.score);
        Ok(FeedbackReceipt {
            decision_id: None,
            model,
            duplicate: false,
            sequence: Some(sequence),
        })
    }

    async fn commit(&self, record: FeedbackRecord) -> Result<u64, FeedbackError> {
        let (reply, committed) = oneshot::channel();
        self.journal
            .send(JournalMessage::Commit(record, reply))
            .map_err(|_| FeedbackError::Engine(EngineError::Stopped))?;
        committed
            .await
            .map_err(|_| FeedbackError::Engine(EngineError::Stopped))?
            .map_err(FeedbackError::Storage)
    }

    fn count_feedback(&self, model: &str, score: f64) {
        let mut counts = self.counts.lock().expect("counts lock");
        counts.observations += 1;
        let model = per_model(&mut counts.per_model, model);
        model.feedback += 1;
        model.score_sum += score;
    }

    pub async fn swap(
        &self,
        router: Router,
        discard_learned: bool,
    ) -> Result<ReloadReport, String> {
        let fingerprint = router.clusters_fingerprint().map_err(|e| e.to_string())?;
        let (reply, swapped) = oneshot::channel();
        self.control
            .send(Control::Swap {
                router: Box::new(router),
                fingerprint,
                discard_learned,
                reply,
            })
            .map_err(|_| "the engine has stopped".to_string())?;
        let report = swapped
            .await
            .map_err(|_| "the engine has stopped".to_string())??;
        // The state directory follows at once: a restart must find the router now served.
        if let Some(snapshots) = self.snapshots.clone() {
            tokio::task::spawn_blocking(move || snapshots.take(false))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("swapped, but the snapshot failed: {e}"))?;
        }
        Ok(report)
    }

    pub fn snapshot(&self) -> Result<Option<SnapshotInfo>> {
        match &self.snapshots {
            Some(snapshots) => snapshots.take(true),
            None => Ok(None),
        }
    }

    pub fn state(&self, info: &EngineInfo) -> LearningState {
        let learned = self.learned.load_full();
        let counts = self.counts.lock().expect("counts lock");
        let mut per_model = counts.per_model.clone();
        for model in per_model.values_mut() {
            model.mean_feedback =
                (model.feedback > 0).then(|| model.score_sum / model.feedback as f64);
        }
        LearningState {
            generation: info.generation,
            clusters: info.clusters.clone(),
            models: info.models.clone(),
            observations: learned.observations,
            observations_since_start: counts.observations,
            replayed_at_start: self.replayed,
            decisions_since_start: counts.decisions,
            decisions_remembered: self.decisions.lock().expect("decisions lock").len(),
            exploration: self.options.exploration.to_string(),
            explored_share: match counts.decisions {
                0 => 0.0,
                n => counts.explored as f64 / n as f64,
            },
            state_dir: self
                .options
                .state_dir
                .as_ref()
                .map(|p| p.display().to_string()),
            last_snapshot: self
                .snapshots
                .as_ref()
                .and_then(|s| s.last.lock().expect("snapshot lock").clone())
                .map(|(info, _)| info),
            per_model,
            changes: learned.changes.clone(),
        }
    }
}

/// `name`'s counts, created on first use (without a key allocation on every call).
fn per_model<'a>(counts: &'a mut BTreeMap<String, ModelCounts>, name: &str) -> &'a mut ModelCounts {
    if !counts.contains_key(name) {
        counts.insert(name.to_string(), ModelCounts::default());
    }
    counts.get_mut(name).expect("just inserted")
}

fn check_outcome(request: &FeedbackRequest) -> Result<(), FeedbackError> {
    if !(0.0..=1.0).contains(&request.score) {
        return Err(FeedbackError::Invalid(format!(
            "`score` must be in [0, 1], got {}",
            request.score
        )));
    }
    if let Some(cost) = request.cost.filter(|c| !(c.is_finite() && *c >= 0.0)) {
        return Err(FeedbackError::Invalid(format!(
            "`cost` must be a number of dollars ≥ 0, got {cost}"
        )));
    }
    Ok(())
}

/// Group commit: takes every outcome waiting, appends them to the log with one sync, hands
/// them to the model thread in order, then acknowledges each. Without a log it only numbers
/// and hands them on. A log that fails to sync is not written again: later outcomes are refused
/// until a restart (routing goes on).
fn run_journal(
    inbox: mpsc::Receiver<JournalMessage>,
    mut wal: Option<WalWriter>,
    mut last: u64,
    control: crossbeam_channel::Sender<Control>,
) {
    const MAX_GROUP: usize = 4096;
    let mut broken: Option<String> = None;
    while let Ok(first) = inbox.recv() {
        let mut commits = Vec::new();
        let mut truncate = None;
        for message in std::iter::once(first).chain(inbox.try_iter().take(MAX_GROUP)) {
            match message {
                JournalMessage::Commit(record, reply) => commits.push((record, reply)),
                JournalMessage::Truncate(through) => truncate = truncate.max(Some(through)),
            }
        }
        if !commits.is_empty() {
            let logged = match &broken {
                Some(why) => Err(why.clone()),
                None => log_group(&mut wal, &mut last, &commits),
            };
            match logged {
                Ok(sequences) => {
                    let observed = sequences
                        .iter()
                        .zip(&commits)
                        .map(|(&sequence, (record, _))| (sequence, record.clone()))
                        .collect();
                    let handed = control.send(Control::Observe(observed)).is_ok();
                    for (sequence, (_, reply)) in sequences.into_iter().zip(commits) {
                        let _ = reply.send(match handed {
                            true => Ok(sequence),
                            false => Err("the engine has stopped".into()),
                        });
                    }
                }
                Err(why) => {
                    if broken.is_none() && wal.is_some() {
                        tracing::error!(
                            "the feedback log failed; no more outcomes until a restart: {why}"
                        );
                        broken = Some(why.clone());
                    }
                    for (_, reply) in commits {
                        let _ = reply.send(Err(why.clone()));
                    }
                }
            }
        }
        if let (Some(through), Some(wal)) = (truncate, wal.as_mut()) {
            if let Err(e) = wal.remove_through(through) {
                tracing::warn!("could not remove log segments a snapshot holds: {e}");
            }
        }
    }
}

fn log_group(
    wal: &mut Option<WalWriter>,
    last: &mut u64,
    commits: &[(FeedbackRecord, oneshot::Sender<Result<u64, String>>)],
) -> std::result::Result<Vec<u64>, String> {
    let Some(wal) = wal else {
        return Ok(commits
            .iter()
            .map(|_| {
                *last += 1;
                *last
            })
            .collect());
    };
    let sequences = commits
        .iter()
        .map(|(record, _)| {
            let payload = serde_json::to_vec(record).expect("a feedback record serialises");
            wal.append(&payload)
        })
        .collect::<Result<Vec<u64>>>()
        .map_err(|e| e.to_string())?;
    wal.sync().map_err(|e| e.to_string())?;
    Ok(sequences)
}

/// Snapshots of the learned router into the state directory.
struct Snapshots {
    dir: StateDir,
    control: crossbeam_channel::Sender<Control>,
    journal: mpsc::Sender<JournalMessage>,
    keys: Arc<Mutex<Keys>>,
    half_life: Option<f64>,
    /// The latest snapshot and the swaps it saw (held while writing: one at a time).
    last: Mutex<Option<(SnapshotInfo, u64)>>,
}

impl Snapshots {
    /// Writes a snapshot (when `only_if_changed`, only if outcomes or a swap came since the
    /// last), then lets the log drop what it holds.
    fn take(&self, only_if_changed: bool) -> Result<Option<SnapshotInfo>> {
        let (reply, copy) = mpsc::sync_channel(1);
        let stopped = || Error::Invalid("the engine has stopped".into());
        self.control
            .send(Control::Snapshot(reply))
            .map_err(|_| stopped())?;
        let copy = copy.recv().map_err(|_| stopped())?;
        let mut last = self.last.lock().expect("snapshot lock");
        let unchanged = last
            .as_ref()
            .is_some_and(|(info, swaps)| info.sequence == copy.sequence && *swaps == copy.swaps);
        if only_if_changed && unchanged {
            return Ok(None);
        }
        let state = ServerState {
            sequence: copy.sequence,
            saved_at_ms: now_ms(),
            half_life: self.half_life,
            idempotency_keys: self
                .keys
                .lock()
                .expect("keys lock")
                .recorded_through(copy.sequence),
        };
        let path = self.dir.write_snapshot(&copy.router, &state)?;
        let _ = self.journal.send(JournalMessage::Truncate(copy.sequence));
        let info = SnapshotInfo {
            path: path.display().to_string(),
            sequence: copy.sequence,
            at_ms: state.saved_at_ms,
        };
        *last = Some((info.clone(), copy.swaps));
        Ok(Some(info))
    }
}
