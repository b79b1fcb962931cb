//! Each tenant's spend in its current budget period, kept in `DIR/spend/` of a server's state
//! directory:
//!
//! ```text
//! spend/wal-<sequence>.log   every charge, written as it is made (a killed server loses
//!                            none) and fsynced each second ([`SpendLedger::sync`])
//! spend/spend.json           the totals as of a log sequence, written whole (temporary
//!                            name, fsync, rename) at start and every COMPACT_EVERY charges
//! ```
//!
//! A period's total is the sum of its charges; a charge for a later period starts it afresh.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::wal::{self, WalWriter};
use crate::error::{Error, InputError, Result};
use crate::io::AtomicFile;

const SNAPSHOT_FILE: &str = "spend.json";
/// Charges between two foldings of the log into `spend.json`.
const COMPACT_EVERY: u64 = 10_000;

/// A tenant's spend in one budget period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PeriodSpend {
    /// The period's start, in milliseconds since the Unix epoch.
    pub start_ms: u64,
    pub usd: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Charge {
    tenant: String,
    start_ms: u64,
    usd: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    /// The last log sequence the totals hold.
    sequence: u64,
    tenants: BTreeMap<String, PeriodSpend>,
}

/// Spend per tenant, durable when opened on a directory.
#[derive(Default)]
pub struct SpendLedger {
    inner: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    totals: BTreeMap<String, PeriodSpend>,
    log: Option<Log>,
}

struct Log {
    dir: PathBuf,
    wal: WalWriter,
    since_compaction: u64,
}

impl Ledger {
    fn add(&mut self, tenant: &str, start_ms: u64, usd: f64) {
        let entry = self
            .totals
            .entry(tenant.to_string())
            .or_insert(PeriodSpend { start_ms, usd: 0.0 });
        if start_ms > entry.start_ms {
            *entry = PeriodSpend { start_ms, usd: 0.0 };
        }
        if start_ms == entry.start_ms {
            entry.usd += usd;
        }
    }
}

impl SpendLedger {
    /// A ledger kept in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Opens the ledger in `dir`: `spend.json` with the charges logged after it (a torn last
    /// charge is dropped; its warning is returned), folded into a fresh `spend.json`.
    pub fn open(dir: &Path) -> Result<(Self, Vec<String>)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot: Snapshot = match std::fs::read(&snapshot_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| InputError::new(&snapshot_path, e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(Error::io(&snapshot_path, e)),
        };
        let replay = wal::read(dir)?;
        let mut ledger = Ledger {
            totals: snapshot.tenants,
            log: None,
        };
        let mut last = snapshot.sequence;
        for record in replay
            .records
            .iter()
            .filter(|r| r.sequence > snapshot.sequence)
        {
            let charge: Charge = serde_json::from_slice(&record.payload)
                .map_err(|e| InputError::new(dir, format!("charge {}: {e}", record.sequence)))?;
            ledger.add(&charge.tenant, charge.start_ms, charge.usd);
            last = record.sequence;
        }
        let mut log = Log {
            dir: dir.to_path_buf(),
            wal: WalWriter::open(dir, last.max(replay.last_sequence()) + 1)?,
            since_compaction: 0,
        };
        compact(&mut log, &ledger.totals)?;
        ledger.log = Some(log);
        Ok((
            Self {
                inner: Mutex::new(ledger),
            },
            replay.warnings,
        ))
    }

    /// Adds `usd` to `tenant`'s spend in the period starting at `start_ms`, logged before this
    /// returns.
    pub fn charge(&self, tenant: &str, start_ms: u64, usd: f64) -> Result<()> {
        let mut ledger = self.inner.lock().expect("spend ledger lock");
        ledger.add(tenant, start_ms, usd);
        let Ledger { totals, log } = &mut *ledger;
        if let Some(log) = log {
            let charge = Charge {
                tenant: tenant.to_string(),
                start_ms,
                usd,
            };
            log.wal
                .append(&serde_json::to_vec(&charge).expect("a charge serialises"))?;
            log.wal.write()?;
            log.since_compaction += 1;
            if log.since_compaction >= COMPACT_EVERY {
                compact(log, totals)?;
            }
        }
        Ok(())
    }

    /// What `tenant` has spent in the period starting at `start_ms`.
    pub fn spent(&self, tenant: &str, start_ms: u64) -> f64 {
        let ledger = self.inner.lock().expect("spend ledger lock");
        ledger
            .totals
            .get(tenant)
            .filter(|p| p.start_ms == start_ms)
            .map_or(0.0, |p| p.usd)
    }

    /// Every tenant's spend in its latest period.
    pub fn totals(&self) -> BTreeMap<String, PeriodSpend> {
        self.inner.lock().expect("spend ledger lock").totals.clone()
    }

    /// Waits until every charge logged so far is on disk.
    pub fn sync(&self) -> Result<()> {
        let mut ledger = self.inner.lock().expect("spend ledger lock");
        match &mut ledger.log {
            Some(log) => log.wal.sync(),
            None => Ok(()),
        }
    }
}

/// Writes the totals whole as of the last logged charge, then drops the log they cover.
fn compact(log: &mut Log, totals: &BTreeMap<String, PeriodSpend>) -> Result<()> {
    log.wal.sync()?;
    let sequence = log.wal.next_sequence() - 1;
    let snapshot = Snapshot {
        sequence,
        tenants: totals.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&snapshot).expect("a snapshot serialises");
    AtomicFile::write(&log.dir.join(SNAPSHOT_FILE), &bytes)?;
    wal::sync_dir(&log.dir)?;
    log.wal.remove_through(sequence)?;
    log.since_compaction = 0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_survives_a_reopen_and_a_new_period_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (ledger, warnings) = SpendLedger::open(dir.path()).unwrap();
            assert!(warnings.is_empty());
            ledger.charge("research", 1000, 0.25).unwrap();
            ledger.charge("research", 1000, 0.5).unwrap();
            ledger.charge("ops", 1000, 2.0).unwrap();
            // Dropped without a sync or a compaction, as a killed process would leave it.
        }
        let (ledger, _) = SpendLedger::open(dir.path()).unwrap();
        assert_eq!(ledger.spent("research", 1000), 0.75);
        assert_eq!(ledger.spent("ops", 1000), 2.0);
        assert_eq!(ledger.spent("ops", 2000), 0.0);
        ledger.charge("ops", 2000, 0.125).unwrap();
        assert_eq!(ledger.spent("ops", 2000), 0.125);
        // A late charge for the period that ended is not counted in the new one.
        ledger.charge("ops", 1000, 5.0).unwrap();
        assert_eq!(ledger.spent("ops", 2000), 0.125);
        drop(ledger);
        let (ledger, _) = SpendLedger::open(dir.path()).unwrap();
        assert_eq!(ledger.spent("ops", 2000), 0.125);
        assert_eq!(ledger.spent("research", 1000), 0.75);
    }

    #[test]
    fn a_torn_last_charge_is_dropped_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (ledger, _) = SpendLedger::open(dir.path()).unwrap();
            ledger.charge("research", 1000, 1.0).unwrap();
            ledger.charge("research", 1000, 2.0).unwrap();
        }
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        let bytes = std::fs::read(&segment).unwrap();
        std::fs::write(&segment, &bytes[..bytes.len() - 3]).unwrap();
        let (ledger, warnings) = SpendLedger::open(dir.path()).unwrap();
        assert_eq!(ledger.spent("research", 1000), 1.0);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }
}
