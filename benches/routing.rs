//! Timing harness for clustering and routing, driven by `benches/compare_kmeans.py` (which runs
//! scikit-learn and faiss on the same data in the same run) or by hand:
//!
//! ```text
//! cargo bench --bench routing -- kmeans DATA.npy K N_INIT CENTROIDS_OUT.npy
//! cargo bench --bench routing -- route N_QUERIES [BAG]
//! ```
//!
//! Each prints one JSON line. Routing is `kroute::bench::route_throughput` (60 clusters ×
//! 11 models, random unit-norm queries; routing cost does not depend on the values).

use std::time::Instant;

use candle_core::{Device, Tensor};
use kroute::cluster::{KMeans, KMeansConfig};
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
            arg(2, "1").parse().unwrap(),
        ),
        _ => eprintln!("usage: routing kmeans DATA.npy K N_INIT CENTROIDS_OUT.npy | route N [BAG]"),
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

fn route(n: usize, bag: usize) {
    let case = kroute::bench::route_throughput(n, bag, &Device::Cpu).unwrap();
    println!("{}", serde_json::to_string(&case).unwrap());
}
