use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use kroute::records::RoutingData;
use kroute::settings::EmbedderSettings;
use kroute::{Error, Result};
use serde_json::{json, Map, Value};

use super::args::{FeedbackArgs, ReportArgs};
use super::embed_with_progress;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute update router --feedback judged.jsonl -o router-v2
  kroute update router --feedback judged.jsonl -o router-v2 --feedback-half-life 20

The feedback file has the training-record format (one JSON object per line: \"query\", \
\"records\": {model: score in [0, 1], true/false or null}, optional \"usages\": {model: \
{\"cost\": $}}), but each line names only the models it has outcomes for, and costs are optional \
(an outcome without one leaves the cost estimates as they are). Every outcome updates the cells \
of the clusters that vote for its query, weighted by their votes, on top of the training \
statistics, as `kroute serve` does with /v1/feedback. The file is validated in full before the \
model is loaded; the new router is written under a temporary name and renamed into place, and \
its router.json records how many outcomes it took in and from where. ROUTER may also be a \
server's --state directory (its latest state).")]
pub struct UpdateArgs {
    /// Router directory to start from (or a `kroute serve --state` directory).
    pub router: PathBuf,

    /// Labelled queries to learn from: `.jsonl` or `.jsonl.gz` in the training-record format.
    #[arg(long)]
    pub feedback: PathBuf,

    /// Router directory to write.
    #[arg(short, long)]
    pub output: PathBuf,

    #[command(flatten)]
    pub learning: FeedbackArgs,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub embedder: EmbedderSettings,
}

pub fn run(args: UpdateArgs) -> Result<()> {
    let start = Instant::now();
    let data = RoutingData::read_outcomes(&args.feedback)?;
    let device = args.embedder.device.open()?;
    let mut router = kroute::state::open_router(&args.router, &device)?;
    let models: Vec<usize> = data
        .models
        .iter()
        .map(|name| {
            router.models.iter().position(|m| m == name).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: model `{name}` is not in the router (its models: {})",
                    args.feedback.display(),
                    router.models.join(", ")
                ))
            })
        })
        .collect::<Result<_>>()?;
    let embedder = args.embedder.load_for(&router)?;
    let texts: Vec<&str> = data.records.iter().map(|r| r.query.as_str()).collect();
    let embeddings = embed_with_progress(&embedder, &texts, args.report.quiet)?;
    let outcomes: Vec<Vec<(usize, f64, Option<f64>)>> = data
        .records
        .iter()
        .map(|record| {
            (0..data.models.len())
                .filter_map(|i| Some((models[i], record.scores[i]?, record.costs[i])))
                .collect()
        })
        .collect();
    let defaults = router.defaults;
    let taken = router.observe_queries(
        &embeddings,
        &outcomes,
        &defaults,
        args.learning.feedback_half_life,
        &args.feedback.display().to_string(),
    )?;
    router.save(&args.output)?;
    let per_model: Map<String, Value> = data
        .models
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let n = data
                .records
                .iter()
                .filter(|r| r.scores[i].is_some())
                .count();
            (name.clone(), json!(n))
        })
        .collect();
    let summary = json!({
        "queries": data.records.len(),
        "observations": taken,
        "per_model": per_model,
        "router_observations": router.learned().observations,
        "output": args.output.display().to_string(),
        "seconds": start.elapsed().as_secs_f64(),
    });
    args.report.emit(&summary)
}
