//! Command-line front end: argument parsing, progress bars and human/JSON output. No logic that a
//! library user would need lives here.

mod args;
mod bench;
mod calibrate;
mod check;
mod embed;
mod eval;
mod models;
mod pool;
mod replay;
mod route;
mod serve;
mod train;
mod tune;
mod update;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kroute::Error;

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
    /// Validate a routing-records file and summarise it (queries, datasets, models, accuracy,
    /// cost, coverage).
    Check(check::CheckArgs),
    /// Train a router: embed the training queries, k-means them, keep per-cluster statistics.
    Train(train::TrainArgs),
    /// Route queries with a trained router: one JSON line per query.
    Route(route::RouteArgs),
    /// Learn from a file of labelled queries: outcomes on top of the training statistics, as
    /// `kroute serve` takes them from /v1/feedback.
    Update(update::UpdateArgs),
    /// Choose the training queries a new model should be evaluated on first (for add-model).
    Suggest(pool::SuggestArgs),
    /// Add models to a router from a few evaluated queries (or a declared prior), without
    /// retraining.
    AddModel(pool::AddModelArgs),
    /// Drop a model from a router.
    RemoveModel(pool::RemoveModelArgs),
    /// Recompute a router's costs at new prices from the token counts it was trained with.
    Reprice(pool::RepriceArgs),
    /// Re-decide a server's logged traffic with another router or α: how many decisions
    /// change, and the expected cost and accuracy change (a shadow evaluation).
    Replay(replay::ReplayArgs),
    /// Evaluate the router against every single model and the oracle over a sweep of α:
    /// tables, headlines and plots of the accuracy–cost frontier.
    Eval(eval::EvalArgs),
    /// Pick α for a target accuracy or cost per query on a validation set.
    Calibrate(calibrate::CalibrateArgs),
    /// Choose clusters, top-p, β, prior strength and bag by cross-validation on the training
    /// rows.
    Tune(tune::TuneCommandArgs),
    /// Measure throughput on a device: encoder, single-query latency, k-means, routing.
    Bench(bench::BenchArgs),
    /// Serve an OpenAI-compatible endpoint that routes each request to a model.
    Serve(serve::ServeArgs),
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
    // Output piped into `head` ends the command quietly when the reader goes away, as Unix
    // tools do (Rust ignores SIGPIPE, so println! would panic). The server keeps it ignored:
    // its sockets report a peer that went away as an error of that connection.
    #[cfg(unix)]
    if !matches!(cli.command, Command::Serve(_)) {
        // SAFETY: restoring a signal's default disposition at start-up, before any thread.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Check(args) => check::run(args),
        Command::Train(args) => train::run(args),
        Command::Route(args) => route::run(args),
        Command::Update(args) => update::run(args),
        Command::Suggest(args) => pool::suggest(args),
        Command::AddModel(args) => pool::add_model(args),
        Command::RemoveModel(args) => pool::remove_model(args),
        Command::Reprice(args) => pool::reprice(args),
        Command::Replay(args) => replay::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Tune(args) => tune::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Serve(args) => serve::run(args),
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

/// Embeds `texts` (L2-normalised, as routing expects) with a progress bar; Ctrl-C stops it.
pub fn embed_with_progress(
    embedder: &kroute::Embedder,
    texts: &[&str],
    quiet: bool,
) -> kroute::Result<candle_core::Tensor> {
    let interrupted = interrupt_flag();
    let bar = progress_bar(texts.len() as u64, "queries", quiet);
    let mut parts = Vec::new();
    embedder.embed_stream(
        texts.iter().map(|t| Ok(*t)),
        |chunk| {
            if interrupted.load(Ordering::SeqCst) {
                return Err(Error::Interrupted);
            }
            parts.push(chunk);
            Ok(())
        },
        |rows| bar.inc(rows as u64),
    )?;
    bar.finish_and_clear();
    if parts.is_empty() {
        let empty = (0, embedder.dim());
        return Ok(candle_core::Tensor::zeros(
            empty,
            candle_core::DType::F32,
            embedder.device(),
        )?);
    }
    Ok(candle_core::Tensor::cat(&parts, 0)?)
}

/// A command's one-line JSON summary: into `path` (atomically) or on stderr.
pub fn emit_summary(summary: &serde_json::Value, path: Option<&Path>) -> kroute::Result<()> {
    match path {
        Some(path) => kroute::io::AtomicFile::write(path, format!("{summary}\n").as_bytes()),
        None => {
            eprintln!("{summary}");
            Ok(())
        }
    }
}

/// Runs `body` on the file `path` names; `-` is standard input, spooled to a temporary file
/// first, and errors about that file name `<stdin>`.
fn on_input<T>(path: &Path, body: impl FnOnce(&Path) -> kroute::Result<T>) -> kroute::Result<T> {
    if !kroute::io::is_stdin(path) {
        return body(path);
    }
    let spooled = kroute::io::SpooledStdin::read()?;
    body(spooled.path()).map_err(|e| spooled.rename(e))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// No two arguments of a command share a flag or an id. clap checks this only in debug
    /// builds, and a duplicate merges silently in release: add-model's `--model` once shadowed
    /// the embedding model's, so `KROUTE_MODEL` in the environment made `--records` conflict.
    #[test]
    fn every_flag_of_a_command_names_one_argument() {
        let cli = super::Cli::command();
        for command in cli.get_subcommands() {
            let mut seen = std::collections::BTreeSet::new();
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                assert!(
                    seen.insert(format!("id {id}")),
                    "{}: id `{id}` twice",
                    command.get_name()
                );
                if let Some(long) = arg.get_long() {
                    assert!(
                        seen.insert(format!("--{long}")),
                        "{}: --{long} twice",
                        command.get_name()
                    );
                }
                if let Some(short) = arg.get_short() {
                    assert!(
                        seen.insert(format!("-{short}")),
                        "{}: -{short} twice",
                        command.get_name()
                    );
                }
            }
        }
    }
}
