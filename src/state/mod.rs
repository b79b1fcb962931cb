//! A server's durable state (`kroute serve --state DIR`): every accepted outcome, and snapshots
//! of the router it has learned.
//!
//! ```text
//! DIR/lock                           held (flock) by the one server using DIR
//! DIR/wal/wal-<sequence>.log         accepted outcomes, fsynced before they are acknowledged
//! DIR/snapshot-<sequence>-<ms>/      router directories: router.json (learned statistics
//!                                    included), centroids.safetensors, and server-state.json
//! DIR/snapshot -> snapshot-…         the latest, for `kroute route DIR/snapshot`
//! ```
//!
//! A snapshot is written under a temporary name, synced and renamed into place; only then are
//! the log segments it covers removed. State at start is the latest snapshot plus the log
//! records after it, so an outcome that was acknowledged is never lost, whenever the server
//! stops.

pub mod decision_log;
pub mod spend;
pub mod wal;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, InputError, Result};
use crate::router::{Observation, Router, ROUTER_FILE};

const WAL_DIR: &str = "wal";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const LATEST: &str = "snapshot";
const SERVER_STATE_FILE: &str = "server-state.json";
/// Where a snapshot's outcomes came from, in `router.json`'s provenance.
pub const FEEDBACK_SOURCE: &str = "kroute serve feedback";

/// One accepted outcome as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    /// Unix time in milliseconds at acceptance.
    pub at_ms: u64,
    /// [`clusters_id`] of the router whose clusters `votes` name.
    pub clusters: String,
    /// The clusters that voted for the query and their weights (see [`Observation::votes`]).
    pub votes: Vec<(u32, f32)>,
    pub model: String,
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl FeedbackRecord {
    /// The observation this record makes on `router` (whose [`clusters_id`] is `clusters`), or
    /// why it does not apply: it was made on other clusters, or for a model the router lacks.
    pub fn observation(&self, router: &Router, clusters: &str) -> Result<Observation, String> {
        if self.clusters != clusters {
            return Err(format!(
                "made on clusters {}, the router's are {clusters}",
                self.clusters
            ));
        }
        let model = router
            .models
            .iter()
            .position(|m| *m == self.model)
            .ok_or_else(|| format!("model `{}` is not in the router", self.model))?;
        Ok(Observation {
            votes: self.votes.clone(),
            model,
            score: self.score,
            cost: self.cost,
        })
    }
}

/// A short name for a router's clusters: the first 16 hex digits of
/// [`Router::clusters_fingerprint`].
pub fn clusters_id(router: &Router) -> Result<String> {
    Ok(router.clusters_fingerprint()?[..16].to_string())
}

/// What a snapshot records beside the router.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerState {
    /// The last log record the snapshot holds.
    pub sequence: u64,
    pub saved_at_ms: u64,
    /// The half-life outcomes were taken in with, for replaying the records after it.
    #[serde(default)]
    pub half_life: Option<f64>,
    /// Idempotency keys of the outcomes the snapshot holds, oldest first.
    #[serde(default)]
    pub idempotency_keys: Vec<IdempotencyKey>,
}

/// An idempotency key and the outcome it recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    pub key: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What recovery found in a state directory.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The last log sequence (0 for none): new records continue after it.
    pub sequence: u64,
    /// Log records taken in after the snapshot.
    pub replayed: u64,
    /// Idempotency keys of every outcome held, oldest first.
    pub idempotency_keys: Vec<IdempotencyKey>,
    pub snapshot: Option<PathBuf>,
    /// Torn tails dropped and records that no longer apply.
    pub warnings: Vec<String>,
}

