//! Batch embedding as a library call: what `kroute embed` does. Validate the whole input,
//! embed its rows (or one shard's) chunk by chunk into a checkpoint, then assemble the output
//! from the chunks and rename it into place. An interrupted run resumes from its checkpoint
//! and writes exactly the output an uninterrupted run writes.

pub mod checkpoint;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::embed::{EmbedStats, Embedder, EmbeddingInfo};
use crate::error::{Error, Result};
use crate::io::{
    EmbeddingFormat, EmbeddingWriter, OutputLayout, OutputMetadata, TextFormat, TextReader,
    TextReaderOptions,
};
use checkpoint::{Checkpoint, InputFingerprint, Manifest};

/// `--shard I/N`: the `I`-th of `N` contiguous, near-equal row ranges (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The rows `[start, end)` of this shard among `rows`.
    pub fn range(self, rows: usize) -> (usize, usize) {
        (
            rows * self.index / self.count,
            rows * (self.index + 1) / self.count,
        )
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::Invalid(format!("--shard `{s}`: expected I/N with 0 ≤ I < N"));
        let (index, count) = s.split_once('/').ok_or_else(invalid)?;
        let (index, count): (usize, usize) = (
            index.trim().parse().map_err(|_| invalid())?,
            count.trim().parse().map_err(|_| invalid())?,
        );
        if count == 0 || index >= count {
            return Err(invalid());
        }
        Ok(Self { index, count })
    }
}

/// One `kroute embed` run.
#[derive(Debug, Clone)]
pub struct EmbedJob {
    pub input: PathBuf,
    pub output: PathBuf,
    pub reader: TextReaderOptions,
    pub shard: Option<Shard>,
    /// Continue an interrupted run's checkpoint (refused if anything that shapes the output
    /// changed); without it an existing checkpoint is refused.
    pub resume: bool,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// Rows in the output.
    pub rows: usize,
    /// Empty rows skipped in the whole input (`--skip-empty`).
    pub skipped_empty: usize,
    /// Rows taken from an interrupted run's checkpoint instead of embedded again.
    pub resumed_rows: usize,
    /// `[start, end)` rows of the input's valid rows this shard covers.
    pub shard_rows: [usize; 2],
    /// Seconds spent writing chunks and assembling the output from them: the price of being
    /// resumable.
    pub checkpoint_seconds: f64,
    /// Counters of the rows embedded in this run (`seconds`: the embedding loop, chunk writes
    /// included).
    pub stats: EmbedStats,
}

impl EmbedJob {
    /// Checks what can be checked before a model is loaded: the output type, the input (every
    /// row), ids against the output type. Returns the input scan.
    pub fn validate(&self) -> Result<crate::io::Scan> {
        let format = EmbeddingFormat::from_path(&self.output)?;
        let scan = TextReader::scan(&self.input, self.reader.clone())?;
        if scan.id_kind.is_some() && !format.holds_ids() {
            return Err(Error::Invalid(format!(
                "{}: ids (--id-field) need a .parquet or .jsonl output; .npy and .safetensors hold vectors only",
                self.output.display()
            )));
        }
        Ok(scan)
    }

    /// Runs the job with `embedder`. `metadata` goes into the output (with the model's
    /// identity); `start` is told the rows to do and those already done, `progress` the rows of
    /// every batch; `interrupted` stops the run at the next chunk (its checkpoint stays).
    pub fn run(
        &self,
        embedder: &Embedder,
        scan: &crate::io::Scan,
        mut metadata: OutputMetadata,
        start: impl FnOnce(usize, usize),
        progress: impl FnMut(usize),
        interrupted: &AtomicBool,
    ) -> Result<JobSummary> {
        let (first, end) = self
            .shard
            .map_or((0, scan.texts), |shard| shard.range(scan.texts));
        let rows = end - first;
        let embedding = EmbeddingInfo::of(embedder);
        metadata.extend(embedding.to_metadata());
        if let Some(shard) = self.shard {
            metadata.insert("shard".into(), format!("{}/{}", shard.index, shard.count));
            metadata.insert("shard_rows".into(), format!("{first}..{end}"));
        }
        let manifest = Manifest {
            kroute_version: env!("CARGO_PKG_VERSION").into(),
            inputs: input_files(&self.input)?
                .iter()
                .map(|f| InputFingerprint::of(f))
                .collect::<Result<_>>()?,
            reader: self.reader.clone(),
            shard: self.shard.map(|s| [s.index, s.count]),
            chunk_rows: embedder.chunk_size(),
            embedding,
            rows,
            ids: scan.id_kind,
        };
        let mut checkpoint = Checkpoint::begin(&self.output, manifest, self.resume)?;
        let resumed_rows = checkpoint.rows_done();
        start(rows, resumed_rows);

        let texts = self
            .open()?
            .texts()
            .skip(first + resumed_rows)
            .take(rows - resumed_rows);
        let mut checkpoint_time = Duration::ZERO;
        let stats = embedder.embed_stream(
            texts,
            |chunk| {
                if interrupted.load(Ordering::SeqCst) {
                    return Err(Error::Interrupted);
                }
                let rows = chunk.flatten_all()?.to_vec1::<f32>()?;
                let started = Instant::now();
                checkpoint.write_chunk(&rows)?;
                checkpoint_time += started.elapsed();
                Ok(())
            },
            progress,
        )?;
        if checkpoint.rows_done() != rows {
            return Err(Error::Invalid(format!(
                "{}: {} of {rows} rows embedded; the input changed during the run?",
                self.input.display(),
                checkpoint.rows_done()
            )));
        }

        let assembly = Instant::now();
        let layout = OutputLayout {
            rows,
            dim: embedder.dim(),
            ids: scan.id_kind,
        };
        let mut writer =
            EmbeddingWriter::create_in(&self.output, checkpoint.dir(), layout, &metadata)?;
        let mut ids = self
            .open()?
            .skip(first)
            .take(rows)
            .map(|record| record.map(|r| r.id));
        for chunk in checkpoint.chunks() {
            let chunk = chunk?;
            let chunk_ids = if scan.id_kind.is_some() {
                ids.by_ref()
                    .take(chunk.len() / layout.dim)
                    .map(|id| id.map(|id| id.expect("ids were validated")))
                    .collect::<Result<Vec<_>>>()?
            } else {
                Vec::new()
            };
            writer.write_rows(&chunk, &chunk_ids)?;
        }
        writer.finish()?;
        checkpoint.remove()?;
        Ok(JobSummary {
            rows,
            skipped_empty: scan.skipped,
            resumed_rows,
            shard_rows: [first, end],
            checkpoint_seconds: (checkpoint_time + assembly.elapsed()).as_secs_f64(),
            stats,
        })
    }

    fn open(&self) -> Result<TextReader> {
        TextReader::open(&self.input, self.reader.clone())
    }
}

/// The files an input reads: itself, or a directory's Parquet files.
fn input_files(input: &Path) -> Result<Vec<PathBuf>> {
    if TextFormat::from_path(input)? == TextFormat::Parquet && input.is_dir() {
        crate::io::parquet_files(input)
    } else {
        Ok(vec![input.to_path_buf()])
    }
}
