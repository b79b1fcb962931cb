//! The embedding engine: text in, L2-normalised sentence vectors out, in input order.
//!
//! Work is pipelined per chunk of texts: a producer thread tokenizes the next chunk (on all
//! cores), sorts it by length and builds padded batch tensors, while the caller's thread runs
//! the encoder on the current one. Memory is bounded by the chunk size, not the input size.

mod batch;
pub mod config;
mod info;
pub mod models;
mod pooling;
mod tokenize;

use std::sync::mpsc::sync_channel;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

pub use crate::model::Pooling;
pub use batch::{plan_batches, BatchPlan};
pub use config::SentenceConfig;
pub use info::EmbeddingInfo;
use models::{Encoder, EncoderConfig};
pub use pooling::{l2_normalize, pool};
use tokenize::TextTokenizer;
pub use tokenize::Tokens;

use crate::device::Precision;
use crate::error::{Error, Result};
use crate::model::{resolve, ModelFiles};

/// Tuning knobs with defaults that suit both CPU and GPU.
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// Padded tokens per batch (rows × longest row) [default: [`default_batch_tokens`]].
    pub max_batch_tokens: Option<usize>,
    /// L2-normalise the vectors (what routing expects).
    pub normalize: bool,
    /// Override the model's `max_seq_length`.
    pub max_seq_length: Option<usize>,
    /// Texts tokenized, sorted and batched together; bounds memory when streaming.
    pub chunk_size: usize,
    /// Text prepended to every input before tokenization; `Some("")` means none even where the
    /// model has a default prompt.
    pub prompt: Option<String>,
    /// A prompt of the model's `config_sentence_transformers.json` (or registry card) by name.
    pub prompt_name: Option<String>,
    /// Override the model's pooling.
    pub pooling: Option<Pooling>,
    /// Keep the first N dimensions of each vector (Matryoshka models), normalised again.
    pub dimensions: Option<usize>,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        Self {
            max_batch_tokens: None,
            normalize: true,
            max_seq_length: None,
            chunk_size: 4096,
            prompt: None,
            prompt_name: None,
            pooling: None,
            dimensions: None,
        }
    }
}

/// Padded tokens per batch when not given: CPU throughput peaks at small batches whose
/// activations stay in cache (measured in docs/BENCHMARKS.md); GPUs want large ones.
pub fn default_batch_tokens(device: &Device) -> usize {
    if device.is_cpu() {
        2048
    } else {
        16384
    }
}

/// Counters of one embedding run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EmbedStats {
    pub texts: usize,
    /// Real tokens, special tokens included.
    pub tokens: usize,
    /// Tokens the encoder ran, padding included.
    pub padded_tokens: usize,
    /// Texts cut at `max_seq_length`.
    pub truncated: usize,
    pub batches: usize,
    pub seconds: f64,
}

impl EmbedStats {
    pub fn sentences_per_s(&self) -> f64 {
        self.texts as f64 / self.seconds.max(1e-9)
    }

    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }

    fn merge(&mut self, other: &EmbedStats) {
        self.texts += other.texts;
        self.tokens += other.tokens;
        self.padded_tokens += other.padded_tokens;
        self.truncated += other.truncated;
        self.batches += other.batches;
    }
}

/// A sentence encoder loaded on a device.
pub struct Embedder {
    encoder: Box<dyn Encoder>,
    tokenizer: TextTokenizer,
    model: ModelFiles,
    pooling: Pooling,
    max_seq_length: usize,
    options: EmbedderOptions,
    device: Device,
    precision: Precision,
}

/// A batch ready for the encoder, built off the compute thread.
struct PreparedBatch {
    rows: usize,
    input_ids: Tensor,
    attention_bias: Tensor,
    mask: Tensor,
}

