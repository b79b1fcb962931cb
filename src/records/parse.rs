//! Line-by-line validation of routing records.

use std::path::Path;

use serde_json::{Map, Value};

use super::{MissingCost, RecordIndex, RoutingData, RoutingRecord, Split};
use crate::error::{InputError, Result};
use crate::io::{json_kind, Line};

/// What a file of records is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    /// Training and evaluation: the first record names every model, and an evaluated answer
    /// needs a cost (or `MissingCost::Zero` counts it as 0).
    Training(MissingCost),
    /// Outcomes to learn from: each record names any models it likes (the list grows in
    /// order of appearance), and a cost is optional.
    Outcomes,
}

/// Validates records given as JSON lines; errors name `path` (a file, or a label for records
/// that come from elsewhere) and the line.
pub(super) fn parse(
    path: &Path,
    lines: impl IntoIterator<Item = Result<Line>>,
    mode: Mode,
) -> Result<RoutingData> {
    let mut data = RoutingData {
        path: path.to_path_buf(),
        models: Vec::new(),
        records: Vec::new(),
        missing_costs: 0,
    };
    for line in lines {
        let line = line?;
        if line.text.trim().is_empty() {
            continue;
        }
        let at = |field: &str, message: String| {
            let err = InputError::new(path, message).at_line(line.number);
            if field.is_empty() {
                err
            } else {
                err.field(field)
            }
        };
        let value: Value =
            serde_json::from_str(&line.text).map_err(|e| at("", format!("malformed JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(at(
                "",
                format!("expected a JSON object, found {}", json_kind(&value)),
            )
            .into());
        };
        let mut parser = RecordParser {
            object: &object,
            at: &at,
        };
        match mode {
            Mode::Training(_) if data.models.is_empty() => data.models = parser.model_names()?,
            Mode::Training(_) => {}
            Mode::Outcomes => {
                for name in parser.records()?.keys() {
                    if !data.models.contains(name) {
                        data.models.push(name.clone());
                    }
                }
            }
        }
        let record = parser.record(line.number, &data.models, mode, &mut data.missing_costs)?;
        data.records.push(record);
    }
    // Records read before a model first appeared did not evaluate it.
    let models = data.models.len();
    for record in &mut data.records {
        record.scores.resize(models, None);
        record.costs.resize(models, None);
        record.tokens.resize(models, None);
        record.latencies.resize(models, None);
        record.usage_extras.resize(models, Map::new());
    }
    let Some(first) = data.records.first() else {
        return Err(InputError::new(path, "no records: the file is empty").into());
    };
    // A split is all or nothing: a partial one would silently leave rows out of both sides.
    let has_split = first.split.is_some();
    if let Some(odd) = data.records.iter().find(|r| r.split.is_some() != has_split) {
        let (with, without) = if has_split {
            (first, odd)
        } else {
            (odd, first)
        };
        return Err(InputError::new(
            path,
            format!(
                "missing here but given on line {}: give every record a split or none",
                with.line
            ),
        )
        .at_line(without.line)
        .field("split")
        .into());
    }
    Ok(data)
}

struct RecordParser<'a, F: Fn(&str, String) -> InputError> {
    object: &'a Map<String, Value>,
    at: &'a F,
}

