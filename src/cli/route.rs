use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use kroute::io::{AtomicFile, TextReader, TextReaderOptions};
use kroute::router::{RouteParams, Router};
use kroute::settings::{EmbedderSettings, RoutingSettings};
use kroute::{Embedder, Error, Result};
use serde_json::{json, Map, Value};

use super::{interrupt_flag, progress_bar};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute route router \"Write a Python function that merges two sorted lists\"
  kroute route router --input queries.jsonl --alpha 0.8 --max-models 3 -o decisions.jsonl
  kroute route router \"Which gas do plants absorb?\" --explain

Output: one JSON line per query, in input order: {\"index\", \"query\", \"model\" (the choice), \
\"ranked\": [{\"model\", \"score\"}, ...]}; --explain adds \"clusters\": the nearest clusters with \
their distance, vote weight and each model's score there. Queries are embedded with the router's \
own embedding model (another --model is refused) and routed in batches on --device.")]
pub struct RouteArgs {
    /// Router directory written by `kroute train` (or a `kroute serve --state` directory: its
    /// latest state).
    pub router: PathBuf,

    /// Queries to route (or use --input).
    #[arg(required_unless_present = "input", conflicts_with = "input")]
    pub queries: Vec<String>,

    /// Read queries from a file: `.txt` (one per line), `.jsonl` or `.jsonl.gz` (in --field);
    /// `-` reads standard input.
    #[arg(long)]
    pub input: Option<PathBuf>,

    /// JSONL field that holds the query.
    #[arg(long, default_value = "query")]
    pub field: String,

    /// Write the decisions here (atomically) instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,

    /// Models listed per query in `ranked`, best first [default: all].
    #[arg(long)]
    pub max_models: Option<usize>,

    /// Add the nearest clusters, their distances and weights and the per-cluster scores.
    #[arg(long)]
    pub explain: bool,

    #[command(flatten)]
    pub routing: RoutingSettings,

    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub embedder: EmbedderSettings,
}

/// Queries embedded and routed per step: bounds memory for large inputs.
const CHUNK: usize = 4096;

pub fn run(mut args: RouteArgs) -> Result<()> {
    let start = Instant::now();
    let device = args.embedder.device.open()?;
    let router = kroute::state::open_router(&args.router, &device)?;
    let params = args.routing.resolve(router.defaults)?;
    let queries = match &args.input {
        Some(path) => super::on_input(path, |path| {
            let options = TextReaderOptions {
                field: args.field.clone(),
                ..Default::default()
            };
            TextReader::open(path, options)?.texts().collect()
        })?,
        None => std::mem::take(&mut args.queries),
    };
    if queries.is_empty() {
        return Err(Error::Invalid("no queries to route".into()));
    }

    let embedder = args.embedder.load_for(&router)?;

    let chosen = match &args.output {
        Some(path) => {
            let mut file = AtomicFile::create(path)?;
            let chosen = write_decisions(
                &mut file, path, &queries, &embedder, &router, &params, &args,
            )?;
            file.commit()?;
            chosen
        }
        None => write_decisions(
            &mut std::io::stdout().lock(),
            Path::new("<stdout>"),
            &queries,
            &embedder,
            &router,
            &params,
            &args,
        )?,
    };
    if args.output.is_some() {
        let chosen: Map<String, Value> = router
            .models
            .iter()
            .zip(chosen)
            .filter(|&(_, n)| n > 0)
            .map(|(m, n)| (m.clone(), json!(n)))
            .collect();
        let summary = json!({
            "queries": queries.len(),
            "chosen": chosen,
            "seconds": start.elapsed().as_secs_f64(),
        });
        eprintln!("{summary}");
    }
    Ok(())
}

/// Embeds, routes and writes the queries chunk by chunk; returns how often each model was
/// chosen.
fn write_decisions(
    out: &mut dyn Write,
    out_name: &Path,
    queries: &[String],
    embedder: &Embedder,
    router: &Router,
    params: &RouteParams,
    args: &RouteArgs,
) -> Result<Vec<usize>> {
    let interrupted = interrupt_flag();
    let bar = progress_bar(
        queries.len() as u64,
        "queries",
        args.quiet || args.input.is_none(),
    );
    let mut chosen = vec![0usize; router.models.len()];
    for (chunk_index, chunk) in queries.chunks(CHUNK).enumerate() {
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        let routed = router.route(&embedder.embed(chunk)?, params)?;
        for (i, query) in chunk.iter().enumerate() {
            chosen[routed.best(i)] += 1;
            let mut line = Map::new();
            line.insert("index".into(), json!(chunk_index * CHUNK + i));
            line.insert("query".into(), json!(query));
            line.extend(router.decision_json(&routed, i, params, args.max_models, args.explain));
            writeln!(out, "{}", Value::Object(line)).map_err(|e| Error::io(out_name, e))?;
        }
        bar.inc(chunk.len() as u64);
    }
    out.flush().map_err(|e| Error::io(out_name, e))?;
    bar.finish_and_clear();
    Ok(chosen)
}
