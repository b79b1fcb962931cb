//! Timing harness for clustering and routing, driven by `benches/compare_kmeans.py` (which runs
//! scikit-learn and faiss on the same data in the same run) or by hand:
//!
//! ```text
//! cargo bench --bench routing -- kmeans DATA.npy K N_INIT CENTROIDS_OUT.npy
//! cargo bench --bench routing -- route N_QUERIES [CLUSTERS MODELS]
//! ```
//!
//! Each prints one JSON line. Routing uses random unit-norm queries and centroids with random
//! statistics: its cost does not depend on the values.

use std::time::Instant;

use candle_core::{Device, Tensor};
use kroute::cluster::{KMeans, KMeansConfig};
use kroute::embed::Pooling;
use kroute::router::{ClusterStats, EmbeddingInfo, RouteParams, Router, TrainingInfo};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    match args.first().map(String::as_str) {
        Some("kmeans") => kmeans(
            &arg(1, ""),
            arg(2, "64").parse().unwrap(),
            arg(3, "1").parse().unwrap(),
            &arg(4, ""),
        ),
        Some("route") => route(
            arg(1, "100000").parse().unwrap(),
            arg(2, "60").parse().unwrap(),
            arg(3, "11").parse().unwrap(),
        ),
        _ => eprintln!(
            "usage: routing kmeans DATA.npy K N_INIT CENTROIDS_OUT.npy | route N [CLUSTERS MODELS]"
        ),
    }
}

fn kmeans(data: &str, k: usize, n_init: usize, centroids_out: &str) {
    let x = Tensor::read_npy(data)
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    let config = KMeansConfig {
        k,
        n_init,
        ..Default::default()
    };
    let start = Instant::now();
    let fitted = KMeans::fit(&x, &config).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    if !centroids_out.is_empty() {
        fitted.centroids.write_npy(centroids_out).unwrap();
    }
    println!(
        "{}",
        json!({"n": x.dim(0).unwrap(), "k": k, "n_init": n_init, "seconds": seconds,
               "inertia": fitted.inertia, "iterations": fitted.iterations})
    );
}

fn unit_rows(n: usize, dim: usize) -> Tensor {
    let x = Tensor::randn(0f32, 1.0, (n, dim), &Device::Cpu).unwrap();
    kroute::embed::l2_normalize(&x).unwrap()
}

fn route(n: usize, clusters: usize, models: usize) {
    let dim = 384;
    let stats = (0..clusters)
        .map(|c| {
            let value = |m: usize, salt: usize| Some(((c * 31 + m * 17 + salt) % 97) as f64 / 97.0);
            ClusterStats {
                size: 10,
                count: vec![10; models],
                accuracy: (0..models).map(|m| value(m, 0)).collect(),
                cost: (0..models).map(|m| value(m, 5)).collect(),
            }
        })
        .collect();
    let router = Router {
        models: (0..models).map(|m| format!("model-{m}")).collect(),
        centroids: unit_rows(clusters, dim),
        clusters: stats,
        embedding: EmbeddingInfo {
            model: "random".into(),
            revision: None,
            weights_sha256: String::new(),
            dim,
            normalized: true,
            pooling: Pooling::Mean,
            max_seq_length: 256,
        },
        defaults: RouteParams::default(),
        training: TrainingInfo::default(),
    };
    let queries = unit_rows(n, dim);
    let params = RouteParams::default();
    router
        .route(&queries.narrow(0, 0, n.min(1000)).unwrap(), &params)
        .unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let routed = router.route(&queries, &params).unwrap();
        let chosen: usize = (0..routed.len()).map(|i| routed.best(i)).sum();
        std::hint::black_box(chosen);
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        json!({"queries": n, "clusters": clusters, "models": models, "top_p": params.top_p,
               "seconds": best, "queries_per_s": n as f64 / best})
    );
}
