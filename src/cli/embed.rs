use std::path::PathBuf;
use std::sync::atomic::Ordering;

use clap::Args;
use kroute::embed::EmbeddingInfo;
use kroute::io::{EmbeddingWriter, TextReader, TextReaderOptions};
use kroute::{Error, Result};
use serde_json::json;

use super::args::EmbedderArgs;
use super::{emit_summary, interrupt_flag, progress_bar};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute embed data/queries.txt -o queries.safetensors
  kroute embed data/routerbench-3k.jsonl.gz --field query -o emb.npy --device cuda

The input is read twice: once to validate every line (so bad input fails before any work is \
done) and once to embed it in chunks, so memory stays flat however large the file is. The output \
is written under a temporary name and renamed into place only when complete.")]
pub struct EmbedArgs {
    /// Input texts: `.txt` (one per line), `.jsonl` or `.jsonl.gz` (text in `--field`).
    pub input: PathBuf,

    /// Output file; the extension picks the format: `.safetensors` (tensor `embeddings` plus
    /// model metadata), `.npy` (float32) or `.jsonl` (`{"index", "embedding"}` per line).
    #[arg(short, long)]
    pub output: PathBuf,

    /// JSONL field that holds the text.
    #[arg(long, default_value = "query")]
    pub field: String,

    /// Skip empty lines/texts (counted in the summary) instead of failing on the first one.
    #[arg(long)]
    pub skip_empty: bool,

    /// Keep raw pooled vectors instead of L2-normalising them.
    #[arg(long)]
    pub no_normalize: bool,

    /// Write the one-line JSON summary to this file instead of stderr.
    #[arg(long)]
    pub summary: Option<PathBuf>,

    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub embedder: EmbedderArgs,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let reader_options = TextReaderOptions {
        field: args.field.clone(),
        skip_empty: args.skip_empty,
    };
    kroute::io::EmbeddingFormat::from_path(&args.output)?;
    let (count, skipped) = TextReader::scan(&args.input, reader_options.clone())?;
    let embedder = args.embedder.load(None, !args.no_normalize)?;
    let mut metadata = EmbeddingInfo::of(&embedder).to_metadata();
    metadata.insert("kroute_version".into(), env!("CARGO_PKG_VERSION").into());
    let mut writer = EmbeddingWriter::create(&args.output, count, embedder.dim(), &metadata)?;

    let interrupted = interrupt_flag();
    let bar = progress_bar(count as u64, "texts", args.quiet);
    let texts = TextReader::open(&args.input, reader_options)?;
    let stats = embedder.embed_stream(
        texts,
        |chunk| {
            if interrupted.load(Ordering::SeqCst) {
                return Err(Error::Interrupted);
            }
            writer.write_rows(&chunk.flatten_all()?.to_vec1::<f32>()?)
        },
        |rows| bar.inc(rows as u64),
    )?;
    writer.finish()?;
    bar.finish_and_clear();

    let summary = json!({
        "n": stats.texts,
        "skipped_empty": skipped,
        "truncated": stats.truncated,
        "tokens": stats.tokens,
        "padded_tokens": stats.padded_tokens,
        "batches": stats.batches,
        "seconds": round3(stats.seconds),
        "sentences_per_s": round3(stats.sentences_per_s()),
        "tokens_per_s": round3(stats.tokens_per_s()),
        "device": args.embedder.device.to_string(),
        "dtype": embedder.dtype().as_str(),
        "model": embedder.model().id,
        "output": args.output,
    });
    emit_summary(&summary, args.summary.as_deref())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
