use clap::Args;
use kroute::eval::{calibrate, score_at, EvalConfig, TestSet};
use kroute::router::{EmbeddingInfo, RouteParams};
use kroute::settings::{EmbedderSettings, KMeansSettings, RoutingSettings};
use kroute::{Error, Result};
use serde_json::json;

use super::args::{RecordsArgs, SweepArgs, TargetArgs};
use super::embed_with_progress;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute calibrate data/routerbench-3k.jsonl.gz --target-accuracy 0.88
  kroute calibrate data/routerbench-3k.jsonl.gz --target-cost 0.002 --json

A validation set (--validation-ratio of each dataset's training rows) is carved out of the \
training split; a router trained on the rest is routed over it at every α, and α is picked there \
only: the cheapest α reaching --target-accuracy, or the most accurate α within --target-cost \
dollars per query. The test split is then routed once at that α to show what it gives. \
`kroute train --target-accuracy/--target-cost` does the same and stores the α in the router.")]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub records: RecordsArgs,

    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub sweep: SweepArgs,

    /// Seed of k-means, of the validation carve and of the split (when there is no `split` field).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    #[command(flatten)]
    pub kmeans: KMeansSettings,

    #[command(flatten)]
    pub routing: RoutingSettings,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,

    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub embedder: EmbedderSettings,
}

pub fn run(args: CalibrateArgs) -> Result<()> {
    let target = args
        .target
        .target()
        .ok_or_else(|| Error::Invalid("give --target-accuracy or --target-cost".into()))?;
    let data = args.records.read()?;
    let split = args.records.settings.split(&data, args.seed)?;
    let config = EvalConfig {
        alphas: args.sweep.grid(),
        seeds: vec![args.seed],
        kmeans: args.kmeans.config(args.seed, split.train.len())?,
        bag: args.kmeans.bag,
        routing: args.routing.resolve(RouteParams::recommended())?,
        split: args.records.settings.split_options(args.seed),
        validation_ratio: None,
    };
    let embedder = args.embedder.load(true)?;
    let texts = |rows: &[usize]| -> Vec<&str> {
        rows.iter()
            .map(|&i| data.records[i].query.as_str())
            .collect()
    };
    let train_embeddings = embed_with_progress(&embedder, &texts(&split.train), args.quiet)?;
    let embedding = EmbeddingInfo::of(&embedder);
    let calibration = calibrate(
        &data,
        &split.train,
        &train_embeddings,
        &embedding,
        &config,
        target,
        args.target.validation_ratio,
    )?;
    let test_set = TestSet::new(&data, split.test.clone());
    let test = if test_set.is_empty() {
        None
    } else {
        let embeddings = embed_with_progress(&embedder, &texts(&split.test), args.quiet)?;
        Some(score_at(
            &calibration.router,
            &embeddings,
            &test_set,
            config.routing,
            calibration.alpha,
        )?)
    };
    let validation = calibration.chosen();
    if args.json {
        let result = json!({
            "target": target,
            "alpha": calibration.alpha,
            "validation_queries": calibration.validation_queries,
            "validation": validation,
            "test_queries": test_set.len(),
            "test": test,
            "sweep": calibration.validation.iter().map(|(a, m)| json!({"alpha": a, "metrics": m})).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&result).expect("serialisable")
        );
        return Ok(());
    }
    println!("α = {:.2} for {target}", calibration.alpha);
    println!(
        "{:<28} {:>10} {:>16} {:>12}",
        "", "accuracy", "cost per query", "total cost"
    );
    let line = |name: &str, n: usize, m: &kroute::eval::PolicyMetrics| {
        println!(
            "{:<28} {:>10.4} {:>16} {:>12}",
            format!("{name} ({n} queries)"),
            m.average_accuracy,
            format!("${:.6}", m.cost_per_query),
            format!("${:.4}", m.cost)
        )
    };
    line("validation", calibration.validation_queries, validation);
    if let Some(test) = &test {
        line("test", test_set.len(), test);
    }
    Ok(())
}
