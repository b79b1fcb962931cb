//! Routing records: which LLM answered each training query how well, and at what cost.
//!
//! One JSON object per line (`.jsonl` or `.jsonl.gz`):
//! `{"query": "...", "records": {"model-a": 1, "model-b": null}, "usages": {"model-a":
//! {"cost": 0.0012}}, "dataset": "gpqa", "index": 17, "split": "train"}`.
//! The model list and its order come from the first record's `records` keys; that order breaks
//! every tie later on. A null or missing score means "not evaluated" and is left out of means.

mod parse;
mod split;
mod summary;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use split::{Exclusion, Split, SplitOptions, TrainTest};
pub use summary::{DataSummary, ModelSummary};

use crate::error::{Error, Result};

/// What to do with an evaluated model that has no `usages.<model>.cost`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingCost {
    /// Refuse the file, naming the line and field.
    #[default]
    Error,
    /// Count the cost as 0 (and report how many were missing).
    Zero,
}

impl std::str::FromStr for MissingCost {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "error" => Ok(MissingCost::Error),
            "zero" => Ok(MissingCost::Zero),
            _ => Err(format!("`{s}`: expected error or zero")),
        }
    }
}

/// `index` as the file gives it: a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordIndex {
    Int(i64),
    Str(String),
}

/// One query and every model's result on it, in [`RoutingData::models`] order.
#[derive(Debug, Clone)]
pub struct RoutingRecord {
    /// 1-based line in the source file.
    pub line: usize,
    pub query: String,
    pub dataset: String,
    pub index: Option<RecordIndex>,
    /// The `split` field, when the file has one.
    pub split: Option<Split>,
    /// Score in [0, 1]; `None` = not evaluated.
    pub scores: Vec<Option<f64>>,
    /// Dollars; `None` only where the model was not evaluated and no cost was given.
    pub costs: Vec<Option<f64>>,
    /// Prompt and completion tokens per model (`usages.<model>.prompt_tokens` and
    /// `completion_tokens`, or their `_est` estimates), where both are given: what lets a
    /// router recompute costs at new prices (`kroute reprice`).
    pub tokens: Vec<Option<[f64; 2]>>,
    /// Seconds each model took to answer (`usages.<model>.latency_s`), where given.
    pub latencies: Vec<Option<f64>>,
    /// Other `usages.<model>` fields (token counts and the like), kept as given.
    pub usage_extras: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// A validated routing-records file.
#[derive(Debug, Clone)]
pub struct RoutingData {
    pub path: PathBuf,
    /// Model names in the first record's key order.
    pub models: Vec<String>,
    pub records: Vec<RoutingRecord>,
    /// Evaluated answers without a cost, counted as 0 under [`MissingCost::Zero`].
    pub missing_costs: usize,
}

/// JSON texts as lines numbered from 1 (a record's position stands for its line in errors).
fn numbered<S: Into<String>>(
    texts: impl IntoIterator<Item = S>,
) -> impl Iterator<Item = Result<crate::io::Line>> {
    texts.into_iter().enumerate().map(|(i, text)| {
        Ok(crate::io::Line {
            number: i + 1,
            text: text.into(),
        })
    })
}

impl RoutingData {
    /// Reads and validates every line; the first bad one fails with file, line and field.
    pub fn read(path: &Path, missing_cost: MissingCost) -> Result<Self> {
        parse::parse(
            path,
            crate::io::open_lines(path)?,
            parse::Mode::Training(missing_cost),
        )
    }

    /// Reads outcomes to learn from (`kroute update`): the same format, but each record names
    /// only the models it has outcomes for (the model list grows as they appear) and costs are
    /// optional (`None` where not given).
    pub fn read_outcomes(path: &Path) -> Result<Self> {
        parse::parse(path, crate::io::open_lines(path)?, parse::Mode::Outcomes)
    }

    /// Validates records already in memory as JSON texts, one record each; errors name `label`
    /// and the record's position counted from 1 as its line (how the Python package passes a
    /// list of dicts).
    pub fn from_json_texts<S: Into<String>>(
        label: &str,
        texts: impl IntoIterator<Item = S>,
        missing_cost: MissingCost,
    ) -> Result<Self> {
        parse::parse(
            Path::new(label),
            numbered(texts),
            parse::Mode::Training(missing_cost),
        )
    }

    /// [`RoutingData::read_outcomes`] of records already in memory, as
    /// [`RoutingData::from_json_texts`] takes them.
    pub fn outcomes_from_json_texts<S: Into<String>>(
        label: &str,
        texts: impl IntoIterator<Item = S>,
    ) -> Result<Self> {
        parse::parse(Path::new(label), numbered(texts), parse::Mode::Outcomes)
    }

    /// Rows that may be offered for evaluation (`kroute suggest`): all but the `"split":
    /// "test"` ones.
    pub fn suggestion_candidates(&self) -> Vec<usize> {
        (0..self.records.len())
            .filter(|&i| self.records[i].split != Some(Split::Test))
            .collect()
    }

    /// The source lines of `rows`, in that order, as the file has them (every field kept).
    pub fn source_lines(&self, rows: &[usize]) -> Result<Vec<String>> {
        let wanted: std::collections::HashMap<usize, usize> = rows
            .iter()
            .enumerate()
            .map(|(rank, &i)| (self.records[i].line, rank))
            .collect();
        let mut lines = vec![String::new(); rows.len()];
        for line in crate::io::open_lines(&self.path)? {
            let line = line?;
            if let Some(&rank) = wanted.get(&line.number) {
                lines[rank] = line.text;
            }
        }
        Ok(lines)
    }

    /// Dataset names in order of first appearance.
    pub fn datasets(&self) -> Vec<String> {
        let mut seen = Vec::<String>::new();
        for record in &self.records {
            if !seen.contains(&record.dataset) {
                seen.push(record.dataset.clone());
            }
        }
        seen
    }

    /// Position of a model in [`RoutingData::models`].
    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m == name)
    }

    /// Drops models from every record (and from the model list). Unknown names are an error,
    /// so a typo does not silently keep a model.
    pub fn exclude_models(&mut self, names: &[String]) -> Result<()> {
        let mut drop = Vec::new();
        for name in names {
            drop.push(self.model_index(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "--exclude-models: no model `{name}` in {} (models: {})",
                    self.path.display(),
                    self.models.join(", ")
                ))
            })?);
        }
        let keep: Vec<usize> = (0..self.models.len())
            .filter(|m| !drop.contains(m))
            .collect();
        if keep.is_empty() {
            return Err(Error::Invalid(
                "--exclude-models leaves no model to route to".into(),
            ));
        }
        fn select<T: Clone>(values: &[T], keep: &[usize]) -> Vec<T> {
            keep.iter().map(|&i| values[i].clone()).collect()
        }
        self.models = select(&self.models, &keep);
        for record in &mut self.records {
            record.scores = select(&record.scores, &keep);
            record.costs = select(&record.costs, &keep);
            record.tokens = select(&record.tokens, &keep);
            record.latencies = select(&record.latencies, &keep);
            record.usage_extras = select(&record.usage_extras, &keep);
        }
        Ok(())
    }

    pub fn summary(&self) -> DataSummary {
        summary::summarize(self)
    }
}
