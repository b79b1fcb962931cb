//! The decision log (`kroute serve --decision-log DIR`): every routing decision and every
//! outcome reported for one, in Parquet files that `kroute replay` reads (and any Parquet
//! reader: DuckDB, pandas, Spark).
//!
//! ```text
//! DIR/decisions-<first ms>-<n>.parquet   decisions (schema: [`decision_schema`])
//! DIR/outcomes-<first ms>-<n>.parquet    outcomes posted to /v1/feedback
//! ```
//!
//! Rows are kept in memory by a thread of their own and written as a whole file (temporary
//! name, fsync, rename) once `max_rows` have gathered or `rotate_every` has passed, and when
//! the server stops: a reader never sees a half-written file, and `kill -9` loses at most the
//! rows of the file being gathered. Serving never waits on the log: rows are handed over
//! through a bounded queue, and when it is full they are dropped and counted.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, ListBuilder, StringBuilder, UInt32Builder,
    UInt64Builder,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, InputError, Result};
use crate::io::AtomicFile;

const DECISIONS: &str = "decisions";
const OUTCOMES: &str = "outcomes";
/// Rows waiting for the writer thread at most; more are dropped (and counted).
const QUEUE: usize = 65_536;

/// One routing decision as the log keeps it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecisionRow {
    /// Unix time in milliseconds when it was made.
    pub time_ms: u64,
    /// `chat` (an answer was forwarded) or `route` (`/v1/route`: a decision only).
    pub endpoint: String,
    pub tenant: String,
    /// The id `/v1/feedback` takes, where one was given.
    pub decision_id: Option<String>,
    /// SHA-256 of the routed text, hex.
    pub query_sha256: String,
    /// The routed text itself, only with `--log-queries`.
    pub query: Option<String>,
    /// [`super::clusters_id`] of the router's clusters (a replay on a router with the same
    /// clusters needs no text).
    pub router_clusters: String,
    pub router_generation: u64,
    pub alpha: f64,
    pub top_p: u32,
    pub beta: f64,
    pub prior_strength: f64,
    /// The models ranked (the tenant's policy applied), best first, with their scores.
    pub ranked_models: Vec<String>,
    pub ranked_scores: Vec<f32>,
    /// The voting clusters and their weights.
    pub clusters: Vec<u32>,
    pub cluster_weights: Vec<f32>,
    pub explored: bool,
    /// The model that answered (after fallbacks); `None` for `/v1/route` or when none did.
    pub answered: Option<String>,
    pub fallbacks: u32,
    /// From arrival to the decision.
    pub route_ms: f64,
    pub first_byte_ms: Option<f64>,
    pub total_ms: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
}

/// An outcome reported for a decision (or for a text, without one).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutcomeRow {
    pub time_ms: u64,
    pub decision_id: Option<String>,
    pub model: String,
    pub score: f64,
    pub cost_usd: Option<f64>,
}

/// How the log gathers its files.
#[derive(Debug, Clone)]
pub struct DecisionLogOptions {
    pub dir: PathBuf,
    /// A file is written once this many rows have gathered...
    pub max_rows: usize,
    /// ...or this long after its first row.
    pub rotate_every: Duration,
    /// Keep the routed texts (else only their hashes).
    pub log_queries: bool,
}

enum Entry {
    Decision(Box<DecisionRow>),
    Outcome(OutcomeRow),
}

/// The handle serving writes through; dropping it writes what has gathered and stops the
/// writer thread.
pub struct DecisionLog {
    sender: Option<Sender<Entry>>,
    writer: Option<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
    log_queries: bool,
}

impl DecisionLog {
    /// Creates `options.dir` if need be and starts the writer thread.
    pub fn open(options: DecisionLogOptions) -> Result<DecisionLog> {
        fs::create_dir_all(&options.dir).map_err(|e| Error::io(&options.dir, e))?;
        let (sender, entries) = crossbeam_channel::bounded(QUEUE);
        let log_queries = options.log_queries;
        let writer = std::thread::Builder::new()
            .name("kroute-decision-log".into())
            .spawn(move || Gatherer::new(options).run(&entries))
            .map_err(|e| Error::Invalid(format!("cannot start the decision log thread: {e}")))?;
        Ok(DecisionLog {
            sender: Some(sender),
            writer: Some(writer),
            dropped: Arc::default(),
            log_queries,
        })
    }

    pub fn log_queries(&self) -> bool {
        self.log_queries
    }

    pub fn decision(&self, row: DecisionRow) {
        self.send(Entry::Decision(Box::new(row)));
    }

