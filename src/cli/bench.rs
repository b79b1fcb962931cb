use std::path::PathBuf;

use clap::Args;
use kroute::bench::{run as bench, BenchConfig, BenchReport, Subject};
use kroute::settings::EmbedderSettings;
use kroute::Result;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  kroute bench
  kroute bench --device cuda --json > h100.json
  kroute bench --model sentence-transformers/all-mpnet-base-v2
  kroute bench --random-weights some-model/config.json --device cuda --dtype bf16
  kroute bench --quick
  kroute bench --device cuda --generic-ops    # what the fused kernels gain

Encoder throughput runs random token ids at each --seq-lens × --batch-tokens (rows = budget / \
length, no padding), pooling and normalisation included, with the device synchronised inside the \
timed region; TFLOP/s are estimated from the model's shape (2 per multiply-add, dense layers and \
attention) and MFU needs --peak-tflops. Single-query latency embeds one real query (tokenizer \
included) with --model, or runs one 16-token row with --random-weights. k-means times Lloyd \
iterations on random unit vectors (no seeding), routing routes random queries through 60 \
clusters × 11 models.")]
pub struct BenchArgs {
    /// Build the encoder from this `config.json` (any supported model_type: bert, roberta,
    /// xlm-roberta, mpnet, qwen3) with random weights instead of loading --model (for measuring where
    /// the weights are not at hand).
    #[arg(long, conflicts_with = "model")]
    pub random_weights: Option<PathBuf>,

    /// Tokens per sequence (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "32,64,128,256")]
    pub seq_lens: Vec<usize>,

    /// Padded tokens per batch (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "2048,16384")]
    pub batch_tokens: Vec<usize>,

    /// k-means sizes: points (comma-separated), each with every --kmeans-clusters.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub kmeans_points: Vec<usize>,

    /// k-means cluster counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "64,1024")]
    pub kmeans_clusters: Vec<usize>,

    /// Queries routed in the routing case.
    #[arg(long, default_value_t = 100_000)]
    pub route_queries: usize,

    /// Bag sizes (k-means solutions voting) to route with (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,5")]
    pub route_bags: Vec<usize>,

    /// Smaller sizes for a first look: sequence lengths 32 and 128, k-means on 100k points only.
    #[arg(long)]
    pub quick: bool,

    /// Device peak in TFLOP/s at the dtype used, to report MFU (e.g. 989 for H100 SXM f16/bf16
    /// dense).
    #[arg(long)]
    pub peak_tflops: Option<f64>,

    /// Switch the fused kernels off (candle's generic ops instead), to measure what they gain:
    /// run once with and once without.
    #[arg(long)]
    pub generic_ops: bool,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub embedder: EmbedderSettings,
}

pub fn run(args: BenchArgs) -> Result<()> {
    kroute::kernels::set_enabled(!args.generic_ops);
    let device = args.embedder.device.open()?;
    let mut config = BenchConfig {
        seq_lens: args.seq_lens.clone(),
        batch_tokens: args.batch_tokens.clone(),
        kmeans: args
            .kmeans_points
            .iter()
            .flat_map(|&n| args.kmeans_clusters.iter().map(move |&k| (n, k)))
            .collect(),
        route_queries: args.route_queries,
        route_bags: args.route_bags.clone(),
        ..Default::default()
    };
    if args.quick {
        config.seq_lens = vec![32, 128];
        config.kmeans.retain(|&(n, _)| n <= 100_000);
        config.min_seconds = 0.5;
    }
    let embedder;
    let (subject, model, dtype) = match &args.random_weights {
        Some(path) => {
            let (subject, dtype) = Subject::random(path, &device, args.embedder.dtype)?;
            (
                subject,
                format!("random weights ({})", path.display()),
                dtype,
            )
        }
        None => {
            embedder = args.embedder.load(true)?;
            let model = embedder.model().id.clone();
            let dtype = embedder.precision();
            (Subject::Model(&embedder), model, dtype)
        }
    };
    let quiet = args.json;
    let report = bench(
        &subject,
        &model,
        &config,
        &device,
        dtype,
        args.peak_tflops,
        |step| {
            if !quiet {
                eprintln!("… {step}");
            }
        },
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(r: &BenchReport) {
    let features = if r.features.is_empty() {
        "none".to_string()
    } else {
        r.features.join(", ")
    };
    let ops = if r.fused_kernels {
        "fused kernels"
    } else {
        "generic ops"
    };
    let dtype = match r.int8_kernel {
        Some(kernel) => format!("{} ({kernel} kernel)", r.dtype),
        None => r.dtype.clone(),
    };
    println!(
        "kroute {} bench: {}, {dtype}, {} threads, features: {features}, {ops}\nmodel: {}\n",
        r.kroute_version, r.device, r.threads, r.model
    );
    println!(
        "{:>8} {:>13} {:>6} {:>12} {:>12} {:>8} {:>7}",
        "seq len", "batch tokens", "rows", "sentences/s", "tokens/s", "TFLOP/s", "MFU"
    );
    for c in &r.encoder {
        let mfu = c
            .mfu
            .map_or("-".to_string(), |m| format!("{:.1} %", 100.0 * m));
        println!(
            "{:>8} {:>13} {:>6} {:>12.1} {:>12.0} {:>8.3} {:>7}",
            c.seq_len, c.batch_tokens, c.rows, c.sentences_per_s, c.tokens_per_s, c.tflops, mfu
        );
    }
    println!(
        "\nsingle-query latency: p50 {:.2} ms, p99 {:.2} ms ({} runs)\n",
        r.latency.p50_ms, r.latency.p99_ms, r.latency.runs
    );
    println!(
        "{:>10} {:>9} {:>5} {:>14}",
        "k-means N", "clusters", "dim", "s/iteration"
    );
    for k in &r.kmeans {
        println!(
            "{:>10} {:>9} {:>5} {:>14.3}",
            k.points, k.clusters, k.dim, k.seconds_per_iteration
        );
    }
    println!();
    for route in &r.route {
        println!(
            "routing, bag {}: {:.0} queries/s ({} queries, {} clusters × {} models, top-p 4), one query {:.3} ms, after an outcome {:.3} ms",
            route.bag,
            route.queries_per_s,
            route.queries,
            route.clusters,
            route.models,
            route.single_query_p50_ms,
            route.after_outcome_p50_ms
        );
    }
}
