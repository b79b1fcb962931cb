use std::path::{Path, PathBuf};

use clap::Args;
use kroute::io::TextReaderOptions;
use kroute::job::checkpoint::partial_dir;
use kroute::job::{EmbedJob, Shard};
use kroute::settings::EmbedderSettings;
use kroute::{Error, Result};
use serde_json::json;

use super::args::ReportArgs;
use super::{interrupt_flag, progress_bar};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute embed data/queries.txt -o queries.safetensors
  kroute embed data/routerbench-3k.jsonl.gz --field query -o emb.npy --device cuda
  kroute embed train.parquet --field text --id-field id -o train-emb.parquet
  kroute embed shards/ --field text -o emb.parquet --resume       # a directory of Parquet files
  kroute embed big.parquet --field text --id-field id --shard 2/8 -o part-2.parquet --device cuda:2

The input is read twice: once to validate every row (so bad input fails before any work is \
done) and once to embed it in chunks, so memory stays flat however large it is. Every chunk is \
checkpointed in OUTPUT.partial/ (written whole or not at all); the output is assembled from the \
chunks and renamed into place only when complete. An interrupted run (error, Ctrl-C, kill, power \
loss) leaves no OUTPUT: run the same command with --resume to embed only what is missing. \
--shard I/N embeds the I-th of N contiguous row ranges (0-based), for N processes, GPUs or \
machines; with --id-field the parts can be joined back on their ids, or read together as a \
directory of Parquet files.")]
pub struct EmbedArgs {
    /// Input texts: `.txt` (one per line), `.jsonl`/`.jsonl.gz` (text in `--field`), `.parquet`
    /// or a directory of `.parquet` files (read in name order), or Arrow IPC `.arrow` (text in
    /// the `--field` column). `-` reads standard input (any of these, told by its first bytes).
    pub input: PathBuf,

    /// Output file; the extension picks the format: `.safetensors` (tensor `embeddings` plus
    /// model metadata), `.npy` (float32), `.jsonl` (`{"index", ["id",] "embedding"}` per line)
    /// or `.parquet` (`[id,] embedding` as FixedSizeList<Float32, dim>, model metadata in the
    /// key-value metadata).
    #[arg(short, long)]
    pub output: PathBuf,

    /// JSONL field or Parquet/Arrow column that holds the text.
    #[arg(long, default_value = "query")]
    pub field: String,

    /// JSONL field or column holding an id (integer or string) to carry into the output
    /// (`.parquet` and `.jsonl` outputs).
    #[arg(long, value_name = "COLUMN")]
    pub id_field: Option<String>,

    /// Skip empty texts and nulls (counted in the summary) instead of failing on the first one.
    #[arg(long)]
    pub skip_empty: bool,

    /// Embed only the I-th (0-based) of N contiguous, near-equal ranges of the input's rows.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,

    /// Continue an interrupted run into the same OUTPUT from its checkpoint (OUTPUT.partial/);
    /// refused, naming what changed, if the input, the options or the model differ.
    #[arg(long)]
    pub resume: bool,

    /// Texts per chunk: tokenized, sorted and batched together, and checkpointed as one.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub chunk_rows: usize,

    /// Keep raw pooled vectors instead of L2-normalising them.
    #[arg(long)]
    pub no_normalize: bool,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub embedder: EmbedderSettings,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

pub fn run(args: EmbedArgs) -> Result<()> {
    if args.chunk_rows == 0 {
        return Err(Error::Invalid("--chunk-rows must be at least 1".into()));
    }
    if args.resume && kroute::io::is_stdin(&args.input) {
        return Err(Error::Invalid(
            "--resume needs an input file: standard input cannot be read again".into(),
        ));
    }
    super::on_input(&args.input.clone(), |input| embed(args, input))
}

fn embed(args: EmbedArgs, input: &Path) -> Result<()> {
    let job = EmbedJob {
        input: input.to_path_buf(),
        output: args.output.clone(),
        reader: TextReaderOptions {
            field: args.field.clone(),
            id_field: args.id_field.clone(),
            skip_empty: args.skip_empty,
        },
        shard: args.shard,
        resume: args.resume,
    };
    let scan = job.validate()?;
    let embedder = args
        .embedder
        .load_with_chunk_size(!args.no_normalize, args.chunk_rows)?;

    let interrupted = interrupt_flag();
    let bar = progress_bar(0, "texts", args.report.quiet);
    let mut metadata = kroute::io::OutputMetadata::new();
    metadata.insert("kroute_version".into(), env!("CARGO_PKG_VERSION").into());
    let summary = job.run(
        &embedder,
        &scan,
        metadata,
        |rows, done| {
            bar.set_length(rows as u64);
            bar.set_position(done as u64);
        },
        |rows| bar.inc(rows as u64),
        &interrupted,
    );
    bar.finish_and_clear();
    let summary = match summary {
        Ok(summary) => summary,
        Err(e) => {
            let checkpoint = partial_dir(&args.output);
            if checkpoint.exists() && !kroute::io::is_stdin(&args.input) {
                eprintln!(
                    "no output written; finished chunks are kept in {}: run the same command \
                     with --resume to continue",
                    checkpoint.display()
                );
            }
            return Err(e);
        }
    };
    let stats = &summary.stats;
    let summary = json!({
        "n": summary.rows,
        "skipped_empty": summary.skipped_empty,
        "resumed_rows": summary.resumed_rows,
        "shard_rows": summary.shard_rows,
        "truncated": stats.truncated,
        "tokens": stats.tokens,
        "padded_tokens": stats.padded_tokens,
        "batches": stats.batches,
        "seconds": round3(stats.seconds),
        "checkpoint_seconds": round3(summary.checkpoint_seconds),
        "sentences_per_s": round3(stats.sentences_per_s()),
        "tokens_per_s": round3(stats.tokens_per_s()),
        "device": args.embedder.device.to_string(),
        "dtype": embedder.precision().as_str(),
        "int8_kernel": embedder.precision().int8_kernel(),
        "model": embedder.model().id,
        "output": args.output,
    });
    args.report.emit(&summary)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