    pub fn outcome(&self, row: OutcomeRow) {
        self.send(Entry::Outcome(row));
    }

    /// Rows dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, entry: Entry) {
        let Some(sender) = &self.sender else { return };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sender.try_send(entry) {
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!("the decision log cannot keep up; rows are being dropped");
            }
        }
    }
}

impl Drop for DecisionLog {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread's rows in waiting.
struct Gatherer {
    options: DecisionLogOptions,
    decisions: Vec<DecisionRow>,
    outcomes: Vec<OutcomeRow>,
    since: Option<Instant>,
    files: u64,
}

impl Gatherer {
    fn new(options: DecisionLogOptions) -> Self {
        Self {
            options,
            decisions: Vec::new(),
            outcomes: Vec::new(),
            since: None,
            files: 0,
        }
    }

    fn run(mut self, entries: &Receiver<Entry>) {
        loop {
            let wait = match self.since {
                None => Duration::from_secs(3600),
                Some(since) => self.options.rotate_every.saturating_sub(since.elapsed()),
            };
            match entries.recv_timeout(wait) {
                Ok(entry) => {
                    self.since.get_or_insert_with(Instant::now);
                    match entry {
                        Entry::Decision(row) => self.decisions.push(*row),
                        Entry::Outcome(row) => self.outcomes.push(row),
                    }
                    if self.decisions.len().max(self.outcomes.len()) >= self.options.max_rows {
                        self.write();
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.write(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.write();
                    return;
                }
            }
        }
    }

    fn write(&mut self) {
        self.since = None;
        let decisions = std::mem::take(&mut self.decisions);
        let outcomes = std::mem::take(&mut self.outcomes);
        let batches = [
            (
                DECISIONS,
                decisions.first().map(|r| r.time_ms),
                decision_batch(&decisions),
            ),
            (
                OUTCOMES,
                outcomes.first().map(|r| r.time_ms),
                outcome_batch(&outcomes),
            ),
        ];
        for (kind, first_ms, batch) in batches {
            let Some(first_ms) = first_ms else { continue };
            self.files += 1;
            let name = format!("{kind}-{first_ms:013}-{:06}.parquet", self.files);
            let path = self.options.dir.join(name);
            let written = batch.and_then(|batch| write_parquet(&path, &batch));
            if let Err(e) = written {
                tracing::error!("decision log: {} rows not written: {e}", kind);
            }
        }
    }
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    let invalid =
        |e: parquet::errors::ParquetError| Error::Invalid(format!("{}: {e}", path.display()));
    let file = AtomicFile::create(path)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(properties)).map_err(invalid)?;
    writer.write(batch).map_err(invalid)?;
    writer.into_inner().map_err(invalid)?.commit()
}

/// The columns of a decisions file.
pub fn decision_schema() -> Arc<Schema> {
    let list = |name: &str, item: DataType| {
        Field::new(
            name,
            DataType::List(Arc::new(Field::new("item", item, false))),
            false,
        )
    };
    Arc::new(Schema::new(vec![
        Field::new("time_ms", DataType::UInt64, false),
        Field::new("endpoint", DataType::Utf8, false),
        Field::new("tenant", DataType::Utf8, false),
        Field::new("decision_id", DataType::Utf8, true),
        Field::new("query_sha256", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, true),
        Field::new("router_clusters", DataType::Utf8, false),
        Field::new("router_generation", DataType::UInt64, false),
        Field::new("alpha", DataType::Float64, false),
        Field::new("top_p", DataType::UInt32, false),
        Field::new("beta", DataType::Float64, false),
        Field::new("prior_strength", DataType::Float64, false),
        list("ranked_models", DataType::Utf8),
        list("ranked_scores", DataType::Float32),
        list("clusters", DataType::UInt32),
        list("cluster_weights", DataType::Float32),
        Field::new("explored", DataType::Boolean, false),
        Field::new("answered", DataType::Utf8, true),
        Field::new("fallbacks", DataType::UInt32, false),
        Field::new("route_ms", DataType::Float64, false),
        Field::new("first_byte_ms", DataType::Float64, true),
        Field::new("total_ms", DataType::Float64, true),
        Field::new("input_tokens", DataType::UInt64, true),
        Field::new("output_tokens", DataType::UInt64, true),
        Field::new("cost_usd", DataType::Float64, true),
    ]))
}

/// The columns of an outcomes file.
pub fn outcome_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("time_ms", DataType::UInt64, false),
        Field::new("decision_id", DataType::Utf8, true),
        Field::new("model", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        Field::new("cost_usd", DataType::Float64, true),
    ]))
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut builder = StringBuilder::new();
    values.for_each(|v| builder.append_option(v));
    Arc::new(builder.finish())
}

