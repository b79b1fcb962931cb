//! Shrinkage, bagging and tuning on real routing data: every third record of the bundled
//! RouterBench file with its MiniLM embeddings (`tests/fixtures/minilm_subset_f16.safetensors`,
//! made with `kroute embed`), so no model runs here.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::fixture_path;
use kroute::cluster::KMeansConfig;
use kroute::eval::{evaluate, tune, EvalConfig, TuneConfig, TuneGrid};
use kroute::io::read_embeddings;
use kroute::records::{MissingCost, RoutingData, SplitOptions};
use kroute::router::{EmbeddingInfo, RouteParams, Router, Scoring};
use serde::Deserialize;

/// Every third bundled record, written as `subset.jsonl` in `dir`.
fn subset(dir: &Path) -> PathBuf {
    use std::io::BufRead;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/routerbench-3k.jsonl.gz");
    let reader = flate2::read::GzDecoder::new(std::fs::File::open(data).unwrap());
    let lines: Vec<String> = std::io::BufReader::new(reader)
        .lines()
        .map(Result::unwrap)
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
        .map(|(_, l)| l)
        .collect();
    let path = dir.join("subset.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

struct Fixture {
    _dir: tempfile::TempDir,
    data: RoutingData,
    embeddings: Tensor,
    embedding: EmbeddingInfo,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = RoutingData::read(&subset(dir.path()), MissingCost::Error).unwrap();
    let path = fixture_path("minilm_subset_f16.safetensors");
    let (embeddings, metadata) = read_embeddings(&path, &Device::Cpu).unwrap();
    assert_eq!(embeddings.dims(), [data.records.len(), 384]);
    Fixture {
        embedding: EmbeddingInfo::from_metadata(&metadata, &path).unwrap(),
        _dir: dir,
        data,
        embeddings,
    }
}

fn rows_of(embeddings: &Tensor, rows: &[usize]) -> Tensor {
    let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    embeddings
        .index_select(&Tensor::new(index, &Device::Cpu).unwrap(), 0)
        .unwrap()
}

fn kmeans(k: usize, seed: u64) -> KMeansConfig {
    KMeansConfig {
        k,
        n_init: 3,
        seed,
        ..Default::default()
    }
}

/// The router metrics `kroute eval` gave on this subset before shrinkage and bagging existed
/// (`scripts/paper_router_fixture.sh`, run with the previous release's binary).
#[derive(Deserialize)]
struct PreviousRelease {
    seeds: Vec<u64>,
    alphas: Vec<f64>,
    /// Per seed, per α: (average accuracy, cost, selection shares).
    router: Vec<Vec<(f64, f64, Vec<f64>)>>,
}

#[test]
fn no_shrinkage_and_no_bag_is_the_previous_release_exactly() {
    let f = fixture();
    let text = std::fs::read_to_string(fixture_path("paper_router_metrics.json")).unwrap();
    let previous: PreviousRelease = serde_json::from_str(&text).unwrap();
    let config = EvalConfig {
        alphas: previous.alphas.clone(),
        seeds: previous.seeds.clone(),
        kmeans: KMeansConfig {
            k: 60,
            ..Default::default()
        },
        bag: 1,
        routing: RouteParams {
            prior_strength: 0.0,
            ..RouteParams::default()
        },
        split: SplitOptions::default(),
        validation_ratio: None,
    };
    let evaluation = evaluate(&f.data, &f.embeddings, &f.embedding, &config, |_| {}).unwrap();
    for (run, want) in evaluation.runs.iter().zip(&previous.router) {
        for ((got, want), alpha) in run.router.iter().zip(want).zip(&previous.alphas) {
            let got = (got.average_accuracy, got.cost, got.selection.clone());
            assert_eq!(&got, want, "seed {} α {alpha}", run.seed);
        }
    }
}

#[test]
fn a_bagged_router_votes_the_mean_of_its_members_and_round_trips() {
    let f = fixture();
    let split = f.data.split(&SplitOptions::default()).unwrap();
    let train = rows_of(&f.embeddings, &split.train);
    let test = rows_of(&f.embeddings, &split.test);
    let params = RouteParams {
        prior_strength: 5.0,
        ..RouteParams::default()
    };
    let bagged = Router::fit_bagged(
        &train,
        &f.data,
        &split.train,
        &kmeans(20, 7),
        3,
        f.embedding.clone(),
        params,
    )
    .unwrap();
    assert_eq!((bagged.bag, bagged.clusters.len()), (3, 60));
    let routed = bagged.route(&test, &params).unwrap();
    // Member b on its own: the same k-means seed the bag gave it.
    let members: Vec<_> = (0..3)
        .map(|b| {
            let member = Router::fit(
                &train,
                &f.data,
                &split.train,
                &kmeans(20, 7 + b as u64 * kroute::router::BAG_SEED_STEP),
                f.embedding.clone(),
                params,
            )
            .unwrap();
            member.route(&test, &params).unwrap()
        })
        .collect();
    for i in 0..routed.len() {
        for m in 0..bagged.models.len() {
            let mean = members.iter().map(|r| r.totals(i)[m]).sum::<f32>() / 3.0;
            assert!(
                (routed.totals(i)[m] - mean).abs() < 1e-6,
                "query {i} model {m}: {} vs {mean}",
                routed.totals(i)[m]
            );
        }
        // Each member's nearest clusters, indexed into the bag's clusters.
        let nearest: Vec<usize> = routed.nearest(i).map(|(c, _, _)| c).collect();
        let expected: Vec<usize> = members
            .iter()
            .enumerate()
            .flat_map(|(b, r)| r.nearest(i).map(move |(c, _, _)| c + 20 * b))
            .collect();
        assert_eq!(nearest, expected);
    }
    // The explanation adds up: each total is Σ weight × score over the listed clusters, with
    // the shrunk scores.
    for i in 0..routed.len() {
        for m in 0..bagged.models.len() {
            let explained: f64 = routed
                .nearest(i)
                .map(|(c, _, w)| w as f64 * bagged.cluster_scores(c, &params)[m].unwrap_or(0.0))
                .sum();
            assert!((explained - routed.totals(i)[m] as f64).abs() < 1e-5);
        }
    }
    // The first member alone is a router of its own.
    let first = bagged
        .first_members(1)
        .unwrap()
        .route(&test, &params)
        .unwrap();
    assert_eq!(first.totals, members[0].totals);

    let dir = tempfile::tempdir().unwrap();
    bagged.save(dir.path()).unwrap();
    let loaded = Router::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!((loaded.bag, loaded.clusters.len()), (3, 60));
    assert_eq!(loaded.defaults, params);
    assert_eq!(loaded.route(&test, &params).unwrap().totals, routed.totals);
}

#[test]
fn tuning_never_reads_the_test_rows() {
    let f = fixture();
    let split = f.data.split(&SplitOptions::default()).unwrap();
    let train = rows_of(&f.embeddings, &split.train);
    let config = TuneConfig {
        grid: TuneGrid {
            clusters: vec![10, 20],
            top_p: vec![2, 4],
            beta: vec![9.0],
            prior_strength: vec![0.0, 5.0],
            bag: vec![1, 2],
        },
        folds: 3,
        seed: 1,
        alphas: vec![0.0, 0.5, 0.8, 1.0],
        kmeans: kmeans(0, 0),
        scoring: Scoring::default(),
    };
    let tuned = tune(&f.data, &split.train, &train, &f.embedding, &config, |_| {}).unwrap();
    assert_eq!(tuned.trials.len(), 16);
    assert!(tuned
        .trials
        .windows(2)
        .all(|w| w[0].area.mean >= w[1].area.mean));

    // Poison the test split: every test answer right for the cheapest model, wrong otherwise.
    let mut poisoned = f.data.clone();
    for &row in &split.test {
        for (m, score) in poisoned.records[row].scores.iter_mut().enumerate() {
            *score = Some(if m == 0 { 1.0 } else { 0.0 });
        }
    }
    let again = tune(
        &poisoned,
        &split.train,
        &train,
        &f.embedding,
        &config,
        |_| {},
    )
    .unwrap();
    let summary = |t: &kroute::eval::Tuning| -> Vec<(String, f64)> {
        t.trials
            .iter()
            .map(|trial| (format!("{:?}", trial.settings), trial.area.mean))
            .collect()
    };
    assert_eq!(summary(&again), summary(&tuned));
}
