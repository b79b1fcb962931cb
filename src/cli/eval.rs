use std::path::PathBuf;

use clap::Args;
use kroute::eval::{evaluate, EvalConfig, Report};
use kroute::io::read_embeddings;
use kroute::router::{EmbeddingInfo, RouteParams};
use kroute::settings::{EmbedderSettings, KMeansSettings, RoutingSettings};
use kroute::{Error, Result};

use super::args::{RecordsArgs, SweepArgs};
use super::{embed_with_progress, progress_bar};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute eval data/routerbench-3k.jsonl.gz
  kroute eval records.jsonl --seeds 0,100,200,300,400 --alphas 0,0.25,0.5,0.75,1 -o report-5seeds
  kroute eval records.jsonl --scoring reference --top-p 3 --clusters 25

Every query is embedded once; each seed trains one router (k-means seed, and the per-dataset \
split when the records have no `split` field) and routes its test queries at every α. With \
--scoring reference, α sets performance_weight = α and cost_sensitivity = 1 − α. Accuracy per \
dataset is the mean score of the chosen model on that dataset's test queries, average accuracy \
is the mean over datasets, cost is the dollars of the chosen models. The report directory gets \
report.md (tables and headlines), report.json (every number, per seed) and the plots \
accuracy_vs_cost, alpha_sweep and selection_share as .svg and .png.")]
pub struct EvalArgs {
    #[command(flatten)]
    pub records: RecordsArgs,

    /// Report directory to write.
    #[arg(short, long, default_value = "report")]
    pub output: PathBuf,

    #[command(flatten)]
    pub sweep: SweepArgs,

    /// One router per seed; results are mean ± std over seeds. Restart r of seed s starts
    /// from seed s + r, so seeds closer than --n-init share restarts and train nearly the same
    /// router (a warning says so): space them by at least --n-init.
    #[arg(long, value_delimiter = ',', default_value = "42,142,242")]
    pub seeds: Vec<u64>,

    #[command(flatten)]
    pub kmeans: KMeansSettings,

    #[command(flatten)]
    pub routing: RoutingSettings,

    /// Evaluate on a validation set held out from each seed's training rows instead of the
    /// test split (to choose settings without looking at the test split).
    #[arg(long)]
    pub on_validation: bool,

    /// With --on-validation: share of each dataset's training rows held out.
    #[arg(long, default_value_t = 0.2, requires = "on_validation")]
    pub validation_ratio: f64,

    /// Use these embeddings of DATA's queries (a `.safetensors` from `kroute embed DATA`, in
    /// record order) instead of embedding them again. With --model, --prompt, --prompt-name,
    /// --pooling or --max-seq-length, the file must hold that model's vectors.
    #[arg(long)]
    pub embeddings: Option<PathBuf>,

    /// Skip the SVG/PNG figures.
    #[arg(long)]
    pub no_plots: bool,

    /// No progress bars.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub embedder: EmbedderSettings,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let routing = &args.routing;
    if routing.alpha.is_some()
        || routing.performance_weight.is_some()
        || routing.cost_sensitivity.is_some()
    {
        return Err(Error::Invalid(
            "eval sweeps α (and, with --scoring reference, the weights it sets): use --alphas"
                .into(),
        ));
    }
    let data = args.records.read()?;
    let first_split = args.records.settings.split(&data, args.seeds[0])?;
    let config = EvalConfig {
        alphas: args.sweep.grid(),
        seeds: args.seeds.clone(),
        kmeans: args.kmeans.config(args.seeds[0], first_split.train.len())?,
        bag: args.kmeans.bag,
        routing: args.routing.resolve(RouteParams::recommended())?,
        split: args.records.settings.split_options(args.seeds[0]),
        validation_ratio: args.on_validation.then_some(args.validation_ratio),
    };
    let (embeddings, embedding) = match &args.embeddings {
        Some(path) => precomputed(path, &data, &args.embedder)?,
        None => {
            let embedder = args.embedder.load(true)?;
            let texts: Vec<&str> = data.records.iter().map(|r| r.query.as_str()).collect();
            tracing::info!(
                "embedding all {} queries once with {}",
                texts.len(),
                embedder.model().id
            );
            (
                embed_with_progress(&embedder, &texts, args.quiet)?,
                EmbeddingInfo::of(&embedder),
            )
        }
    };

    let bar = progress_bar(config.seeds.len() as u64, "routers trained", args.quiet);
    let evaluation = evaluate(&data, &embeddings, &embedding, &config, |_| bar.inc(1))?;
    bar.finish_and_clear();
    let report = Report::new(evaluation);
    report.write(&args.output, !args.no_plots)?;
    print!("{}", report.markdown());
    eprintln!("report written to {}", args.output.display());
    Ok(())
}

/// Embeddings from `kroute embed`, checked against the records they should belong to.
pub(super) fn precomputed(
    path: &std::path::Path,
    data: &kroute::records::RoutingData,
    embedder: &EmbedderSettings,
) -> Result<(candle_core::Tensor, EmbeddingInfo)> {
    let (embeddings, metadata) = read_embeddings(path, &embedder.device.open()?)?;
    let info = EmbeddingInfo::from_metadata(&metadata, path)?;
    if embedder.changes_vectors() {
        // The flags ask for particular vectors: the file must hold those.
        embedder.load_matching(&info, &path.display().to_string())?;
    }
    let rows = embeddings.dim(0)?;
    if rows != data.records.len() || !info.normalized {
        return Err(Error::Invalid(format!(
            "{}: {rows} {} embeddings, but {} has {} records; make them with `kroute embed {} -o {}`",
            path.display(),
            if info.normalized { "normalised" } else { "unnormalised" },
            data.path.display(),
            data.records.len(),
            data.path.display(),
            path.display()
        )));
    }
    Ok((embeddings, info))
}
