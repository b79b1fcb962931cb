use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use kroute::cluster::KMeansConfig;
use kroute::router::{EmbeddingInfo, RouteParams, Router};
use kroute::{Error, Result};
use serde_json::json;

use super::args::{EmbedderArgs, RecordsArgs, RoutingArgs};
use super::embed_with_progress;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute train data/routerbench-3k.jsonl.gz -o router
  kroute train records.jsonl -o router --clusters 32 --alpha 0.6 --device cuda --use-all

Training uses the records' `split` field when they have one (the `train` rows), else the first \
--train-ratio of a seeded shuffle of each dataset; --use-all trains on every row (for a router \
you will deploy rather than evaluate). The whole file is validated before the model is loaded. \
The router directory is written under a temporary name and renamed into place when complete; \
an existing router there is replaced, any other non-empty directory is refused.")]
pub struct TrainArgs {
    #[command(flatten)]
    pub records: RecordsArgs,

    /// Router directory to write (`router.json` + `centroids.safetensors`).
    #[arg(short, long)]
    pub output: PathBuf,

    /// Train on every record, ignoring the split.
    #[arg(long)]
    pub use_all: bool,

    /// Number of k-means clusters (the paper uses 60).
    #[arg(long, default_value_t = 60)]
    pub clusters: usize,

    /// k-means restarts from fresh k-means++ seeds; the lowest inertia wins.
    #[arg(long, default_value_t = 10)]
    pub n_init: usize,

    /// Lloyd iterations per restart at most.
    #[arg(long, default_value_t = 300)]
    pub max_iter: usize,

    /// Convergence: centroid shift below tol × mean feature variance (scikit-learn's rule).
    #[arg(long, default_value_t = 1e-4)]
    pub tol: f64,

    /// Routing defaults stored in the router (`route` and `serve` can override them).
    #[command(flatten)]
    pub routing: RoutingArgs,

    /// Write the one-line JSON summary to this file instead of stderr.
    #[arg(long)]
    pub summary: Option<PathBuf>,

    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub embedder: EmbedderArgs,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let start = Instant::now();
    let data = args.records.read()?;
    let rows = if args.use_all {
        let split = args.records.split(&data)?;
        let mut all = [split.train, split.test].concat();
        all.sort_unstable();
        all
    } else {
        args.records.split(&data)?.train
    };
    let defaults = args.routing.resolve(RouteParams::default())?;
    if args.clusters == 0 || args.clusters > rows.len() {
        return Err(Error::Invalid(format!(
            "--clusters must be between 1 and the {} training queries, got {}",
            rows.len(),
            args.clusters
        )));
    }
    let kmeans = KMeansConfig {
        k: args.clusters,
        n_init: args.n_init,
        max_iter: args.max_iter,
        tol: args.tol,
        seed: args.records.seed,
        ..Default::default()
    };

    let embedder = args.embedder.load(None, true)?;
    let texts: Vec<&str> = rows
        .iter()
        .map(|&i| data.records[i].query.as_str())
        .collect();
    tracing::info!(
        "embedding {} training queries with {}",
        texts.len(),
        embedder.model().id
    );
    let embed_start = Instant::now();
    let embeddings = embed_with_progress(&embedder, &texts, args.quiet)?;
    let embed_seconds = embed_start.elapsed().as_secs_f64();

    tracing::info!(
        "k-means: {} clusters, {} restarts on {}",
        kmeans.k,
        kmeans.n_init,
        args.embedder.device
    );
    let fit_start = Instant::now();
    let router = Router::fit(
        &embeddings,
        &data,
        &rows,
        &kmeans,
        EmbeddingInfo::of(&embedder),
        defaults,
    )?;
    let fit_seconds = fit_start.elapsed().as_secs_f64();
    router.save(&args.output)?;

    let summary = json!({
        "router": args.output,
        "train_queries": rows.len(),
        "models": router.models.len(),
        "clusters": router.clusters.len(),
        "inertia": router.training.inertia,
        "kmeans_iterations": router.training.iterations,
        "embed_seconds": embed_seconds,
        "fit_seconds": fit_seconds,
        "total_seconds": start.elapsed().as_secs_f64(),
        "device": args.embedder.device.to_string(),
        "model": router.embedding.model,
    });
    super::emit_summary(&summary, args.summary.as_deref())
}
