//! Recent routing decisions, so that an outcome reported later can be credited to the clusters
//! that voted, and the idempotency keys of accepted outcomes.
//!
//! Decisions are numbered in order, so they live in a ring: a decision id is this server's
//! random instance number and the decision's sequence number, and finding one is an index
//! computation. The oldest are dropped past the capacity or the time to live. The clusters and
//! weights of every decision sit in one shared ring of votes beside it (no allocation per
//! decision).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Decision, EngineInfo};
use crate::state::IdempotencyKey;

/// Why an outcome could not be matched to a decision.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LookupError {
    #[error("decision `{0}` is unknown to this server (ids are kept in memory from its start)")]
    Unknown(String),
    #[error("decision `{0}` has expired (only the most recent decisions are kept: --max-decisions, --decision-ttl)")]
    Expired(String),
    #[error("decision `{id}` was made by a router whose clusters were since replaced; its outcome cannot be credited")]
    Replaced { id: String },
    #[error("model `{model}` is not one the router knows (decision `{id}`)")]
    UnknownModel { id: String, model: String },
    #[error("an outcome for decision `{id}` and model `{model}` is being recorded; retry to learn its result")]
    InProgress { id: String, model: String },
}

/// Where an outcome for a decision and model stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    None,
    Pending,
    Recorded,
}

struct Slot {
    /// The router (models, clusters) the decision was made with.
    info: Arc<EngineInfo>,
    /// Absolute position of the first vote in the votes ring.
    votes_at: u64,
    votes: u16,
    /// Seconds since the store began.
    at: u32,
    answered: u16,
    /// The outcome for the answering model; others are rare and kept in `others`.
    outcome: Outcome,
}

/// A decision an outcome was matched to.
#[derive(Debug, Clone)]
pub struct Claim {
    pub sequence: u64,
    pub info: Arc<EngineInfo>,
    pub votes: Vec<(u32, f32)>,
    pub model: String,
    /// An outcome for it was recorded before: nothing more to do.
    pub duplicate: bool,
}

pub(super) struct Decisions {
    capacity: usize,
    ttl: Duration,
    instance: u64,
    began: Instant,
    /// Sequence of `slots.front()`.
    first: u64,
    slots: VecDeque<Slot>,
    /// Absolute position of `votes.front()`.
    votes_first: u64,
    votes: VecDeque<(u32, f32)>,
    /// Outcomes for other models than the one that answered, by (sequence, model).
    others: HashMap<(u64, String), Outcome>,
}

impl Decisions {
    pub fn new(capacity: usize, ttl: Duration, instance: u64) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            instance,
            began: Instant::now(),
            first: 0,
            slots: VecDeque::new(),
            votes_first: 0,
            votes: VecDeque::new(),
            others: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    fn now(&self) -> u32 {
        self.began.elapsed().as_secs() as u32
    }

    fn id(&self, sequence: u64) -> String {
        format!("{:016x}{sequence:016x}", self.instance)
    }

    /// Remembers `decision`, answered by its model `answered`; returns its id.
    pub fn insert(&mut self, decision: &Decision, answered: usize) -> String {
        let now = self.now();
        self.expire(now);
        while self.slots.len() >= self.capacity {
            self.pop();
        }
        let votes_at = self.votes_first + self.votes.len() as u64;
        self.votes.extend(
            decision
                .clusters
                .iter()
                .take(u16::MAX as usize)
                .map(|vote| (vote.cluster as u32, vote.weight)),
        );
        self.slots.push_back(Slot {
            info: decision.info.clone(),
            votes_at,
            votes: decision.clusters.len().min(u16::MAX as usize) as u16,
            at: now,
            answered: answered as u16,
            outcome: Outcome::None,
        });
        self.id(self.first + self.slots.len() as u64 - 1)
    }

    fn pop(&mut self) {
        if let Some(slot) = self.slots.pop_front() {
            self.votes.drain(..slot.votes as usize);
            self.votes_first += slot.votes as u64;
            if !self.others.is_empty() {
                let sequence = self.first;
                self.others.retain(|(s, _), _| *s != sequence);
            }
            self.first += 1;
        }
    }

    fn expire(&mut self, now: u32) {
        let ttl = self.ttl.as_secs().min(u32::MAX as u64) as u32;
        while self
            .slots
            .front()
            .is_some_and(|slot| now.saturating_sub(slot.at) > ttl)
        {
            self.pop();
        }
    }

