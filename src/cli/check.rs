use clap::Args;
use kroute::records::{MissingCost, RoutingData};
use kroute::Result;

#[derive(Args, Debug)]
#[command(after_help = "\
Every line is validated; the first bad one fails with `file:line: field `x`: what is wrong`. \
Exit status 0 means the file can be trained on.")]
pub struct CheckArgs {
    /// Routing records (`.jsonl` or `.jsonl.gz`; `-` reads standard input).
    pub data: std::path::PathBuf,

    /// An evaluated model without `usages.<model>.cost`: `error` or `zero` (count as $0).
    #[arg(long, default_value = "error", value_name = "error|zero")]
    pub missing_cost: MissingCost,

    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CheckArgs) -> Result<()> {
    let mut data = super::on_input(&args.data, |path| {
        RoutingData::read(path, args.missing_cost)
    })?;
    if kroute::io::is_stdin(&args.data) {
        data.path = kroute::io::STDIN_NAME.into();
    }
    let summary = data.summary();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("serialisable")
        );
        return Ok(());
    }
    println!(
        "{}: {} queries, {} datasets, {} models",
        summary.path,
        summary.queries,
        summary.datasets.len(),
        summary.models.len()
    );
    let datasets: Vec<String> = summary
        .datasets
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    println!("datasets: {}", datasets.join(", "));
    match summary.split {
        Some((train, test)) => println!("split field: train {train}, test {test}"),
        None => println!("no split field: train/test come from --train-ratio and --seed"),
    }
    if summary.missing_costs > 0 {
        println!("missing costs counted as $0: {}", summary.missing_costs);
    }
    let width = summary
        .models
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!();
    println!(
        "{:width$}  {:>9}  {:>8}  {:>8}  {:>11}  {:>6}",
        "model", "evaluated", "coverage", "accuracy", "total cost", "tokens"
    );
    for model in &summary.models {
        let accuracy = model
            .mean_accuracy
            .map_or_else(|| "-".to_string(), |a| format!("{a:.3}"));
        // Token counts on every evaluated answer let a router trained here be repriced.
        let tokens = match model.with_tokens {
            0 => "no".to_string(),
            n if n == model.evaluated => "yes".to_string(),
            n => format!("{n}"),
        };
        println!(
            "{:width$}  {:>9}  {:>7.1}%  {:>8}  {:>11}  {:>6}",
            model.name,
            model.evaluated,
            100.0 * model.coverage,
            accuracy,
            format!("${:.4}", model.total_cost),
            tokens
        );
    }
    println!();
    println!("tokens: whether evaluated answers have prompt and completion token counts (what `kroute reprice` needs)");
    Ok(())
}