fn u64s(values: impl Iterator<Item = Option<u64>>) -> ArrayRef {
    let mut builder = UInt64Builder::new();
    values.for_each(|v| builder.append_option(v));
    Arc::new(builder.finish())
}

fn f64s(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    let mut builder = Float64Builder::new();
    values.for_each(|v| builder.append_option(v));
    Arc::new(builder.finish())
}

fn decision_batch(rows: &[DecisionRow]) -> Result<RecordBatch> {
    let string_lists = |values: &dyn Fn(&DecisionRow) -> &[String]| -> ArrayRef {
        let mut builder = ListBuilder::new(StringBuilder::new()).with_field(Field::new(
            "item",
            DataType::Utf8,
            false,
        ));
        for row in rows {
            values(row)
                .iter()
                .for_each(|v| builder.values().append_value(v));
            builder.append(true);
        }
        Arc::new(builder.finish())
    };
    let f32_lists = |values: &dyn Fn(&DecisionRow) -> &[f32]| -> ArrayRef {
        let mut builder = ListBuilder::new(Float32Builder::new()).with_field(Field::new(
            "item",
            DataType::Float32,
            false,
        ));
        for row in rows {
            builder.values().append_slice(values(row));
            builder.append(true);
        }
        Arc::new(builder.finish())
    };
    let mut clusters = ListBuilder::new(UInt32Builder::new()).with_field(Field::new(
        "item",
        DataType::UInt32,
        false,
    ));
    for row in rows {
        clusters.values().append_slice(&row.clusters);
        clusters.append(true);
    }
    let mut top_p = UInt32Builder::new();
    let mut fallbacks = UInt32Builder::new();
    let mut explored = BooleanBuilder::new();
    for row in rows {
        top_p.append_value(row.top_p);
        fallbacks.append_value(row.fallbacks);
        explored.append_value(row.explored);
    }
    let columns: Vec<ArrayRef> = vec![
        u64s(rows.iter().map(|r| Some(r.time_ms))),
        strings(rows.iter().map(|r| Some(r.endpoint.as_str()))),
        strings(rows.iter().map(|r| Some(r.tenant.as_str()))),
        strings(rows.iter().map(|r| r.decision_id.as_deref())),
        strings(rows.iter().map(|r| Some(r.query_sha256.as_str()))),
        strings(rows.iter().map(|r| r.query.as_deref())),
        strings(rows.iter().map(|r| Some(r.router_clusters.as_str()))),
        u64s(rows.iter().map(|r| Some(r.router_generation))),
        f64s(rows.iter().map(|r| Some(r.alpha))),
        Arc::new(top_p.finish()),
        f64s(rows.iter().map(|r| Some(r.beta))),
        f64s(rows.iter().map(|r| Some(r.prior_strength))),
        string_lists(&|r| &r.ranked_models),
        f32_lists(&|r| &r.ranked_scores),
        Arc::new(clusters.finish()),
        f32_lists(&|r| &r.cluster_weights),
        Arc::new(explored.finish()),
        strings(rows.iter().map(|r| r.answered.as_deref())),
        Arc::new(fallbacks.finish()),
        f64s(rows.iter().map(|r| Some(r.route_ms))),
        f64s(rows.iter().map(|r| r.first_byte_ms)),
        f64s(rows.iter().map(|r| r.total_ms)),
        u64s(rows.iter().map(|r| r.input_tokens)),
        u64s(rows.iter().map(|r| r.output_tokens)),
        f64s(rows.iter().map(|r| r.cost_usd)),
    ];
    RecordBatch::try_new(decision_schema(), columns)
        .map_err(|e| Error::Invalid(format!("decision log batch: {e}")))
}

fn outcome_batch(rows: &[OutcomeRow]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        u64s(rows.iter().map(|r| Some(r.time_ms))),
        strings(rows.iter().map(|r| r.decision_id.as_deref())),
        strings(rows.iter().map(|r| Some(r.model.as_str()))),
        f64s(rows.iter().map(|r| Some(r.score))),
        f64s(rows.iter().map(|r| r.cost_usd)),
    ];
    RecordBatch::try_new(outcome_schema(), columns)
        .map_err(|e| Error::Invalid(format!("decision log batch: {e}")))
}

/// Everything a decision log directory holds, oldest first.
#[derive(Debug, Default)]
pub struct LoggedDecisions {
    pub decisions: Vec<DecisionRow>,
    pub outcomes: Vec<OutcomeRow>,
    pub files: usize,
}