    /// Matches an outcome for `model` (the answering model when `None`) to decision `id` and
    /// marks it pending; a recorded one comes back as a duplicate.
    pub fn claim(&mut self, id: &str, model: Option<&str>) -> Result<Claim, LookupError> {
        let unknown = || LookupError::Unknown(id.to_string());
        let (instance, sequence) = parse_id(id).ok_or_else(unknown)?;
        if instance != self.instance {
            return Err(unknown());
        }
        self.expire(self.now());
        if sequence >= self.first + self.slots.len() as u64 {
            return Err(unknown());
        }
        if sequence < self.first {
            return Err(LookupError::Expired(id.to_string()));
        }
        let index = (sequence - self.first) as usize;
        let slot = &self.slots[index];
        let info = slot.info.clone();
        let answered = &info.models[slot.answered as usize];
        let model = model.unwrap_or(answered).to_string();
        if !info.models.contains(&model) {
            return Err(LookupError::UnknownModel {
                id: id.to_string(),
                model,
            });
        }
        let start = (slot.votes_at - self.votes_first) as usize;
        let votes: Vec<(u32, f32)> = self
            .votes
            .range(start..start + slot.votes as usize)
            .copied()
            .collect();
        let outcome = match model == *answered {
            true => &mut self.slots[index].outcome,
            false => self
                .others
                .entry((sequence, model.clone()))
                .or_insert(Outcome::None),
        };
        let duplicate = match *outcome {
            Outcome::Recorded => true,
            Outcome::Pending => {
                return Err(LookupError::InProgress {
                    id: id.to_string(),
                    model,
                })
            }
            Outcome::None => {
                *outcome = Outcome::Pending;
                false
            }
        };
        Ok(Claim {
            sequence,
            info,
            votes,
            model,
            duplicate,
        })
    }

    /// Settles a claim: recorded, or released for another try.
    pub fn settle(&mut self, claim: &Claim, recorded: bool) {
        let state = match recorded {
            true => Outcome::Recorded,
            false => Outcome::None,
        };
        let Some(index) = claim.sequence.checked_sub(self.first) else {
            return; // dropped meanwhile
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        if slot.info.models[slot.answered as usize] == claim.model {
            slot.outcome = state;
        } else {
            self.others
                .insert((claim.sequence, claim.model.clone()), state);
        }
    }
}

fn parse_id(id: &str) -> Option<(u64, u64)> {
    if id.len() != 32 || !id.is_ascii() {
        return None;
    }
    Some((
        u64::from_str_radix(&id[..16], 16).ok()?,
        u64::from_str_radix(&id[16..], 16).ok()?,
    ))
}

/// What an idempotency key stands for: the outcome it recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub model: String,
    pub decision_id: Option<String>,
    pub pending: bool,
    /// The log sequence it was recorded under (0 while pending, or restored from a snapshot).
    pub sequence: u64,
}

/// Idempotency keys of recent outcomes, oldest dropped past the capacity.
pub(super) struct Keys {
    capacity: usize,
    map: HashMap<String, KeyRecord>,
    order: VecDeque<String>,
}

impl Keys {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Keys of outcomes recorded before (from a snapshot and the log), oldest first.
    pub fn restore(&mut self, keys: impl IntoIterator<Item = IdempotencyKey>) {
        for IdempotencyKey {
            key,
            model,
            decision_id,
        } in keys
        {
            self.insert(
                key,
                KeyRecord {
                    model,
                    decision_id,
                    pending: false,
                    sequence: 0,
                },
            );
        }
    }

    fn insert(&mut self, key: String, record: KeyRecord) {
        if self.map.insert(key.clone(), record).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    /// The key's earlier outcome, or `None` after reserving it as pending.
    pub fn claim(&mut self, key: &str) -> Option<KeyRecord> {
        if let Some(record) = self.map.get(key) {
            return Some(record.clone());
        }
        self.insert(
            key.to_string(),
            KeyRecord {
                model: String::new(),
                decision_id: None,
                pending: true,
                sequence: 0,
            },
        );
        None
    }

    /// Settles a reserved key: `recorded` (model, decision id, log sequence), or released.
    pub fn settle(&mut self, key: &str, recorded: Option<(&str, Option<&str>, u64)>) {
        match recorded {
            Some((model, decision_id, sequence)) => {
                if let Some(record) = self.map.get_mut(key) {
                    *record = KeyRecord {
                        model: model.to_string(),
                        decision_id: decision_id.map(str::to_string),
                        pending: false,
                        sequence,
                    };
                }
            }
            None => {
                if self.map.remove(key).is_some() {
                    self.order.retain(|k| k != key);
                }
            }
        }
    }

    /// Recorded keys up to log sequence `through`, oldest first (what a snapshot holds).
    pub fn recorded_through(&self, through: u64) -> Vec<IdempotencyKey> {
        self.order
            .iter()
            .filter_map(|key| {
                let record = self.map.get(key)?;
                (!record.pending && record.sequence <= through).then(|| IdempotencyKey {
                    key: key.clone(),
                    model: record.model.clone(),
                    decision_id: record.decision_id.clone(),
                })
            })
            .collect()
    }
}
