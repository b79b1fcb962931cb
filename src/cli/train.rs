use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use kroute::eval::{alpha_grid, calibrate, tune, EvalConfig};
use kroute::router::{EmbeddingInfo, RouteParams, Router, TuningInfo};
use kroute::settings::{EmbedderSettings, KMeansSettings, RoutingSettings};
use kroute::{Error, Result};
use serde_json::json;

use super::args::{RecordsArgs, ReportArgs, TargetArgs, TuneArgs};
use super::{embed_with_progress, progress_bar};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute train data/routerbench-3k.jsonl.gz -o router
  kroute train records.jsonl -o router --clusters 32 --alpha 0.6 --device cuda --use-all
  kroute train data/routerbench-3k.jsonl.gz -o router --auto     # settings by cross-validation

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

    /// Seed of k-means and of the per-dataset split (when the records have no `split` field).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    #[command(flatten)]
    pub kmeans: KMeansSettings,

    /// Store the α that meets a target on a validation set carved from the training rows
    /// (instead of --alpha).
    #[command(flatten)]
    pub target: TargetArgs,

    /// Routing defaults stored in the router (`route` and `serve` can override them).
    #[command(flatten)]
    pub routing: RoutingSettings,

    /// Choose clusters, bag, top-p, β and prior strength as `kroute tune` does (K-fold
    /// cross-validation on the training rows only), then train with them; recorded in
    /// router.json.
    #[arg(long, conflicts_with_all = ["clusters", "bag", "top_p", "beta", "prior_strength"])]
    pub auto: bool,

    /// With --auto: the grid and folds (see `kroute tune --help`).
    #[command(flatten)]
    pub tune: TuneArgs,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub embedder: EmbedderSettings,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let start = Instant::now();
    let data = args.records.read()?;
    let split = args.records.settings.split(&data, args.seed)?;
    let rows = if args.use_all {
        let mut all = [split.train, split.test].concat();
        all.sort_unstable();
        all
    } else {
        split.train
    };
    let mut defaults = args.routing.resolve(RouteParams::recommended())?;
    let mut kmeans = args.kmeans.config(args.seed, rows.len())?;
    let mut bag = args.kmeans.bag;
    let target = args.target.target();
    if target.is_some() && args.routing.alpha.is_some() {
        return Err(Error::Invalid(
            "--alpha and --target-accuracy/--target-cost both set α; give one".into(),
        ));
    }

    let embedder = args.embedder.load(true)?;
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
    let embeddings = embed_with_progress(&embedder, &texts, args.report.quiet)?;
    let embed_seconds = embed_start.elapsed().as_secs_f64();
    let embedding = EmbeddingInfo::of(&embedder);

    let mut tuning = None;
    if args.auto {
        let config = args
            .tune
            .config(args.seed, alpha_grid(&[]), defaults.scoring);
        let bar = progress_bar(config.folds as u64, "tuning folds", args.report.quiet);
        let tuned = tune(&data, &rows, &embeddings, &embedding, &config, |_| {
            bar.inc(1)
        })?;
        bar.finish_and_clear();
        let best = tuned.best();
        tracing::info!(
            "cross-validation chose --clusters {} --bag {} --top-p {} --beta {} --prior-strength {} (area {:.4} ± {:.4} over {} folds, {} settings tried)",
            best.settings.clusters,
            best.settings.bag,
            best.settings.top_p,
            best.settings.beta,
            best.settings.prior_strength,
            best.area.mean,
            best.area.std,
            tuned.folds,
            tuned.trials.len()
        );
        kmeans.k = best.settings.clusters;
        bag = best.settings.bag;
        defaults = best.settings.routing(defaults);
        tuning = Some(TuningInfo {
            folds: tuned.folds,
            settings_tried: tuned.trials.len(),
            area: best.area.mean,
            area_std: best.area.std,
        });
    }

    if let Some(target) = target {
        let config = EvalConfig {
            alphas: alpha_grid(&[]),
            seeds: vec![args.seed],
            kmeans: kmeans.clone(),
            bag,
            routing: defaults,
            split: args.records.settings.split_options(args.seed),
            validation_ratio: None,
        };
        let calibration = calibrate(
            &data,
            &rows,
            &embeddings,
            &embedding,
            &config,
            target,
            args.target.validation_ratio,
        )?;
        let chosen = calibration.chosen();
        tracing::info!(
            "α = {} meets {target} on {} validation queries (accuracy {:.4}, ${:.6} per query)",
            calibration.alpha,
            calibration.validation_queries,
            chosen.average_accuracy,
            chosen.cost_per_query
        );
        defaults.scoring = defaults.scoring.at_alpha(calibration.alpha);
    }

    tracing::info!(
        "k-means: {} clusters, {} restarts on {}",
        kmeans.k,
        kmeans.n_init,
        args.embedder.device
    );
    let fit_start = Instant::now();
    let mut router =
        Router::fit_bagged(&embeddings, &data, &rows, &kmeans, bag, embedding, defaults)?;
    router.training.tuning = tuning;
    let fit_seconds = fit_start.elapsed().as_secs_f64();
    router.save(&args.output)?;

    let summary = json!({
        "router": args.output,
        "train_queries": rows.len(),
        "models": router.models.len(),
        "clusters": router.clusters_per_member(),
        "bag": router.bag,
        "tuning": router.training.tuning,
        "inertia": router.training.inertia,
        "kmeans_iterations": router.training.iterations,
        "routing": router.defaults,
        "embed_seconds": embed_seconds,
        "fit_seconds": fit_seconds,
        "total_seconds": start.elapsed().as_secs_f64(),
        "device": args.embedder.device.to_string(),
        "model": router.embedding.model,
    });
    args.report.emit(&summary)
}