/// Tokenized texts turned into encoder batches (sorted by length, cut by the token budget) and
/// how to restore input order. Built by [`Embedder::prepare`] on any thread, so the next input
/// can be prepared while the encoder runs the current one.
pub struct Prepared {
    batches: Vec<PreparedBatch>,
    /// `restore[i]` = position of input row `i` among the batches' concatenated rows.
    restore: Tensor,
    stats: EmbedStats,
}

impl Embedder {
    /// Resolves `model` (directory or hub id) and loads it with default options.
    /// `precision` defaults to f32 on CPU, f16 on GPUs (bf16 for Qwen3).
    pub fn load(model: &str, device: &Device, precision: Option<Precision>) -> Result<Self> {
        Self::from_files(
            resolve(model)?,
            device,
            precision,
            EmbedderOptions::default(),
        )
    }

    /// Loads the model in `model`'s directory: the architecture from `config.json`'s
    /// `model_type`, pooling, length limit and prompts from its sentence-transformers configs
    /// (or registry card), each overridden by `options`.
    pub fn from_files(
        model: ModelFiles,
        device: &Device,
        precision: Option<Precision>,
        options: EmbedderOptions,
    ) -> Result<Self> {
        let config = EncoderConfig::read(&model.path("config.json"))?;
        config.validate()?;
        let precision = precision.unwrap_or(config.architecture.default_precision(device));
        let sentence = SentenceConfig::read(&model, model.card())?;
        let prompt = sentence.prompt(options.prompt.as_deref(), options.prompt_name.as_deref())?;
        let encoder = models::load(&config, &model.weights()?, precision, device)?;
        if let Some(n) = options.dimensions {
            if n == 0 || n > encoder.hidden_size() {
                return Err(Error::Invalid(format!(
                    "--dimensions {n}: the model's vectors have {} dimensions",
                    encoder.hidden_size()
                )));
            }
        }
        let max_seq_length = options
            .max_seq_length
            .or(sentence
                .max_seq_length
                .filter(|&n| n <= encoder.max_positions()))
            .unwrap_or(encoder.default_max_length())
            .min(encoder.max_positions());
        let tokenizer = TextTokenizer::load(&model.path("tokenizer.json"), max_seq_length, prompt)?;
        if let Some(largest) = tokenizer.largest_id() {
            if largest as usize >= encoder.vocab_size() {
                return Err(Error::Invalid(format!(
                    "{}: token id {largest} is outside the model's {} embeddings ({})",
                    model.path("tokenizer.json").display(),
                    encoder.vocab_size(),
                    model.path("config.json").display()
                )));
            }
        }
        Ok(Self {
            encoder,
            tokenizer,
            model,
            pooling: options
                .pooling
                .or(sentence.pooling)
                .unwrap_or(config.architecture.default_pooling()),
            max_seq_length,
            options,
            device: device.clone(),
            precision,
        })
    }

    /// Loads an embedder that gives the vectors `expected` describes: `model` (default: the
    /// model `expected` names, at its revision) with `options`' prompt, pooling, length and
    /// dimensions where set and `expected`'s elsewhere. Vectors that would differ from
    /// `expected` are refused, naming the field and `expected_by` (e.g. "the router").
    pub fn load_matching(
        expected: &EmbeddingInfo,
        model: Option<&str>,
        device: &Device,
        precision: Option<Precision>,
        options: EmbedderOptions,
        expected_by: &str,
    ) -> Result<Self> {
        let trained_with = match &expected.revision {
            Some(revision) => format!("{}@{revision}", expected.model),
            None => expected.model.clone(),
        };
        let prompt = if options.prompt.is_some() || options.prompt_name.is_some() {
            options.prompt
        } else {
            Some(expected.prompt.clone())
        };
        let options = EmbedderOptions {
            max_seq_length: options.max_seq_length.or(Some(expected.max_seq_length)),
            prompt,
            pooling: options.pooling.or(Some(expected.pooling)),
            dimensions: options.dimensions.or(Some(expected.dim)),
            normalize: expected.normalized,
            ..options
        };
        let model = model.unwrap_or(&trained_with);
        let embedder = Self::from_files(resolve(model)?, device, precision, options)?;
        expected.check(&embedder, expected_by)?;
        Ok(embedder)
    }