impl<F: Fn(&str, String) -> InputError> RecordParser<'_, F> {
    fn fail<T>(&self, field: &str, message: impl Into<String>) -> Result<T> {
        Err((self.at)(field, message.into()).into())
    }

    fn records(&self) -> Result<&Map<String, Value>> {
        match self.object.get("records") {
            Some(Value::Object(records)) => Ok(records),
            Some(other) => self.fail(
                "records",
                format!(
                    "expected an object of model scores, found {}",
                    json_kind(other)
                ),
            ),
            None => self.fail("records", "missing (an object of model scores)"),
        }
    }

    /// The first record's `records` keys, in file order.
    fn model_names(&self) -> Result<Vec<String>> {
        let records = self.records()?;
        if records.is_empty() {
            return self.fail("records", "empty: the first record names the models");
        }
        Ok(records.keys().cloned().collect())
    }

    fn record(
        &mut self,
        line: usize,
        models: &[String],
        mode: Mode,
        missing_costs: &mut usize,
    ) -> Result<RoutingRecord> {
        let query = match self.object.get("query") {
            Some(Value::String(q)) if !q.trim().is_empty() => q.clone(),
            Some(Value::String(_)) => return self.fail("query", "empty text"),
            Some(other) => {
                return self.fail(
                    "query",
                    format!("expected a string, found {}", json_kind(other)),
                )
            }
            None => return self.fail("query", "missing"),
        };
        let records = self.records()?;
        if let Some(unknown) = records.keys().find(|k| !models.contains(k)) {
            return self.fail(
                &format!("records.{unknown}"),
                "model not in the first record: the first record must name every model (null for not evaluated)",
            );
        }
        let usages = match self.object.get("usages") {
            None | Some(Value::Null) => None,
            Some(Value::Object(usages)) => Some(usages),
            Some(other) => {
                return self.fail(
                    "usages",
                    format!("expected an object, found {}", json_kind(other)),
                )
            }
        };
        let mut scores = Vec::with_capacity(models.len());
        let mut costs = Vec::with_capacity(models.len());
        let mut usage_extras = Vec::with_capacity(models.len());
        let mut tokens = Vec::with_capacity(models.len());
        let mut latencies = Vec::with_capacity(models.len());
        for model in models {
            let score = self.score(model, records.get(model))?;
            let (cost, extras) = self.usage(model, usages.and_then(|u| u.get(model)))?;
            tokens.push(self.tokens(model, &extras)?);
            latencies.push(self.latency(model, &extras)?);
            let cost = match (score, cost, mode) {
                (Some(_), None, Mode::Training(MissingCost::Zero)) => {
                    *missing_costs += 1;
                    Some(0.0)
                }
                (Some(_), None, Mode::Training(MissingCost::Error)) => return self.fail(
                    &format!("usages.{model}.cost"),
                    "missing for an evaluated model (pass --missing-cost zero to count it as 0)",
                ),
                (_, cost, _) => cost,
            };
            scores.push(score);
            costs.push(cost);
            usage_extras.push(extras);
        }
        Ok(RoutingRecord {
            line,
            query,
            dataset: self.dataset()?,
            index: self.index()?,
            split: self.split()?,
            scores,
            costs,
            tokens,
            latencies,
            usage_extras,
        })
    }

    /// `usages.<model>.latency_s`: seconds the answer took, when given.
    fn latency(&self, model: &str, usage: &Map<String, Value>) -> Result<Option<f64>> {
        let field = || format!("usages.{model}.latency_s");
        match usage.get("latency_s") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x >= 0.0 && x.is_finite() => Ok(Some(x)),
                _ => self.fail(&field(), format!("latency {n} is negative")),
            },
            Some(other) => self.fail(
                &field(),
                format!("expected seconds, found {}", json_kind(other)),
            ),
        }
    }

    /// `usages.<model>`'s prompt and completion tokens (`prompt_tokens`, `completion_tokens`,
    /// or their `_est` estimates), when both are given.
    fn tokens(&self, model: &str, usage: &Map<String, Value>) -> Result<Option<[f64; 2]>> {
        let mut counts = [None, None];
        for (count, kind) in counts.iter_mut().zip(["prompt", "completion"]) {
            for key in [format!("{kind}_tokens"), format!("{kind}_tokens_est")] {
                match usage.get(&key) {
                    None | Some(Value::Null) => continue,
                    Some(Value::Number(n)) => match n.as_f64() {
                        Some(x) if x >= 0.0 && x.is_finite() => *count = Some(x),
                        _ => {
                            return self.fail(
                                &format!("usages.{model}.{key}"),
                                format!("token count {n} is negative"),
                            )
                        }
                    },
                    Some(other) => {
                        return self.fail(
                            &format!("usages.{model}.{key}"),
                            format!("expected a token count, found {}", json_kind(other)),
                        )
                    }
                }
                break;
            }
        }
        Ok(counts[0].zip(counts[1]).map(|(p, c)| [p, c]))
    }

    fn score(&self, model: &str, value: Option<&Value>) -> Result<Option<f64>> {
        let field = || format!("records.{model}");
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(if *b { 1.0 } else { 0.0 })),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => Ok(Some(x)),
                _ => self.fail(&field(), format!("score {n} is outside [0, 1]")),
            },
            Some(other) => self.fail(
                &field(),
                format!(
                    "expected a score in [0, 1], true/false or null, found {}",
                    json_kind(other)
                ),
            ),
        }
    }

    /// `usages.<model>`: the cost (if any) and the other fields.
    fn usage(
        &self,
        model: &str,
        value: Option<&Value>,
    ) -> Result<(Option<f64>, Map<String, Value>)> {
        let usage = match value {
            None | Some(Value::Null) => return Ok((None, Map::new())),
            Some(Value::Object(usage)) => usage,
            Some(other) => {
                return self.fail(
                    &format!("usages.{model}"),
                    format!("expected an object, found {}", json_kind(other)),
                )
            }
        };
        let cost = match usage.get("cost") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x >= 0.0 && x.is_finite() => Some(x),
                _ => {
                    return self.fail(
                        &format!("usages.{model}.cost"),
                        format!("cost {n} is negative"),
                    )
                }
            },
            Some(other) => {
                return self.fail(
                    &format!("usages.{model}.cost"),
                    format!("expected dollars as a number, found {}", json_kind(other)),
                )
            }
        };
        let mut extras = usage.clone();
        extras.remove("cost");
        Ok((cost, extras))
    }

    fn dataset(&self) -> Result<String> {
        match self.object.get("dataset") {
            None | Some(Value::Null) => Ok("default".into()),
            Some(Value::String(name)) if !name.is_empty() => Ok(name.clone()),
            Some(Value::String(_)) => self.fail("dataset", "empty name"),
            Some(other) => self.fail(
                "dataset",
                format!("expected a string, found {}", json_kind(other)),
            ),
        }
    }

    fn index(&self) -> Result<Option<RecordIndex>> {
        match self.object.get("index") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(RecordIndex::Str(s.clone()))),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Some(RecordIndex::Int(i))),
                None => self.fail(
                    "index",
                    format!("expected an integer or a string, found {n}"),
                ),
            },
            Some(other) => self.fail(
                "index",
                format!(
                    "expected an integer or a string, found {}",
                    json_kind(other)
                ),
            ),
        }
    }

    fn split(&self) -> Result<Option<Split>> {
        match self.object.get("split") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => match s.parse() {
                Ok(split) => Ok(Some(split)),
                Err(()) => self.fail(
                    "split",
                    format!("`{s}` is not a split: expected \"train\" or \"test\""),
                ),
            },
            Some(other) => self.fail(
                "split",
                format!("expected \"train\" or \"test\", found {}", json_kind(other)),
            ),
        }
    }
}
