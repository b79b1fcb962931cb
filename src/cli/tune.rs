use clap::Args;
use kroute::eval::{tune, Tuning};
use kroute::router::{EmbeddingInfo, RouteParams};
use kroute::settings::{EmbedderSettings, RoutingSettings};
use kroute::Result;

use super::args::{RecordsArgs, SweepArgs, TuneArgs};
use super::{embed_with_progress, progress_bar};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute tune data/routerbench-3k.jsonl.gz
  kroute tune records.jsonl --clusters-grid 10,30,60 --bag-grid 1,5 --json > tuning.json
  kroute train data/routerbench-3k.jsonl.gz -o router --auto     # tune, then train with the best

Every combination of the grids is scored by K-fold cross-validation inside the training rows \
(the test split is never read): per fold, a router trained on the other folds routes the held-out \
one at every α, and the score is the area under its accuracy–cost frontier (costs relative to the \
best single model's, see `kroute eval`). Queries are embedded once; per fold and cluster count \
one k-means run with the largest bag serves every other setting. The table lists every setting, \
best first.")]
pub struct TuneCommandArgs {
    #[command(flatten)]
    pub records: RecordsArgs,

    /// Seed of the folds, of k-means, and of the split (when the records have no `split` field).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    #[command(flatten)]
    pub tune: TuneArgs,

    #[command(flatten)]
    pub sweep: SweepArgs,

    /// Scoring rule (`paper` or `reference`); the other routing flags are what is tuned.
    #[arg(long, value_name = "paper|reference")]
    pub scoring: Option<String>,

    /// Use these embeddings of DATA's queries (a `.safetensors` from `kroute embed DATA`) instead
    /// of embedding them again.
    #[arg(long)]
    pub embeddings: Option<std::path::PathBuf>,

    /// Print the tuning (every trial) as JSON instead of the table.
    #[arg(long)]
    pub json: bool,

    /// No progress bars.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub embedder: EmbedderSettings,
}

pub fn run(args: TuneCommandArgs) -> Result<()> {
    let data = args.records.read()?;
    let split = args.records.settings.split(&data, args.seed)?;
    let scoring = RoutingSettings {
        scoring: args.scoring.clone(),
        ..Default::default()
    }
    .resolve(RouteParams::recommended())?
    .scoring;
    let config = args.tune.config(args.seed, args.sweep.grid(), scoring);
    let (embeddings, embedding) = match &args.embeddings {
        Some(path) => {
            let (all, info) = super::eval::precomputed(path, &data, &args.embedder)?;
            let index: Vec<u32> = split.train.iter().map(|&i| i as u32).collect();
            let index = candle_core::Tensor::new(index, all.device())?;
            (all.index_select(&index, 0)?, info)
        }
        None => {
            let embedder = args.embedder.load(true)?;
            let texts: Vec<&str> = split
                .train
                .iter()
                .map(|&i| data.records[i].query.as_str())
                .collect();
            (
                embed_with_progress(&embedder, &texts, args.quiet)?,
                EmbeddingInfo::of(&embedder),
            )
        }
    };
    let bar = progress_bar(config.folds as u64, "folds", args.quiet);
    let tuning = tune(
        &data,
        &split.train,
        &embeddings,
        &embedding,
        &config,
        |_| bar.inc(1),
    )?;
    bar.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&tuning).expect("tuning serialises")
        );
    } else {
        print!("{}", table(&tuning));
        let best = tuning.best().settings;
        println!(
            "\nbest: --clusters {} --bag {} --top-p {} --beta {} --prior-strength {}  (or `kroute train … --auto`)",
            best.clusters, best.bag, best.top_p, best.beta, best.prior_strength
        );
    }
    Ok(())
}

/// Every trial, best first.
pub fn table(tuning: &Tuning) -> String {
    let mut out = format!(
        "{} settings, {}-fold cross-validation on {} training queries; score: area under the router's accuracy–cost frontier (mean ± std over folds)\n\n",
        tuning.trials.len(),
        tuning.folds,
        tuning.training_queries
    );
    out += "| rank | clusters | bag | top-p | β | prior | area | − single models' |\n";
    out += "|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (rank, trial) in tuning.trials.iter().enumerate() {
        let s = trial.settings;
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {:.4} ± {:.4} | {:+.4} |\n",
            rank + 1,
            s.clusters,
            s.bag,
            s.top_p,
            s.beta,
            s.prior_strength,
            trial.area.mean,
            trial.area.std,
            trial.gain_over_singles.mean
        );
    }
    out
}