    /// The encoder itself, for running pre-tokenized batches (benchmarks).
    pub fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    pub fn model(&self) -> &ModelFiles {
        &self.model
    }

    /// Dimensions of the output vectors (`dimensions` if set, else the model's).
    pub fn dim(&self) -> usize {
        self.options
            .dimensions
            .unwrap_or(self.encoder.hidden_size())
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub fn normalize(&self) -> bool {
        self.options.normalize
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Texts tokenized, sorted and batched together (and, in `kroute embed`, checkpointed).
    pub fn chunk_size(&self) -> usize {
        self.options.chunk_size.max(1)
    }

    /// The text prepended to every input ("" for none).
    pub fn prompt(&self) -> &str {
        self.tokenizer.prompt()
    }

    /// Embeds `texts` into an `(n, dim)` f32 tensor on the embedder's device, in input order.
    pub fn embed<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Tensor> {
        let mut parts = Vec::new();
        self.embed_chunks(
            texts.chunks(self.options.chunk_size.max(1)),
            |part| {
                parts.push(part);
                Ok(())
            },
            |_| {},
        )?;
        if parts.is_empty() {
            return Ok(Tensor::zeros((0, self.dim()), DType::F32, &self.device)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// [`Embedder::embed`], copied to the host as one vector per text.
    pub fn embed_vecs<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed(texts)?.to_vec2()?)
    }

    /// Embeds a stream of texts chunk by chunk. `sink` receives each chunk's `(rows, dim)` f32
    /// tensor in input order; `progress` is told the number of texts after every batch.
    /// Tokenization of the next chunk overlaps the encoder's work on the current one.
    pub fn embed_stream<I, S>(
        &self,
        texts: I,
        sink: impl FnMut(Tensor) -> Result<()>,
        progress: impl FnMut(usize),
    ) -> Result<EmbedStats>
    where
        I: Iterator<Item = Result<S>> + Send,
        S: AsRef<str> + Sync + Send,
    {
        let chunk_size = self.chunk_size();
        let mut texts = texts.peekable();
        let chunks = std::iter::from_fn(move || {
            texts.peek()?;
            Some(texts.by_ref().take(chunk_size).collect::<Result<Vec<S>>>())
        });
        self.embed_chunks(chunks, sink, progress)
    }

    fn embed_chunks<C, S>(
        &self,
        chunks: impl Iterator<Item = C> + Send,
        mut sink: impl FnMut(Tensor) -> Result<()>,
        mut progress: impl FnMut(usize),
    ) -> Result<EmbedStats>
    where
        C: IntoChunk<S>,
        S: AsRef<str> + Sync,
    {
        let start = Instant::now();
        let mut stats = EmbedStats::default();
        std::thread::scope(|scope| -> Result<()> {
            // One chunk in flight ahead of the encoder: enough to hide tokenization.
            let (tx, rx) = sync_channel::<Result<Prepared>>(1);
            scope.spawn(move || {
                for chunk in chunks {
                    let prepared = chunk
                        .into_chunk()
                        .and_then(|texts| self.prepare(self.tokenize(texts.as_ref())?));
                    let failed = prepared.is_err();
                    if tx.send(prepared).is_err() || failed {
                        break;
                    }
                }
            });
            for prepared in rx {
                let prepared = prepared?;
                sink(self.encode(&prepared, &mut progress)?)?;
                stats.merge(&prepared.stats);
            }
            Ok(())
        })?;
        stats.seconds = start.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Tokenizes `texts` on all cores with the model's truncation, without padding.
    pub fn tokenize<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Tokens>> {
        self.tokenizer.tokenize(texts)
    }

    /// Builds the encoder batches of `tokens` (from [`Embedder::tokenize`]).
    pub fn prepare(&self, tokens: Vec<Tokens>) -> Result<Prepared> {
        let lengths: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
        let budget = self
            .options
            .max_batch_tokens
            .unwrap_or_else(|| default_batch_tokens(&self.device));
        let plans = plan_batches(&lengths, budget);
        let mut stats = EmbedStats {
            texts: tokens.len(),
            tokens: lengths.iter().sum(),
            truncated: tokens.iter().filter(|t| t.truncated).count(),
            batches: plans.len(),
            ..Default::default()
        };
        let mut restore = vec![0u32; tokens.len()];
        let mut position = 0u32;
        let mut batches = Vec::with_capacity(plans.len());
        for plan in &plans {
            let (rows, seq) = (plan.rows.len(), plan.seq_len);
            stats.padded_tokens += rows * seq;
            let mut ids = vec![0u32; rows * seq];
            let mut mask = vec![0f32; rows * seq];
            let mut row_lengths = Vec::with_capacity(rows);
            for (r, &row) in plan.rows.iter().enumerate() {
                let row_ids = &tokens[row].ids;
                ids[r * seq..r * seq + row_ids.len()].copy_from_slice(row_ids);
                mask[r * seq..r * seq + row_ids.len()].fill(1.0);
                row_lengths.push(row_ids.len());
                restore[row] = position;
                position += 1;
            }
            batches.push(PreparedBatch {
                rows,
                input_ids: Tensor::from_vec(ids, (rows, seq), &self.device)?,
                attention_bias: models::attention_bias(
                    &row_lengths,
                    seq,
                    self.precision.activations(),
                    &self.device,
                )?,
                mask: Tensor::from_vec(mask, (rows, seq), &self.device)?,
            });
        }
        Ok(Prepared {
            batches,
            restore: Tensor::from_vec(restore, tokens.len(), &self.device)?,
            stats,
        })
    }

    /// Runs the encoder on prepared input: `(rows, dim)` f32 in the order the texts were
    /// tokenized. `progress` is told the rows of every finished batch.
    pub fn encode(&self, prepared: &Prepared, mut progress: impl FnMut(usize)) -> Result<Tensor> {
        if prepared.batches.is_empty() {
            return Ok(Tensor::zeros((0, self.dim()), DType::F32, &self.device)?);
        }
        let mut outputs = Vec::with_capacity(prepared.batches.len());
        for batch in &prepared.batches {
            outputs.push(self.run_batch(batch)?);
            progress(batch.rows);
        }
        Ok(Tensor::cat(&outputs, 0)?.index_select(&prepared.restore, 0)?)
    }

    fn run_batch(&self, batch: &PreparedBatch) -> Result<Tensor> {
        let hidden = self
            .encoder
            .forward(&batch.input_ids, &batch.attention_bias)?;
        let pooled = pooling::pool(&hidden, &batch.mask, self.pooling, self.options.normalize)?;
        match self.options.dimensions {
            Some(n) if n < pooled.dim(1)? => {
                let kept = pooled.narrow(1, 0, n)?;
                if self.options.normalize {
                    l2_normalize(&kept)
                } else {
                    Ok(kept.contiguous()?)
                }
            }
            _ => Ok(pooled),
        }
    }
}

impl Prepared {
    /// Counters of these texts (`seconds` is not set).
    pub fn stats(&self) -> &EmbedStats {
        &self.stats
    }
}

/// A chunk of texts as the producer thread receives it: borrowed (from a slice) or owned and
/// fallible (read from a stream).
trait IntoChunk<S>: Send {
    type Texts: AsRef<[S]>;
    fn into_chunk(self) -> Result<Self::Texts>;
}

impl<'a, S: Sync> IntoChunk<S> for &'a [S] {
    type Texts = &'a [S];
    fn into_chunk(self) -> Result<&'a [S]> {
        Ok(self)
    }
}

impl<S: Send> IntoChunk<S> for Result<Vec<S>> {
    type Texts = Vec<S>;
    fn into_chunk(self) -> Result<Vec<S>> {
        self
    }
}
