//! `kroute suggest`, `add-model`, `remove-model` and `reprice`: changing a router's model pool
//! without retraining.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use clap::Args;
use kroute::io::AtomicFile;
use kroute::records::{MissingCost, RoutingData};
use kroute::router::{read_prices, ModelPrior, Router};
use kroute::settings::EmbedderSettings;
use kroute::{Error, Result};
use serde_json::json;

use super::args::ReportArgs;
use super::{embed_with_progress, emit_summary};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute suggest router --n 50 -o probe.jsonl
  kroute suggest router --n 50 --from data/routerbench-3k.jsonl.gz -o probe.jsonl

The chosen lines are copied from the records file as they are (with every field it has, such \
as a reference answer to score against), in order of preference: the first M of the N are the \
best M to evaluate. Evaluate the new model on them, add its scores (and costs) under \
\"records\" and \"usages\" beside the trained models' (keep those: `kroute add-model` uses \
them to take out the queries' own ease), and give the file to `kroute add-model`. Each query is \
chosen, one at a time, as the one whose answer would tell most about the new model's accuracy across the \
clusters of every k-means solution (each weighted by its share of the training queries), \
judged by how the trained models' accuracies vary together across clusters: a second query in \
a cluster tells less than a first, and a cluster where the trained models differ tells more \
than one where they agree. Among equals, the query nearest its centroids goes first. Records \
with \"split\": \"test\" are never chosen.")]
pub struct SuggestArgs {
    /// Router directory (or a `kroute serve --state` directory).
    pub router: PathBuf,

    /// Queries to choose.
    #[arg(long, default_value_t = 50)]
    pub n: usize,

    /// Records file to choose from [default: the router's training data, as router.json names
    /// it].
    #[arg(long)]
    pub from: Option<PathBuf>,

    /// Where to write the chosen records (`.jsonl`).
    #[arg(short, long)]
    pub output: PathBuf,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub embedder: EmbedderSettings,
}

pub fn suggest(args: SuggestArgs) -> Result<()> {
    let start = Instant::now();
    let device = args.embedder.device.open()?;
    let router = kroute::state::open_router(&args.router, &device)?;
    let from = args
        .from
        .clone()
        .unwrap_or_else(|| PathBuf::from(&router.training.data));
    if !from.exists() {
        return Err(Error::Invalid(format!(
            "{}: no such records file (the router's training data); pass --from",
            from.display()
        )));
    }
    let data = RoutingData::read(&from, MissingCost::Zero)?;
    let candidates = data.suggestion_candidates();
    let embedder = args.embedder.load_for(&router)?;
    let texts: Vec<&str> = candidates
        .iter()
        .map(|&i| data.records[i].query.as_str())
        .collect();
    let embeddings = embed_with_progress(&embedder, &texts, args.report.quiet)?;
    let chosen: Vec<usize> = router
        .suggest(&embeddings, args.n)
        .map_err(|e| match e {
            Error::Invalid(why) => Error::Invalid(format!("{}: {why}", args.router.display())),
            other => other,
        })?
        .into_iter()
        .map(|i| candidates[i])
        .collect();
    write_lines(&data, &chosen, &args.output)?;
    let summary = json!({
        "suggested": chosen.len(),
        "candidates": candidates.len(),
        "from": from.display().to_string(),
        "clusters": router.clusters.len(),
        "output": args.output.display().to_string(),
        "seconds": start.elapsed().as_secs_f64(),
    });
    args.report.emit(&summary)
}

/// Copies the source lines of `data.records[rows]`, in that order, to `output`.
fn write_lines(data: &RoutingData, rows: &[usize], output: &std::path::Path) -> Result<()> {
    let mut file = AtomicFile::create(output)?;
    for line in data.source_lines(rows)? {
        writeln!(file, "{line}").map_err(|e| Error::io(output, e))?;
    }
    file.commit()
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute add-model router --records probe-scored.jsonl -o router-v2
  kroute add-model router --name new-llm --prior-accuracy 0.7 --prior-cost 0.002 -o router-v2
  kroute add-model router --records probe-scored.jsonl --prior-accuracy 0.7 -o router-v2

The records file has the training-record format, but each line may name only some models (the \
new ones, typically). The models it names that the router lacks are added: every evaluated query \
is assigned to its nearest centroid in each k-means solution, the model's cells get counts, mean \
scores and mean costs (and mean tokens, when the records have token counts), and routing shrinks \
them with the router's prior strength toward the model's accuracy profile: what all its answers \
together say about it, read through how the trained models' accuracies vary across clusters \
(README, \"Changing the model pool\"), so that clusters it was not evaluated in get what its \
answers elsewhere imply. Where the lines carry the router's models' scores too (as `kroute \
suggest` copies them), the new model's cells are lowered by how much better the trained models \
did on those queries than in their clusters on average, times the slope of the new model's \
scores on that: a probe of easy queries does not make it look strong. Nothing is \
re-clustered; the other models' statistics stay as they were. Evaluated answers need a cost. \
--name with --prior-accuracy and --prior-cost adds a model without evaluations: it gets the \
prior in every cluster (router.json marks it, `kroute route --explain` lists it) until outcomes \
arrive. --records with --prior-accuracy takes both: the declared accuracy (a published score on \
the router's kind of queries) fixes the model's overall level, and its answers say where it is \
stronger or weaker than that (50 answers alone leave the level uncertain by about ±0.05). A \
running `kroute serve` takes the new router on its reload (SIGHUP or POST /admin/reload) once \
kroute.toml names an upstream for the new model.")]
pub struct AddModelArgs {
    /// Router directory to start from (or a `kroute serve --state` directory).
    pub router: PathBuf,