/// Reads every decisions and outcomes file in `dir` (files being written, under temporary
/// names, are not read). A file of another shape is an error naming it and its column.
pub fn read_log(dir: &Path) -> Result<LoggedDecisions> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    paths.sort();
    let mut log = LoggedDecisions::default();
    for path in paths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let kind = if name.starts_with(DECISIONS) {
            DECISIONS
        } else if name.starts_with(OUTCOMES) {
            OUTCOMES
        } else {
            continue;
        };
        for batch in read_batches(&path)? {
            let columns = Columns {
                path: &path,
                batch: &batch,
            };
            match kind {
                DECISIONS => log.decisions.extend(columns.decisions()?),
                _ => log.outcomes.extend(columns.outcomes()?),
            }
        }
        log.files += 1;
    }
    if log.files == 0 {
        return Err(
            InputError::new(dir, "no decisions-*.parquet or outcomes-*.parquet files").into(),
        );
    }
    log.decisions.sort_by_key(|r| r.time_ms);
    log.outcomes.sort_by_key(|r| r.time_ms);
    Ok(log)
}

fn read_batches(path: &Path) -> Result<Vec<RecordBatch>> {
    let invalid =
        |e: &dyn std::fmt::Display| -> Error { InputError::new(path, e.to_string()).into() };
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| invalid(&e))?
        .build()
        .map_err(|e| invalid(&e))?;
    reader.map(|batch| batch.map_err(|e| invalid(&e))).collect()
}

/// A batch's columns by name, typed, with errors naming the file and column.
struct Columns<'a> {
    path: &'a Path,
    batch: &'a RecordBatch,
}

