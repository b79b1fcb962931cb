//! Command-line front end: argument parsing, progress bars and human/JSON output. No logic that a
//! library user would need lives here.

mod embed;
mod models;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kroute::device::{parse_dtype, DeviceSpec};
use kroute::model::{resolve, DEFAULT_MODEL};
use kroute::{Embedder, EmbedderOptions, Error};

/// Local sentence embeddings and Avengers-Pro LLM routing, on CPU, CUDA or Metal.
#[derive(Parser)]
#[command(name = "kroute", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed every text of a file with a local sentence-embedding model.
    Embed(embed::EmbedArgs),
    /// List the known models or fetch one into the Hugging Face cache.
    #[command(subcommand)]
    Models(models::ModelsCommand),
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KROUTE_LOG")
                .unwrap_or_else(|_| "kroute=info".into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Models(command) => models::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Interrupted) => {
            eprintln!("interrupted; no output written");
            ExitCode::from(130)
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Model, device and batching flags shared by every command that embeds.
#[derive(Args, Debug, Clone)]
pub struct EmbedderArgs {
    /// Embedding model: a local directory or a Hugging Face repo id (`org/name[@revision]`).
    /// Registered models (`kroute models list`) are verified by sha256 and have offline mirrors.
    #[arg(long, default_value = DEFAULT_MODEL, env = "KROUTE_MODEL")]
    pub model: String,

    /// Compute device: cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu", env = "KROUTE_DEVICE", value_parser = parse_device)]
    pub device: DeviceSpec,

    /// Model precision: f32, f16 or bf16 [default: f32 on cpu, f16 on cuda/metal].
    #[arg(long, value_parser = parse_dtype_arg)]
    pub dtype: Option<candle_core::DType>,

    /// Padded tokens per batch (rows × longest row) [default: 2048 on cpu, 16384 on cuda/metal].
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,

    /// Truncate inputs to this many tokens [default: the model's max_seq_length, 256 for MiniLM].
    #[arg(long)]
    pub max_seq_length: Option<usize>,
}

impl EmbedderArgs {
    pub fn load(&self, normalize: bool) -> kroute::Result<Embedder> {
        let device = self.device.open()?;
        let options = EmbedderOptions {
            max_batch_tokens: self.max_batch_tokens,
            max_seq_length: self.max_seq_length,
            normalize,
            ..Default::default()
        };
        Embedder::from_files(resolve(&self.model)?, &device, self.dtype, options)
    }
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

fn parse_dtype_arg(s: &str) -> Result<candle_core::DType, String> {
    parse_dtype(s).map_err(|e| e.to_string())
}

/// A progress bar on stderr (hidden when `quiet` or when stderr is not a terminal).
pub fn progress_bar(len: u64, unit: &str, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Set by Ctrl-C; long loops check it and stop cleanly so temporary files are removed.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    // A second registration (tests calling twice in one process) is harmless to ignore.
    let _ = ctrlc::set_handler(move || handler_flag.store(true, Ordering::SeqCst));
    flag
}

/// Writes `contents` to `path` atomically.
pub fn write_atomic(path: &Path, contents: &[u8]) -> kroute::Result<()> {
    use std::io::Write;
    let mut file = kroute::io::AtomicFile::create(path)?;
    file.write_all(contents).map_err(|e| Error::io(path, e))?;
    file.commit()
}