    /// Evaluated queries of the new models: `.jsonl` or `.jsonl.gz`.
    #[arg(long, required_unless_present = "name")]
    pub records: Option<PathBuf>,

    /// The name of a model to add without evaluations, on --prior-accuracy and --prior-cost
    /// (`--model` names the embedding model, as in every command that embeds).
    #[arg(
        long,
        value_name = "MODEL",
        requires_all = ["prior_accuracy", "prior_cost"],
        conflicts_with = "records"
    )]
    pub name: Option<String>,

    /// The model's mean score in [0, 1] over the router's training queries: with --name, its
    /// accuracy everywhere; with --records, its overall level, taken as exact.
    #[arg(long)]
    pub prior_accuracy: Option<f64>,

    /// The model's expected dollars per query (with --name; evaluated answers carry costs).
    #[arg(long, requires = "name", conflicts_with = "records")]
    pub prior_cost: Option<f64>,

    /// Router directory to write.
    #[arg(short, long)]
    pub output: PathBuf,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub embedder: EmbedderSettings,
}

pub fn add_model(args: AddModelArgs) -> Result<()> {
    let start = Instant::now();
    let device = args.embedder.device.open()?;
    let (router, added, evaluations) = match (&args.records, &args.name) {
        (Some(records), _) => {
            let data = RoutingData::read_outcomes(records)?;
            let mut router = kroute::state::open_router(&args.router, &device)?;
            let embedder = args.embedder.load_for(&router)?;
            let texts: Vec<&str> = data.records.iter().map(|r| r.query.as_str()).collect();
            let embeddings = embed_with_progress(&embedder, &texts, args.report.quiet)?;
            let added = router.add_models(&embeddings, &data, args.prior_accuracy)?;
            (router, added, data.records.len())
        }
        (None, Some(model)) => {
            let mut router = kroute::state::open_router(&args.router, &device)?;
            let prior = ModelPrior {
                accuracy: args.prior_accuracy.expect("clap requires it"),
                cost: args.prior_cost,
            };
            router.add_model_on_prior(model, prior)?;
            (router, vec![model.clone()], 0)
        }
        (None, None) => unreachable!("clap requires --records or --name"),
    };
    router.save(&args.output)?;
    let summary = json!({
        "added": added,
        "queries": evaluations,
        "models": router.models,
        "output": args.output.display().to_string(),
        "seconds": start.elapsed().as_secs_f64(),
    });
    args.report.emit(&summary)
}

#[derive(Args, Debug)]
#[command(after_help = "\
Example:
  kroute remove-model router gpt-4-1106-preview -o router-v2

The model's statistics, and what was learned about it from outcomes, are dropped; the other \
models' stay as they were.")]
pub struct RemoveModelArgs {
    /// Router directory to start from (or a `kroute serve --state` directory).
    pub router: PathBuf,

    /// The model to drop, as the router names it.
    pub model: String,

    /// Router directory to write.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn remove_model(args: RemoveModelArgs) -> Result<()> {
    let mut router = kroute::state::open_router(&args.router, &Device::Cpu)?;
    router.remove_model(&args.model)?;
    router.save(&args.output)?;
    emit_summary(
        &json!({"removed": args.model, "models": router.models,
                "output": args.output.display().to_string()}),
        None,
    )
}

#[derive(Args, Debug)]
#[command(after_help = "\
Example:
  kroute reprice router prices.toml -o router-v2

prices.toml has one line per model to reprice, in dollars per million tokens:
  \"gpt-4-1106-preview\" = { input_per_mtok = 10.0, output_per_mtok = 30.0 }

Each cell's expected cost becomes its mean prompt tokens × the input price plus its mean \
completion tokens × the output price: the router must have been trained on records with token \
counts for the model (usages.<model>.prompt_tokens and completion_tokens, or their _est \
estimates; `kroute check` lists which models have them). Cells whose answers lack token counts \
keep their trained cost (the summary counts them). Costs observed in outcomes since training \
are scaled by the model's change in mean cost. `kroute serve` applies the prices of kroute.toml's \
model blocks the same way when it loads or reloads a router.")]
pub struct RepriceArgs {
    /// Router directory to start from (or a `kroute serve --state` directory).
    pub router: PathBuf,

    /// Prices file (TOML): `"model" = { input_per_mtok = .., output_per_mtok = .. }` per line.
    pub prices: PathBuf,

    /// Router directory to write.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn reprice(args: RepriceArgs) -> Result<()> {
    let prices = read_prices(&args.prices)?;
    let mut router: Router = kroute::state::open_router(&args.router, &Device::Cpu)?;
    let repriced = router.reprice(&prices)?;
    router.save(&args.output)?;
    emit_summary(
        &json!({"repriced": repriced, "output": args.output.display().to_string()}),
        None,
    )
}