impl Columns<'_> {
    fn column<T: Array + 'static>(&self, name: &str) -> Result<&T> {
        self.batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| {
                InputError::new(
                    self.path,
                    format!("column `{name}` is missing or of another type"),
                )
                .into()
            })
    }

    fn strings(&self, name: &str) -> Result<Vec<Option<String>>> {
        let column = self.column::<arrow_array::StringArray>(name)?;
        Ok(column.iter().map(|v| v.map(str::to_string)).collect())
    }

    fn required_strings(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .strings(name)?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect())
    }

    fn u64s(&self, name: &str) -> Result<Vec<Option<u64>>> {
        Ok(self
            .column::<arrow_array::UInt64Array>(name)?
            .iter()
            .collect())
    }

    fn f64s(&self, name: &str) -> Result<Vec<Option<f64>>> {
        Ok(self
            .column::<arrow_array::Float64Array>(name)?
            .iter()
            .collect())
    }

    fn lists<T: Array + Clone + 'static, V>(
        &self,
        name: &str,
        values: impl Fn(&T) -> Vec<V>,
    ) -> Result<Vec<Vec<V>>> {
        let column = self.column::<arrow_array::ListArray>(name)?;
        (0..column.len())
            .map(|i| {
                let row = column.value(i);
                let row = row.as_any().downcast_ref::<T>().ok_or_else(|| -> Error {
                    InputError::new(
                        self.path,
                        format!("column `{name}` holds lists of another type"),
                    )
                    .into()
                })?;
                Ok(values(row))
            })
            .collect()
    }

    fn decisions(&self) -> Result<Vec<DecisionRow>> {
        let time = self.u64s("time_ms")?;
        let endpoint = self.required_strings("endpoint")?;
        let tenant = self.required_strings("tenant")?;
        let decision_id = self.strings("decision_id")?;
        let query_sha256 = self.required_strings("query_sha256")?;
        let query = self.strings("query")?;
        let router_clusters = self.required_strings("router_clusters")?;
        let generation = self.u64s("router_generation")?;
        let alpha = self.f64s("alpha")?;
        let top_p = self.column::<arrow_array::UInt32Array>("top_p")?;
        let beta = self.f64s("beta")?;
        let prior_strength = self.f64s("prior_strength")?;
        let ranked_models = self.lists("ranked_models", |a: &arrow_array::StringArray| {
            a.iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect()
        })?;
        let floats = |a: &arrow_array::Float32Array| a.values().to_vec();
        let ranked_scores = self.lists("ranked_scores", floats)?;
        let clusters = self.lists("clusters", |a: &arrow_array::UInt32Array| {
            a.values().to_vec()
        })?;
        let cluster_weights = self.lists("cluster_weights", floats)?;
        let explored = self.column::<arrow_array::BooleanArray>("explored")?;
        let answered = self.strings("answered")?;
        let fallbacks = self.column::<arrow_array::UInt32Array>("fallbacks")?;
        let route_ms = self.f64s("route_ms")?;
        let first_byte_ms = self.f64s("first_byte_ms")?;
        let total_ms = self.f64s("total_ms")?;
        let input_tokens = self.u64s("input_tokens")?;
        let output_tokens = self.u64s("output_tokens")?;
        let cost_usd = self.f64s("cost_usd")?;
        Ok((0..self.batch.num_rows())
            .map(|i| DecisionRow {
                time_ms: time[i].unwrap_or_default(),
                endpoint: endpoint[i].clone(),
                tenant: tenant[i].clone(),
                decision_id: decision_id[i].clone(),
                query_sha256: query_sha256[i].clone(),
                query: query[i].clone(),
                router_clusters: router_clusters[i].clone(),
                router_generation: generation[i].unwrap_or_default(),
                alpha: alpha[i].unwrap_or_default(),
                top_p: top_p.value(i),
                beta: beta[i].unwrap_or_default(),
                prior_strength: prior_strength[i].unwrap_or_default(),
                ranked_models: ranked_models[i].clone(),
                ranked_scores: ranked_scores[i].clone(),
                clusters: clusters[i].clone(),
                cluster_weights: cluster_weights[i].clone(),
                explored: explored.value(i),
                answered: answered[i].clone(),
                fallbacks: fallbacks.value(i),
                route_ms: route_ms[i].unwrap_or_default(),
                first_byte_ms: first_byte_ms[i],
                total_ms: total_ms[i],
                input_tokens: input_tokens[i],
                output_tokens: output_tokens[i],
                cost_usd: cost_usd[i],
            })
            .collect())
    }

    fn outcomes(&self) -> Result<Vec<OutcomeRow>> {
        let time = self.u64s("time_ms")?;
        let decision_id = self.strings("decision_id")?;
        let model = self.required_strings("model")?;
        let score = self.f64s("score")?;
        let cost_usd = self.f64s("cost_usd")?;
        Ok((0..self.batch.num_rows())
            .map(|i| OutcomeRow {
                time_ms: time[i].unwrap_or_default(),
                decision_id: decision_id[i].clone(),
                model: model[i].clone(),
                score: score[i].unwrap_or_default(),
                cost_usd: cost_usd[i],
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u64) -> DecisionRow {
        DecisionRow {
            time_ms: 1_700_000_000_000 + i,
            endpoint: "chat".into(),
            tenant: "research".into(),
            decision_id: Some(format!("d{i}")),
            query_sha256: "ab".repeat(32),
            router_clusters: "c".into(),
            alpha: 0.5,
            top_p: 4,
            beta: 9.0,
            prior_strength: 5.0,
            ranked_models: vec!["a".into(), "b".into()],
            ranked_scores: vec![0.9, 0.1],
            clusters: vec![3, 1],
            cluster_weights: vec![0.7, 0.3],
            answered: i.is_multiple_of(2).then(|| "a".into()),
            cost_usd: Some(0.01),
            ..Default::default()
        }
    }

    #[test]
    fn rows_round_trip_through_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = DecisionLog::open(DecisionLogOptions {
            dir: dir.path().to_path_buf(),
            max_rows: 3,
            rotate_every: Duration::from_secs(60),
            log_queries: false,
        })
        .unwrap();
        let rows: Vec<DecisionRow> = (0..7).map(row).collect();
        rows.iter().cloned().for_each(|r| log.decision(r));
        let outcome = OutcomeRow {
            time_ms: 5,
            decision_id: Some("d2".into()),
            model: "a".into(),
            score: 1.0,
            cost_usd: None,
        };
        log.outcome(outcome.clone());
        drop(log);
        let read = read_log(dir.path()).unwrap();
        assert_eq!(read.decisions, rows);
        assert_eq!(read.outcomes, vec![outcome]);
        // 3 + 3 + 1 decisions (the last written at the stop, with the outcome).
        assert_eq!(read.files, 4);
        let names = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 4, "no temporary file is left behind");
    }

    #[test]
    fn a_foreign_parquet_file_is_refused_naming_it_and_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::UInt64, false)]));
        let batch = RecordBatch::try_new(schema, vec![u64s([Some(1)].into_iter())]).unwrap();
        write_parquet(&dir.path().join("decisions-1-1.parquet"), &batch).unwrap();
        let message = read_log(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("decisions-1-1.parquet") && message.contains("time_ms"),
            "{message}"
        );
    }
}
