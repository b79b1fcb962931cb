//! `--dtype int8` against f32 on real weights and real routing data: the vectors of the parity
//! texts (MiniLM and MPNet), the routing decisions of an f32-trained router on the RouterBench
//! test split when its queries are embedded in int8, and the evaluation sweep.

mod common;

use candle_core::{Device, Tensor};
use common::{cosine, fixture_path};
use kroute::cluster::KMeansConfig;
use kroute::device::Precision;
use kroute::eval::{alpha_grid, evaluate, EvalConfig};
use kroute::kernels::int8::Isa;
use kroute::records::{MissingCost, RoutingData, SplitOptions};
use kroute::router::{EmbeddingInfo, RouteParams, Router, RECOMMENDED_BAG};
use kroute::Embedder;
use serde::Deserialize;

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
const MPNET: &str = "sentence-transformers/all-mpnet-base-v2";

fn load(model: &str, precision: Precision) -> Embedder {
    Embedder::load(model, &Device::Cpu, Some(precision)).unwrap()
}

fn skip_without_kernel() -> bool {
    if Isa::detect().is_none() {
        eprintln!("skipped: this CPU has no int8 kernel (int8 needs x86-64 with AVX2)");
        return true;
    }
    false
}

#[derive(Deserialize)]
struct Parity {
    texts: Vec<String>,
}

/// Every parity text's int8 vector within cosine 0.99 of its f32 vector.
fn assert_close_to_f32(model: &str, fixture: &str) {
    let text = std::fs::read_to_string(fixture_path(fixture)).unwrap();
    let texts = serde_json::from_str::<Parity>(&text).unwrap().texts;
    let want = load(model, DTYPE_F32).embed_vecs(&texts).unwrap();
    let got = load(model, Precision::Int8).embed_vecs(&texts).unwrap();
    let mut worst = 1f64;
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        let cos = cosine(got, want);
        assert!(cos >= 0.99, "{model}: text {i}: cosine {cos}");
        worst = worst.min(cos);
    }
    println!(
        "{model}: int8 vs f32, worst cosine {worst:.5} over {} texts",
        texts.len()
    );
}

const DTYPE_F32: Precision = Precision::Float(candle_core::DType::F32);

#[test]
fn int8_vectors_are_within_cosine_099_of_f32() {
    if skip_without_kernel() {
        return;
    }
    assert_close_to_f32(MINILM, "minilm_parity.json");
    assert_close_to_f32(MPNET, "mpnet_parity.json");
}

fn rows_of(embeddings: &Tensor, rows: &[usize]) -> Tensor {
    let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    embeddings
        .index_select(&Tensor::new(index, &Device::Cpu).unwrap(), 0)
        .unwrap()
}

/// A router trained on f32 vectors routes the test split's int8 vectors as its f32 ones (≥ 99 %
/// of queries at every α), and the evaluation sweep run on int8 vectors stays close to f32's at
/// every α. The sweep retrains k-means on each set of vectors, and k-means turns the tiniest
/// difference into other clusters, so single seeds differ by up to 0.01 at the steep α values
/// whichever the vectors; the means over 40 seeds are compared. Measured: int8 within 0.0040
/// (VNNI kernel) and 0.0033 (AVX2 kernel) of f32, the goal being 0.005 (docs/EVALUATION.md); the
/// bound here, 0.0075, catches a regression without failing on the last bits of another CPU's
/// f32 GEMM.
#[test]
fn int8_routes_and_evaluates_like_f32_on_routerbench() {
    if skip_without_kernel() {
        return;
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/routerbench-3k.jsonl.gz");
    let data = RoutingData::read(&path, MissingCost::Error).unwrap();
    let texts: Vec<&str> = data.records.iter().map(|r| r.query.as_str()).collect();
    let (f32_embedder, int8_embedder) = (load(MINILM, DTYPE_F32), load(MINILM, Precision::Int8));
    // The same model to routers and embedding files.
    let info = EmbeddingInfo::of(&f32_embedder);
    assert_eq!(info, EmbeddingInfo::of(&int8_embedder));
    let f32_vectors = f32_embedder.embed(&texts).unwrap();
    let int8_vectors = int8_embedder.embed(&texts).unwrap();

    let split = data.split(&SplitOptions::default()).unwrap();
    let kmeans = KMeansConfig {
        k: 60,
        ..Default::default()
    };
    let router = Router::fit_bagged(
        &rows_of(&f32_vectors, &split.train),
        &data,
        &split.train,
        &kmeans,
        RECOMMENDED_BAG,
        info.clone(),
        RouteParams::recommended(),
    )
    .unwrap();
    let (test_f32, test_int8) = (
        rows_of(&f32_vectors, &split.test),
        rows_of(&int8_vectors, &split.test),
    );
    for alpha in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let params = RouteParams {
            scoring: RouteParams::recommended().scoring.at_alpha(alpha),
            ..RouteParams::recommended()
        };
        let (a, b) = (
            router.route(&test_f32, &params).unwrap(),
            router.route(&test_int8, &params).unwrap(),
        );
        let same = (0..a.len()).filter(|&i| a.best(i) == b.best(i)).count();
        let share = same as f64 / a.len() as f64;
        println!(
            "α {alpha}: {same}/{} test queries routed identically",
            a.len()
        );
        assert!(share >= 0.99, "α {alpha}: only {share:.4} identical");
    }

    let config = EvalConfig {
        alphas: alpha_grid(&[]),
        seeds: (42..82).collect(),
        kmeans,
        bag: RECOMMENDED_BAG,
        routing: RouteParams::recommended(),
        split: SplitOptions::default(),
        validation_ratio: None,
    };
    // Per α: (mean average accuracy, mean cost) over the seeds.
    let sweep = |vectors: &Tensor| -> Vec<(f64, f64)> {
        let evaluation = evaluate(&data, vectors, &info, &config, |_| {}).unwrap();
        let runs = evaluation.runs.len() as f64;
        (0..config.alphas.len())
            .map(|a| {
                let mean = |f: fn(&kroute::eval::PolicyMetrics) -> f64| {
                    evaluation
                        .runs
                        .iter()
                        .map(|run| f(&run.router[a]))
                        .sum::<f64>()
                        / runs
                };
                (mean(|m| m.average_accuracy), mean(|m| m.cost))
            })
            .collect()
    };
    let (f32_sweep, int8_sweep) = (sweep(&f32_vectors), sweep(&int8_vectors));
    for ((alpha, f), i) in config.alphas.iter().zip(&f32_sweep).zip(&int8_sweep) {
        println!(
            "α {alpha:.2}: f32 {:.4} (${:.2}), int8 {:.4} (${:.2}), difference {:+.4}",
            f.0,
            f.1,
            i.0,
            i.1,
            i.0 - f.0
        );
    }
    for ((alpha, f), i) in config.alphas.iter().zip(&f32_sweep).zip(&int8_sweep) {
        assert!(
            (f.0 - i.0).abs() <= 0.0075,
            "α {alpha}: f32 {f:?}, int8 {i:?}"
        );
    }
}
