//! Memory and time per remembered decision (`kroute serve --max-decisions`): the engine's
//! decision store filled to capacity with real decisions of a trained router, resident memory
//! read before and after.
//!
//! ```text
//! kroute train data/routerbench-3k.jsonl.gz -o router
//! cargo bench --bench decisions -- router [--decisions 1000000]
//! ```

use std::time::Instant;

use kroute::device::DeviceSpec;
use kroute::engine::{Engine, EngineOptions, LearningOptions};
use kroute::router::Router;
use kroute::Embedder;
use serde_json::json;

fn rss_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib * 1024.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let router_dir = args.first().cloned().unwrap_or_else(|| "router".into());
    let decisions: usize = args
        .iter()
        .position(|a| a == "--decisions")
        .map_or(1_000_000, |i| args[i + 1].parse().unwrap());
    let device = DeviceSpec::Cpu.open().unwrap();
    let router = Router::load(router_dir.as_ref(), &device).unwrap();
    let embedder = Embedder::load(&router.embedding.model, &device, None).unwrap();
    let options = EngineOptions {
        learning: LearningOptions {
            max_decisions: decisions,
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = Engine::start(embedder, router, options, None).unwrap();
    while !engine.is_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let decision = engine
        .route("Which gas do plants absorb?".into(), engine.info().defaults)
        .await
        .unwrap();
    let before = rss_bytes();
    let started = Instant::now();
    for _ in 0..decisions {
        engine.remember(&decision, 0);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = rss_bytes();
    let per_decision = (after - before) / decisions as f64;
    println!(
        "{decisions} decisions of {} voting clusters: {:.0} bytes each ({:.1} MiB), {:.0} ns to remember one",
        decision.clusters.len(),
        per_decision,
        (after - before) / (1 << 20) as f64,
        seconds / decisions as f64 * 1e9
    );
    println!(
        "{}",
        json!({"decisions": decisions, "voting_clusters": decision.clusters.len(),
               "bytes_per_decision": per_decision, "rss_growth_mib": (after - before) / (1 << 20) as f64,
               "ns_per_remember": seconds / decisions as f64 * 1e9})
    );
}