/// A state directory in use by one server.
pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Creates (if need be) and locks `path`; a directory another server holds is refused.
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let lock_path = path.join("lock");
        let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        lock_exclusively(&lock).map_err(|e| {
            Error::Invalid(format!(
                "{}: held by another kroute serve ({e}); one server per state directory",
                path.display()
            ))
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.path.join(WAL_DIR)
    }

    /// Brings `router` (what `--router` holds) to the state this directory saved: the learned
    /// statistics of the latest snapshot (by model name), then every log record after it,
    /// taken in with `half_life`. A snapshot that learned on other clusters is refused.
    pub fn recover(&self, router: &mut Router, half_life: Option<f64>) -> Result<Recovered> {
        let clusters = clusters_id(router)?;
        let mut recovered = Recovered::default();
        if let Some(dir) = latest_snapshot(&self.path)? {
            let snapshot = Router::load(&dir, &Device::Cpu)?;
            let state = read_server_state(&dir)?;
            let learned = snapshot.learned();
            if clusters_id(&snapshot)? != clusters && learned.observations > 0 {
                return Err(Error::Invalid(format!(
                    "{} holds {} outcomes learned on other clusters than those of the router \
                     given; start with the router it learned on, or move {} aside to start \
                     afresh",
                    dir.display(),
                    learned.observations,
                    self.path.display()
                )));
            }
            router.set_learned(learned.remap(&snapshot.models, &router.models))?;
            recovered.sequence = state.sequence;
            recovered.idempotency_keys = state.idempotency_keys;
            recovered.snapshot = Some(dir);
        }
        let replay = wal::read(&self.wal_dir())?;
        recovered.warnings.extend(replay.warnings.iter().cloned());
        let after = recovered.sequence;
        for record in replay.records.iter().filter(|r| r.sequence > after) {
            let feedback = parse_record(&self.wal_dir(), record)?;
            match feedback.observation(router, &clusters) {
                Ok(observation) => {
                    router.observe(&observation, half_life)?;
                    router.note_feedback_source(FEEDBACK_SOURCE, 1, half_life);
                    recovered.replayed += 1;
                }
                Err(why) => recovered
                    .warnings
                    .push(format!("log record {}: {why}; skipped", record.sequence)),
            }
            if let Some(key) = feedback.idempotency_key {
                recovered.idempotency_keys.push(IdempotencyKey {
                    key,
                    model: feedback.model,
                    decision_id: feedback.decision_id,
                });
            }
            recovered.sequence = record.sequence;
        }
        recovered.sequence = recovered.sequence.max(replay.last_sequence());
        Ok(recovered)
    }

    /// Writes `router` and `state` as the latest snapshot (temporary name, synced, renamed),
    /// points `DIR/snapshot` at it and removes older snapshots. The log segments it covers may
    /// be removed once this returns.
    pub fn write_snapshot(&self, router: &Router, state: &ServerState) -> Result<PathBuf> {
        let name = format!(
            "{SNAPSHOT_PREFIX}{:020}-{:013}",
            state.sequence, state.saved_at_ms
        );
        let dir = self.path.join(&name);
        let state_json = serde_json::to_vec_pretty(state).expect("server state serialises");
        router.save_with(&dir, &[(SERVER_STATE_FILE, &state_json)])?;
        let link = self.path.join(LATEST);
        let staged_link = self.path.join(".snapshot-link");
        let _ = std::fs::remove_file(&staged_link);
        std::os::unix::fs::symlink(&name, &staged_link)
            .and_then(|()| std::fs::rename(&staged_link, &link))
            .map_err(|e| Error::io(&link, e))?;
        wal::sync_dir(&self.path)?;
        for (old, _) in snapshots(&self.path)?
            .into_iter()
            .filter(|(other, _)| *other != name)
        {
            let old = self.path.join(old);
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        Ok(dir)
    }
}

fn parse_record(dir: &Path, record: &wal::Record) -> Result<FeedbackRecord> {
    serde_json::from_slice(&record.payload).map_err(|e| {
        InputError::new(
            dir,
            format!("log record {}: not a feedback record: {e}", record.sequence),
        )
        .into()
    })
}

/// Snapshot directory names in `dir`, oldest first, with their paths.
fn snapshots(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let is_dir = entry.file_type().ok()?.is_dir();
            (is_dir && name.starts_with(SNAPSHOT_PREFIX)).then(|| (name, entry.path()))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn latest_snapshot(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(snapshots(dir)?.pop().map(|(_, path)| path))
}

fn read_server_state(snapshot: &Path) -> Result<ServerState> {
    let path = snapshot.join(SERVER_STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        InputError::new(&path, format!("not a kroute server state: {e}"))
            .at_line(e.line())
            .into()
    })
}

fn lock_exclusively(file: &File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor this process owns; no memory is involved.
    let done = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    match done {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Whether `path` is a server's state directory rather than a router directory.
pub fn is_state_dir(path: &Path) -> bool {
    !path.join(ROUTER_FILE).is_file()
        && (path.join(WAL_DIR).is_dir() || path.join("lock").is_file())
}

/// The router at `path`: a router directory as it is, or a state directory's current state
/// (its latest snapshot with the log records after it), read without taking the directory
/// from a server that may be running.
pub fn open_router(path: &Path, device: &Device) -> Result<Router> {
    if !is_state_dir(path) {
        return Router::load(path, device);
    }
    let snapshot = latest_snapshot(path)?.ok_or_else(|| {
        Error::from(InputError::new(
            path,
            "a state directory without a snapshot yet",
        ))
    })?;
    let mut router = Router::load(&snapshot, device)?;
    let state = read_server_state(&snapshot)?;
    let clusters = clusters_id(&router)?;
    let wal_dir = path.join(WAL_DIR);
    for record in wal::read(&wal_dir)?
        .records
        .iter()
        .filter(|r| r.sequence > state.sequence)
    {
        if let Ok(observation) = parse_record(&wal_dir, record)?.observation(&router, &clusters) {
            router.observe(&observation, state.half_life)?;
            router.note_feedback_source(FEEDBACK_SOURCE, 1, state.half_life);
        }
    }
    Ok(router)
}
