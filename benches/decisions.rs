//! Memory and time per remembered decision (`kroute serve --max-decisions`): the engine's
//! decision store filled to capacity with real decisions of a trained router, resident memory
//! read before and after. Then the decision log (`--decision-log`): the time a request spends
//! handing its decision to the log, the writer thread's time per row (Arrow columns, zstd
//! Parquet, fsync) and the bytes per row on disk.
//!
//! ```text
//! kroute train data/routerbench-3k.jsonl.gz -o router
//! cargo bench --bench decisions -- router [--decisions 1000000] [--logged 3000]
//! ```

mod common;

use std::time::Instant;

use kroute::device::DeviceSpec;
use kroute::engine::{Engine, EngineOptions, LearningOptions, Served};
use kroute::router::Router;
use kroute::state::decision_log::DecisionLogOptions;
use kroute::Embedder;
use serde_json::json;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let router_dir = args.first().cloned().unwrap_or_else(|| "router".into());
    let flag = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .map_or(default, |i| args[i + 1].parse().unwrap())
    };
    let decisions = flag("--decisions", 1_000_000);
    let logged = flag("--logged", 3_000);
    let device = DeviceSpec::Cpu.open().unwrap();
    let router = Router::load(router_dir.as_ref(), &device).unwrap();
    let embedder = Embedder::load(&router.embedding.model, &device, None).unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let options = EngineOptions {
        learning: LearningOptions {
            max_decisions: decisions,
            ..Default::default()
        },
        decision_log: Some(DecisionLogOptions {
            dir: log_dir.path().to_path_buf(),
            max_rows: 100_000,
            rotate_every: std::time::Duration::from_secs(3600),
            log_queries: true,
        }),
        ..Default::default()
    };
    let engine = Engine::start(embedder, router, options, None).unwrap();
    while !engine.is_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let text = "Which gas do plants absorb from the air during photosynthesis?";
    let decision = engine
        .route(text.into(), engine.info().defaults)
        .await
        .unwrap();
    let before = common::proc_status("self", "VmRSS:") * 1024.0;
    let started = Instant::now();
    for _ in 0..decisions {
        engine.remember(&decision, 0);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = common::proc_status("self", "VmRSS:") * 1024.0;
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

    // The decision log, on real decisions of distinct queries: what a request pays (building
    // the row, handing it over), then what the writer thread takes to write the rows out when
    // the engine stops.
    let mut queries = common::bundled_queries(false, usize::MAX);
    queries.truncate(logged);
    let mut routed = Vec::new();
    for query in &queries {
        let decision = engine
            .route(query.clone(), engine.info().defaults)
            .await
            .unwrap();
        routed.push((engine.remember(&decision, 0), decision));
    }
    let started = Instant::now();
    for (query, (id, decision)) in queries.iter().zip(routed) {
        let served = Served {
            endpoint: "chat",
            tenant: "research".into(),
            decision_id: Some(id),
            answered_rank: Some(0),
            usage: Some((1000, 500)),
            cost: Some(0.025),
            ..Served::default()
        };
        engine.log_decision(&decision, query, served);
    }
    let handing = started.elapsed().as_secs_f64();
    let dropped = engine.decision_log_dropped();
    let started = Instant::now();
    drop(engine);
    let writing = started.elapsed().as_secs_f64();
    let bytes: u64 = std::fs::read_dir(log_dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let logged = queries.len();
    let written = (logged as u64 - dropped) as f64;
    println!(
        "decision log: {:.2} µs per decision on the request's path, {:.2} µs per row on the \
         writer thread (after the requests), {:.0} bytes per row on disk ({} of {logged} dropped)",
        handing / logged as f64 * 1e6,
        writing / written * 1e6,
        bytes as f64 / written,
        dropped
    );
    println!(
        "{}",
        json!({"logged": logged, "dropped": dropped, "us_per_decision_handed": handing / logged as f64 * 1e6,
               "writer_us_per_row_after": writing / written * 1e6, "bytes_per_row": bytes as f64 / written})
    );
}
