//! k-means against scikit-learn on real MiniLM embeddings (fixture made by
//! scripts/make_kmeans_fixture.py: 2,000 RouterBench queries; reference = best inertia of
//! scikit-learn `KMeans(n_init=10)` over three random states).

mod common;

use candle_core::{Device, Tensor};
use common::fixture_path;
use kroute::cluster::{KMeans, KMeansConfig};

#[test]
fn inertia_within_one_percent_of_scikit_learn() {
    let x = Tensor::read_npy(fixture_path("kmeans_minilm_2000.npy")).unwrap();
    assert_eq!(x.dims(), &[2000, 384]);
    let x = x.to_device(&Device::Cpu).unwrap();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_path("kmeans_reference.json")).unwrap(),
    )
    .unwrap();
    for (k, sklearn) in reference["inertia"].as_object().unwrap() {
        let k: usize = k.parse().unwrap();
        let sklearn = sklearn.as_f64().unwrap();
        let config = KMeansConfig {
            k,
            tile_rows: 700, // several tiles, including a ragged last one
            ..Default::default()
        };
        let fitted = KMeans::fit(&x, &config).unwrap();
        assert!(
            fitted.inertia <= 1.01 * sklearn,
            "k={k}: kroute {} vs scikit-learn {sklearn}",
            fitted.inertia
        );
        // Inertia is what the labels and centroids say it is.
        let (labels, distances) = fitted.predict(&x).unwrap();
        assert_eq!(labels, fitted.labels);
        let total: f64 = distances.iter().map(|&d| d as f64).sum();
        assert!((total - fitted.inertia).abs() < 1e-3 * fitted.inertia);
        // Same seed, same clustering, to the bit: the CPU segment sums do not depend on how
        // rayon shares the rows out.
        let again = KMeans::fit(&x, &config).unwrap();
        assert_eq!(again.labels, fitted.labels);
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values(&again.centroids), values(&fitted.centroids), "k={k}");
        // Seeding and iterating on a sample of 20 points per cluster first, then refining on
        // all points, loses nothing measurable.
        let sampled = KMeans::fit(
            &x,
            &KMeansConfig {
                sample_per_cluster: 20,
                ..config
            },
        )
        .unwrap();
        assert!(
            sampled.inertia <= 1.01 * sklearn,
            "k={k} sampled: kroute {} vs scikit-learn {sklearn}",
            sampled.inertia
        );
    }
}
