use std::path::PathBuf;

use clap::Args;
use kroute::eval::replay::{replay, ReplaySettings, ReplayTotals};
use kroute::settings::EmbedderSettings;
use kroute::state::decision_log::read_log;
use kroute::{Error, Result};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute replay decisions/ --router router-v2
  kroute replay decisions/ --router router --alpha 0.4 --json

LOG is a `kroute serve --decision-log` directory. Each logged decision is re-decided with \
ROUTER among the models it ranked then (the tenant's policy as it applied): from its logged \
cluster votes when ROUTER has the clusters it was made with (a router that learned, had models \
added or removed, or was repriced since keeps them; no text is needed), else from its logged \
text (`kroute serve --log-queries`) embedded with ROUTER's model; decisions with neither are \
counted and skipped. Costs are ROUTER's expected costs for each query (vote-weighted cell \
estimates) for the logged and the replayed choice alike. Where outcomes were posted \
(/v1/feedback), the logged choices' accuracy is their observed mean score and the replayed \
one's takes the router's expected accuracy where the choice changed.")]
pub struct ReplayArgs {
    /// Decision log directory (`kroute serve --decision-log DIR`).
    pub log: PathBuf,

    /// Router directory to re-decide with (or a `kroute serve --state` directory).
    #[arg(long)]
    pub router: PathBuf,

    /// Re-decide at this α instead of each decision's own.
    #[arg(long)]
    pub alpha: Option<f64>,

    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub embedder: EmbedderSettings,
}

pub fn run(args: ReplayArgs) -> Result<()> {
    if let Some(alpha) = args.alpha.filter(|a| !(0.0..=1.0).contains(a)) {
        return Err(Error::Invalid(format!(
            "--alpha must be in [0, 1], got {alpha}"
        )));
    }
    let log = read_log(&args.log)?;
    let device = args.embedder.device.open()?;
    let router = kroute::state::open_router(&args.router, &device)?;
    let clusters = kroute::state::clusters_id(&router)?;
    let needs_text = log
        .decisions
        .iter()
        .any(|d| d.router_clusters != clusters && d.query.is_some());
    let embedder = match needs_text {
        true => Some(args.embedder.load_for(&router)?),
        false => None,
    };
    let settings = ReplaySettings { alpha: args.alpha };
    let report = replay(&log, &router, embedder.as_ref(), settings)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
        return Ok(());
    }
    println!(
        "{} decisions and {} outcomes from {} files; {} re-decided from their votes, {} from \
         their texts; {} skipped (other clusters, no text logged: serve with --log-queries), \
         {} skipped (no model in common)\n",
        log.decisions.len(),
        log.outcomes.len(),
        log.files,
        report.by_votes,
        report.by_text,
        report.without_text,
        report.no_common_model
    );
    println!(
        "{:<16} {:>9} {:>9} {:>8} {:>14} {:>14} {:>9} {:>10} {:>10}",
        "tenant",
        "decisions",
        "replayed",
        "changed",
        "exp. cost now",
        "exp. cost new",
        "outcomes",
        "acc. now",
        "acc. new"
    );
    let row = |name: &str, t: &ReplayTotals| {
        let accuracy = |a: Option<f64>| a.map_or("-".into(), |a| format!("{a:.4}"));
        println!(
            "{:<16} {:>9} {:>9} {:>8} {:>14.6} {:>14.6} {:>9} {:>10} {:>10}",
            name,
            t.decisions,
            t.replayed,
            t.changed,
            t.expected_cost_before,
            t.expected_cost_after,
            t.with_outcomes,
            accuracy(t.accuracy_before),
            accuracy(t.accuracy_after)
        );
    };
    for (name, totals) in &report.tenants {
        row(name, totals);
    }
    if report.tenants.len() > 1 {
        row("all", &report.total);
    }
    Ok(())
}
