//! The fused kernels against independent oracles, and against candle's generic ops through
//! their callers. Inputs are random and fresh every run (the seed is printed; set
//! `KROUTE_TEST_SEED` to replay one) and every output starts poisoned, so an element a kernel
//! forgets to write shows up as NaN or `u32::MAX`.
//!
//! With `--features cuda` the `cuda` module also holds each CUDA kernel to its CPU reference on
//! the same inputs; those tests need a GPU.

use std::sync::{Mutex, MutexGuard};

use candle_core::{DType, Device, Tensor};
use kroute::cluster::{KMeans, KMeansConfig};
use kroute::embed::{pool, Pooling};
use kroute::kernels::reference::{self, VoteOutputs};
use kroute::kernels::{self, Points};
use kroute::router::{RouteParams, Router};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Tests that switch the kernels off hold this, so that no other test sees the switch.
static SWITCH: Mutex<()> = Mutex::new(());

fn setup(test: &str) -> (StdRng, MutexGuard<'static, ()>) {
    let guard = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    kernels::poison_outputs(true);
    kernels::set_enabled(true);
    let seed = std::env::var("KROUTE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: KROUTE_TEST_SEED={seed}");
    (StdRng::seed_from_u64(seed), guard)
}

fn uniform(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn host<T: candle_core::WithDType>(t: &Tensor) -> Vec<T> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum()
}

/// Random points as a column slice of a wider matrix (strided rows) and centroids.
struct Clustering {
    wide: Tensor,
    points: Vec<f32>,
    centroids: Vec<f32>,
    n: usize,
    k: usize,
    dim: usize,
}

impl Clustering {
    fn random(rng: &mut StdRng, n: usize, k: usize, dim: usize) -> Self {
        let pad = 3;
        let wide_data = uniform(rng, n * (dim + pad));
        let points: Vec<f32> = wide_data
            .chunks(dim + pad)
            .flat_map(|row| row[..dim].to_vec())
            .collect();
        let wide = Tensor::from_vec(wide_data, (n, dim + pad), &Device::Cpu).unwrap();
        let centroids = uniform(rng, k * dim);
        Self {
            wide,
            points,
            centroids,
            n,
            k,
            dim,
        }
    }

    fn on(&self, device: &Device) -> (Tensor, Tensor, Tensor) {
        let points = self
            .wide
            .to_device(device)
            .unwrap()
            .narrow(1, 0, self.dim)
            .unwrap();
        let sq_norms = points.sqr().unwrap().sum(1).unwrap();
        let centroids =
            Tensor::from_vec(self.centroids.clone(), (self.k, self.dim), device).unwrap();
        (points, sq_norms, centroids)
    }

    /// The squared norm of each `dim`-long row of `rows` (points or centroids).
    fn sq_norms(&self, rows: &[f32]) -> Vec<f32> {
        rows.chunks(self.dim)
            .map(|x| x.iter().map(|v| v * v).sum())
            .collect()
    }

    /// Checks labels and distances against exact f64 distances: a label may differ from the
    /// oracle's only where the two centroids are equally near to f32 precision.
    fn check(&self, labels: &[u32], distances: &[f32]) {
        for i in 0..self.n {
            let x = &self.points[i * self.dim..(i + 1) * self.dim];
            let exact: Vec<f64> = self
                .centroids
                .chunks(self.dim)
                .map(|c| sq_dist(x, c))
                .collect();
            let best = exact.iter().cloned().fold(f64::INFINITY, f64::min);
            let label = labels[i] as usize;
            assert!(label < self.k, "row {i}: label {label} not written");
            let tolerance = 1e-5 * (1.0 + best);
            assert!(
                exact[label] - best <= tolerance,
                "row {i}: label {label} at {} but the nearest is at {best}",
                exact[label]
            );
            assert!(
                (distances[i] as f64 - best).abs() <= 1e-4 * (1.0 + best),
                "row {i}: distance {} vs exact {best}",
                distances[i]
            );
        }
    }
}

#[test]
fn nearest_centroid_matches_exact_distances() {
    let (mut rng, _guard) = setup("nearest_centroid");
    // Sizes off every tile boundary: 128 points, 128 centroids, 16 dimensions.
    let c = Clustering::random(&mut rng, 1_001, 37, 67);
    let (points, sq_norms, centroids) = c.on(&Device::Cpu);
    let nearest = kernels::nearest_centroid(&points, &sq_norms, &centroids).unwrap();
    c.check(&host(&nearest.labels), &host(&nearest.distances));
}

#[test]
fn segment_sum_matches_exact_sums() {
    let (mut rng, _guard) = setup("segment_sum");
    let (n, width, segments) = (5_003, 33, 17);
    let values = uniform(&mut rng, n * width);
    // The last segment stays empty and must come back as zeros.
    let labels: Vec<u32> = (0..n)
        .map(|_| rng.random_range(0..segments as u32 - 1))
        .collect();
    let sums = kernels::segment_sum(
        &Tensor::from_vec(values.clone(), (n, width), &Device::Cpu).unwrap(),
        &Tensor::new(labels.as_slice(), &Device::Cpu).unwrap(),
        segments,
    )
    .unwrap();
    check_segment_sums(&values, &labels, width, segments, &host(&sums));
}

fn check_segment_sums(values: &[f32], labels: &[u32], width: usize, segments: usize, sums: &[f32]) {
    let mut exact = vec![0f64; segments * width];
    for (row, &label) in values.chunks(width).zip(labels) {
        for (j, v) in row.iter().enumerate() {
            exact[label as usize * width + j] += *v as f64;
        }
    }
    for (i, (got, want)) in sums.iter().zip(&exact).enumerate() {
        assert!(
            (*got as f64 - want).abs() <= 1e-3,
            "segment {} column {}: {got} vs exact {want}",
            i / width,
            i % width
        );
    }
    assert!(sums[(segments - 1) * width..].iter().all(|&s| s == 0.0));
}

#[test]
fn segment_sum_rejects_labels_out_of_range() {
    let _guard = setup("segment_sum_range").1;
    let values = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
    let labels = Tensor::new(&[0u32, 4], &Device::Cpu).unwrap();
    let err = kernels::segment_sum(&values, &labels, 4).unwrap_err();
    assert!(err.to_string().contains("label 4 out of range"), "{err}");
}

/// Hidden states and a mask with ragged lengths, one row fully padded.
fn pooling_inputs(rng: &mut StdRng, batch: usize, seq: usize, dim: usize) -> (Vec<f32>, Vec<f32>) {
    let hidden = uniform(rng, batch * seq * dim);
    let mut mask = vec![0f32; batch * seq];
    for b in 1..batch {
        let len = rng.random_range(1..=seq);
        mask[b * seq..b * seq + len].fill(1.0);
    }
    (hidden, mask)
}

fn exact_mean_pool(
    hidden: &[f32],
    mask: &[f32],
    seq: usize,
    dim: usize,
    normalize: bool,
) -> Vec<f64> {
    let batch = mask.len() / seq;
    let mut out = vec![0f64; batch * dim];
    for b in 0..batch {
        let count: f64 = mask[b * seq..(b + 1) * seq].iter().map(|&m| m as f64).sum();
        let row = &mut out[b * dim..(b + 1) * dim];
        for t in 0..seq {
            for (j, r) in row.iter_mut().enumerate() {
                *r += (mask[b * seq + t] * hidden[(b * seq + t) * dim + j]) as f64;
            }
        }
        row.iter_mut().for_each(|r| *r /= count.max(1e-9));
        let norm = row.iter().map(|r| r * r).sum::<f64>().sqrt().max(1e-12);
        if normalize {
            row.iter_mut().for_each(|r| *r /= norm);
        }
    }
    out
}

fn assert_close(got: &[f32], want: &[f64], tolerance: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= tolerance,
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn mean_pool_matches_exact_means() {
    let (mut rng, _guard) = setup("mean_pool");
    let (batch, seq, dim) = (9, 23, 50);
    let (hidden, mask) = pooling_inputs(&mut rng, batch, seq, dim);
    let h = Tensor::from_vec(hidden.clone(), (batch, seq, dim), &Device::Cpu).unwrap();
    let m = Tensor::from_vec(mask.clone(), (batch, seq), &Device::Cpu).unwrap();
    for normalize in [false, true] {
        let pooled = kernels::mean_pool(&h, &m, normalize).unwrap();
        let exact = exact_mean_pool(&hidden, &mask, seq, dim, normalize);
        assert_close(&host(&pooled), &exact, 1e-5, "pooled");
        // The fully padded row pools to zeros, normalised or not.
        assert!(host::<f32>(&pooled)[..dim].iter().all(|&v| v == 0.0));
    }
}

/// Distances with repeated values (so ties must go to the lower cluster) and votes.
fn vote_inputs(rng: &mut StdRng, queries: usize, k: usize, models: usize) -> (Vec<f32>, Vec<f32>) {
    let distances = (0..queries * k)
        .map(|_| (rng.random_range(0..40) as f32) / 20.0)
        .collect();
    (distances, uniform(rng, k * models))
}

fn check_votes(
    distances: &[f32],
    votes: &[f32],
    (k, models, top_p): (usize, usize, usize),
    beta: f64,
    out: &VoteOutputs,
) {
    for (q, row) in distances.chunks(k).enumerate() {
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
        let chosen = &order[..top_p];
        let got: Vec<usize> = out.clusters[q * top_p..(q + 1) * top_p]
            .iter()
            .map(|&c| c as usize)
            .collect();
        assert_eq!(got, chosen, "query {q}: nearest clusters");
        let logits: Vec<f64> = chosen.iter().map(|&c| -beta * row[c] as f64).collect();
        let sum: f64 = logits.iter().map(|l| (l - logits[0]).exp()).sum();
        let weights: Vec<f64> = logits.iter().map(|l| (l - logits[0]).exp() / sum).collect();
        let span = q * top_p..(q + 1) * top_p;
        let near: Vec<f64> = chosen.iter().map(|&c| row[c] as f64).collect();
        assert_close(&out.distances[span.clone()], &near, 0.0, "distances");
        assert_close(&out.weights[span], &weights, 1e-6, "weights");
        let totals: Vec<f64> = (0..models)
            .map(|m| {
                chosen
                    .iter()
                    .zip(&weights)
                    .map(|(&c, w)| w * votes[c * models + m] as f64)
                    .sum()
            })
            .collect();
        assert_close(
            &out.totals[q * models..(q + 1) * models],
            &totals,
            1e-5,
            "totals",
        );
    }
}

#[test]
fn top_p_vote_matches_exact_votes() {
    let (mut rng, _guard) = setup("top_p_vote");
    let k = 45;
    vote_and_check(&Device::Cpu, &mut rng, (300, k, 11), &[1, 4, k]);
    let distances = Tensor::zeros((2, k), DType::F32, &Device::Cpu).unwrap();
    let votes = Tensor::zeros((k, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(kernels::top_p_vote(&distances, &votes, k + 1, 1.0, 1).is_err());
    // 45 clusters are not 2 equal clusterings.
    assert!(kernels::top_p_vote(&distances, &votes, 4, 1.0, 2).is_err());
}

/// Several side-by-side clusterings (a bagged router) in one fused pass equal each member's own
/// vote in turn, combined by `by_member`.
#[test]
fn bagged_vote_is_each_member_in_turn() {
    let (mut rng, _guard) = setup("bagged_vote");
    let (queries, k, members, models) = (257, 30, 3, 11);
    let (distances, votes) = vote_inputs(&mut rng, queries, members * k, models);
    let d = Tensor::from_vec(distances, (queries, members * k), &Device::Cpu).unwrap();
    let v = Tensor::from_vec(votes, (members * k, models), &Device::Cpu).unwrap();
    for top_p in [1, 4, k] {
        let beta = rng.random_range(0.0..20.0);
        let fused = kernels::top_p_vote(&d, &v, top_p, beta, members).unwrap();
        let each = kernels::by_member(&d, &v, members, |d, v| {
            kernels::top_p_vote(d, v, top_p, beta, 1)
        })
        .unwrap();
        assert_eq!(host::<u32>(&fused.clusters), host::<u32>(&each.clusters));
        for (name, a, b) in [
            ("totals", &fused.totals, &each.totals),
            ("weights", &fused.weights, &each.weights),
            ("distances", &fused.distances, &each.distances),
        ] {
            let worst = host::<f32>(a)
                .iter()
                .zip(host::<f32>(b))
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-6, "top_p {top_p}: {name} differ by {worst}");
        }
    }
}

/// Votes on `device` for each of `top_ps` with a random β, checked against exact ones.
fn vote_and_check(
    device: &Device,
    rng: &mut StdRng,
    (queries, k, models): (usize, usize, usize),
    top_ps: &[usize],
) {
    let (distances, votes) = vote_inputs(rng, queries, k, models);
    let d = Tensor::from_vec(distances.clone(), (queries, k), device).unwrap();
    let v = Tensor::from_vec(votes.clone(), (k, models), device).unwrap();
    for &top_p in top_ps {
        let beta = rng.random_range(0.0..20.0);
        let vote = kernels::top_p_vote(&d, &v, top_p, beta, 1).unwrap();
        let out = VoteOutputs {
            totals: host(&vote.totals),
            clusters: host(&vote.clusters),
            distances: host(&vote.distances),
            weights: host(&vote.weights),
        };
        check_votes(&distances, &votes, (k, models, top_p), beta as f64, &out);
    }
}

/// Runs `f` with the kernels off, then on, and returns both results.
fn both_paths<T>(mut f: impl FnMut() -> T) -> (T, T) {
    kernels::set_enabled(false);
    let generic = f();
    kernels::set_enabled(true);
    (generic, f())
}

#[test]
fn pooling_agrees_with_generic_ops() {
    let (mut rng, _guard) = setup("pooling_generic");
    let (batch, seq, dim) = (7, 19, 384);
    let (hidden, mask) = pooling_inputs(&mut rng, batch, seq, dim);
    let h = Tensor::from_vec(hidden, (batch, seq, dim), &Device::Cpu).unwrap();
    let m = Tensor::from_vec(mask, (batch, seq), &Device::Cpu).unwrap();
    for normalize in [false, true] {
        let (generic, fused) =
            both_paths(|| host::<f32>(&pool(&h, &m, Pooling::Mean, normalize).unwrap()));
        let generic: Vec<f64> = generic.iter().map(|&v| v as f64).collect();
        assert_close(&fused, &generic, 1e-6, "fused vs generic pooling");
    }
}

#[test]
fn kmeans_agrees_with_generic_ops() {
    let (mut rng, _guard) = setup("kmeans_generic");
    let (n, dim) = (3_000, 24);
    // Points around 12 random centres, so the clustering is well defined.
    let centres = uniform(&mut rng, 12 * dim);
    let data: Vec<f32> = (0..n)
        .flat_map(|i| {
            let c = &centres[(i % 12) * dim..(i % 12 + 1) * dim];
            c.iter()
                .map(|v| v + 0.05 * rng.random_range(-1.0f32..1.0))
                .collect::<Vec<_>>()
        })
        .collect();
    let x = Tensor::from_vec(data, (n, dim), &Device::Cpu).unwrap();
    let config = KMeansConfig {
        k: 12,
        n_init: 2,
        seed: rng.random(),
        ..Default::default()
    };
    let (generic, fused) = both_paths(|| KMeans::fit(&x, &config).unwrap());
    let relative = (fused.inertia - generic.inertia).abs() / generic.inertia;
    assert!(
        relative < 1e-4,
        "inertia {} vs generic {}",
        fused.inertia,
        generic.inertia
    );
}

/// A router over random centroids whose clusters' accuracies and costs take few distinct
/// values, so that some models tie exactly.
fn random_router(rng: &mut StdRng, k: usize, dim: usize, models: usize) -> Router {
    let mut router = kroute::bench::random_router(k, models, dim, 1, &Device::Cpu).unwrap();
    let centroids = Tensor::from_vec(uniform(rng, k * dim), (k, dim), &Device::Cpu).unwrap();
    router.centroids = kroute::embed::l2_normalize(&centroids).unwrap();
    let mut pick = |values: &[f64]| Some(values[rng.random_range(0..values.len())]);
    for stats in &mut router.clusters {
        stats.accuracy = (0..models).map(|_| pick(&[0.0, 0.5, 0.7, 1.0])).collect();
        stats.cost = (0..models).map(|_| pick(&[0.001, 0.01, 0.02])).collect();
    }
    router
}

fn random_queries(rng: &mut StdRng, queries: usize, dim: usize) -> Tensor {
    let q = Tensor::from_vec(uniform(rng, queries * dim), (queries, dim), &Device::Cpu).unwrap();
    kroute::embed::l2_normalize(&q).unwrap()
}

#[test]
fn routing_agrees_with_generic_ops() {
    let (mut rng, _guard) = setup("routing_generic");
    let router = random_router(&mut rng, 60, 384, 11);
    let q = random_queries(&mut rng, 2_000, 384);
    for top_p in [1, 4, 60] {
        let params = RouteParams {
            top_p,
            ..RouteParams::default()
        };
        let (generic, fused) = both_paths(|| router.route(&q, &params).unwrap());
        assert_eq!(
            generic.clusters, fused.clusters,
            "top_p {top_p}: nearest clusters"
        );
        for i in 0..generic.len() {
            assert_eq!(generic.best(i), fused.best(i), "top_p {top_p}, query {i}");
        }
        let totals: Vec<f64> = generic.totals.iter().map(|&t| t as f64).collect();
        assert_close(&fused.totals, &totals, 1e-5, "totals");
    }
}

#[test]
fn cpu_references_write_every_output() {
    let (mut rng, _guard) = setup("references_poisoned");
    let c = Clustering::random(&mut rng, 300, 9, 20);
    let (x_sq, c_sq) = (c.sq_norms(&c.points), c.sq_norms(&c.centroids));
    let (mut labels, mut distances) = (vec![u32::MAX; c.n], vec![f32::NAN; c.n]);
    let points = Points {
        data: &c.points,
        dim: c.dim,
        row_stride: c.dim,
    };
    reference::nearest_centroid(
        points,
        &x_sq,
        &c.centroids,
        &c_sq,
        &mut labels,
        &mut distances,
    );
    c.check(&labels, &distances);
}

#[cfg(feature = "cuda")]
mod cuda {
    //! Each CUDA kernel against its CPU reference on the same random inputs.

    use super::*;

    fn gpu() -> Device {
        Device::new_cuda(0).expect("the cuda tests need a GPU")
    }

    #[test]
    fn nearest_centroid_matches_cpu() {
        let (mut rng, _guard) = setup("cuda_nearest_centroid");
        for (n, k, dim) in [(1_001, 37, 67), (20_000, 1_024, 384), (5, 1, 3)] {
            let c = Clustering::random(&mut rng, n, k, dim);
            let (points, sq_norms, centroids) = c.on(&gpu());
            let nearest = kernels::nearest_centroid(&points, &sq_norms, &centroids).unwrap();
            c.check(&host(&nearest.labels), &host(&nearest.distances));
        }
    }

    #[test]
    fn segment_sum_matches_cpu() {
        let (mut rng, _guard) = setup("cuda_segment_sum");
        for (n, width, segments) in [(5_003, 33, 17), (200_000, 385, 64)] {
            let values = uniform(&mut rng, n * width);
            let labels: Vec<u32> = (0..n)
                .map(|_| rng.random_range(0..segments as u32 - 1))
                .collect();
            let sums = kernels::segment_sum(
                &Tensor::from_vec(values.clone(), (n, width), &gpu()).unwrap(),
                &Tensor::new(labels.as_slice(), &gpu()).unwrap(),
                segments,
            )
            .unwrap();
            check_segment_sums(&values, &labels, width, segments, &host(&sums));
        }
    }

    #[test]
    fn mean_pool_matches_cpu_in_every_dtype() {
        let (mut rng, _guard) = setup("cuda_mean_pool");
        for (batch, seq, dim) in [(9, 23, 50), (64, 128, 384), (3, 7, 1_100)] {
            let (hidden, mask) = pooling_inputs(&mut rng, batch, seq, dim);
            let h = Tensor::from_vec(hidden, (batch, seq, dim), &Device::Cpu).unwrap();
            let m = Tensor::from_vec(mask, (batch, seq), &Device::Cpu).unwrap();
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                // The reference sees the same rounded states the kernel reads.
                let h = h.to_dtype(dtype).unwrap();
                let cpu = kernels::mean_pool(&h, &m, true).unwrap();
                let gpu_out = kernels::mean_pool(
                    &h.to_device(&gpu()).unwrap(),
                    &m.to_device(&gpu()).unwrap(),
                    true,
                )
                .unwrap();
                let want: Vec<f64> = host::<f32>(&cpu).iter().map(|&v| v as f64).collect();
                assert_close(&host(&gpu_out), &want, 1e-5, &format!("{dtype:?} pooled"));
            }
        }
    }

    #[test]
    fn top_p_vote_matches_cpu() {
        let (mut rng, _guard) = setup("cuda_top_p_vote");
        let top_ps = [1, 4, kernels::MAX_KERNEL_TOP_P];
        vote_and_check(&gpu(), &mut rng, (1_000, 300, 11), &top_ps);
    }

    #[test]
    fn kmeans_on_gpu_matches_cpu_inertia() {
        let (mut rng, _guard) = setup("cuda_kmeans");
        let c = Clustering::random(&mut rng, 50_000, 64, 384);
        let x = Tensor::from_vec(c.points.clone(), (c.n, c.dim), &Device::Cpu).unwrap();
        let config = KMeansConfig {
            k: 64,
            n_init: 1,
            seed: rng.random(),
            ..Default::default()
        };
        let cpu = KMeans::fit(&x, &config).unwrap();
        let gpu_fit = KMeans::fit(&x.to_device(&gpu()).unwrap(), &config).unwrap();
        let relative = (gpu_fit.inertia - cpu.inertia).abs() / cpu.inertia;
        assert!(
            relative < 0.01,
            "GPU inertia {} vs CPU {}",
            gpu_fit.inertia,
            cpu.inertia
        );
    }

    #[test]
    fn routing_on_gpu_decides_as_on_cpu() {
        let (mut rng, _guard) = setup("cuda_routing");
        let router = random_router(&mut rng, 60, 384, 11);
        let q = random_queries(&mut rng, 4_000, 384);
        let params = RouteParams::default();
        let cpu = router.route(&q, &params).unwrap();
        let mut on_gpu = router.clone();
        on_gpu.centroids = router.centroids.to_device(&gpu()).unwrap();
        let gpu_batch = on_gpu.route(&q, &params).unwrap();
        assert_eq!(cpu.clusters, gpu_batch.clusters);
        for i in 0..cpu.len() {
            assert_eq!(cpu.best(i), gpu_batch.best(i), "query {i}");
        }
    }
}

/// The CUDA sources themselves, run on the CPU through `kernels/emulate` (a C++ stand-in for
/// the CUDA runtime: threads, barriers, warp shuffles), so that the kernels' indexing, tile
/// edges, reductions and tie-breaks are tested on machines without a GPU. Needs a C++20
/// compiler (`c++`, or `$CXX`).
mod emulated {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::OnceLock;

    fn harness() -> &'static Path {
        static BUILT: OnceLock<PathBuf> = OnceLock::new();
        BUILT.get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/emulate");
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-harness");
            let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
            let status = Command::new(&compiler)
                .args([
                    "-std=c++20",
                    "-O1",
                    "-pthread",
                    "-Wno-unknown-pragmas",
                    "-I",
                ])
                .arg(&dir)
                .arg(dir.join("harness.cpp"))
                .arg("-o")
                .arg(&out)
                .status()
                .unwrap_or_else(|e| panic!("running {compiler} for the kernel emulation: {e}"));
            assert!(
                status.success(),
                "kernels/emulate/harness.cpp did not compile"
            );
            out
        })
    }

    /// Little-endian scalars and arrays, in the order harness.cpp reads them.
    #[derive(Default)]
    struct Bytes(Vec<u8>);

    impl Bytes {
        fn u32(mut self, value: usize) -> Self {
            self.0.extend((value as u32).to_le_bytes());
            self
        }
        fn f32s(mut self, values: &[f32]) -> Self {
            values.iter().for_each(|v| self.0.extend(v.to_le_bytes()));
            self
        }
        fn u32s(mut self, values: &[u32]) -> Self {
            values.iter().for_each(|v| self.0.extend(v.to_le_bytes()));
            self
        }
    }

    /// The kernel's outputs, read in order.
    struct Outputs(std::vec::IntoIter<u8>);

    impl Outputs {
        fn words(&mut self, len: usize) -> Vec<[u8; 4]> {
            (0..len)
                .map(|_| std::array::from_fn(|_| self.0.next().expect("output too short")))
                .collect()
        }
        fn f32s(&mut self, len: usize) -> Vec<f32> {
            self.words(len)
                .into_iter()
                .map(f32::from_le_bytes)
                .collect()
        }
        fn u32s(&mut self, len: usize) -> Vec<u32> {
            self.words(len)
                .into_iter()
                .map(u32::from_le_bytes)
                .collect()
        }
    }

    fn run(kernel: &str, input: Bytes) -> Outputs {
        let dir = tempfile::tempdir().unwrap();
        let (input_path, output_path) = (dir.path().join("in"), dir.path().join("out"));
        std::fs::write(&input_path, input.0).unwrap();
        let status = Command::new(harness())
            .arg(kernel)
            .arg(&input_path)
            .arg(&output_path)
            .status()
            .unwrap();
        assert!(status.success(), "emulated {kernel} failed");
        Outputs(std::fs::read(output_path).unwrap().into_iter())
    }

    #[test]
    fn nearest_centroid_kernel() {
        let (mut rng, _guard) = setup("emulated_nearest_centroid");
        // Three blocks of 128 points, the last one partial; 37 centroids in one partial tile;
        // 67 dimensions: four full steps of 16 and a partial one; rows strided.
        let c = Clustering::random(&mut rng, 300, 37, 67);
        let row_stride = c.wide.dim(1).unwrap();
        let input = Bytes::default()
            .u32(c.n)
            .u32(c.k)
            .u32(c.dim)
            .u32(row_stride)
            .f32s(&host::<f32>(&c.wide))
            .f32s(&c.sq_norms(&c.points))
            .f32s(&c.centroids)
            .f32s(&c.sq_norms(&c.centroids));
        let mut out = run("nearest_centroid", input);
        let (labels, distances) = (out.u32s(c.n), out.f32s(c.n));
        c.check(&labels, &distances);
    }

    #[test]
    fn segment_sum_kernel() {
        let (mut rng, _guard) = setup("emulated_segment_sum");
        let (n, width, segments) = (700, 33, 17);
        let values = uniform(&mut rng, n * width);
        let labels: Vec<u32> = (0..n)
            .map(|_| rng.random_range(0..segments as u32 - 1))
            .collect();
        let input = Bytes::default()
            .u32(n)
            .u32(width)
            .u32(segments)
            .f32s(&values)
            .u32s(&labels);
        let sums = run("segment_sum", input).f32s(segments * width);
        check_segment_sums(&values, &labels, width, segments, &sums);
    }

    #[test]
    fn mean_pool_kernel() {
        let (mut rng, _guard) = setup("emulated_mean_pool");
        // 1,100 dimensions: 1,024 threads, some with two columns.
        for (batch, seq, dim) in [(5, 23, 50), (3, 7, 1_100)] {
            let (hidden, mask) = pooling_inputs(&mut rng, batch, seq, dim);
            for normalize in [false, true] {
                let input = Bytes::default()
                    .u32(batch)
                    .u32(seq)
                    .u32(dim)
                    .u32(normalize as usize)
                    .f32s(&hidden)
                    .f32s(&mask);
                let pooled = run("mean_pool_f32", input).f32s(batch * dim);
                let exact = exact_mean_pool(&hidden, &mask, seq, dim, normalize);
                assert_close(&pooled, &exact, 1e-5, "emulated pooling");
            }
        }
    }

    #[test]
    fn top_p_vote_kernel() {
        let (mut rng, _guard) = setup("emulated_top_p_vote");
        // 21 queries: three blocks of eight warps, the last one partly idle.
        let (queries, k, models) = (21, 45, 11);
        let (distances, votes) = vote_inputs(&mut rng, queries, k, models);
        for top_p in [1, 4, kernels::MAX_KERNEL_TOP_P] {
            let beta: f32 = rng.random_range(0.0..20.0);
            let input = Bytes::default()
                .u32(queries)
                .u32(k)
                .u32(models)
                .u32(top_p)
                .u32(beta.to_bits() as usize)
                .f32s(&distances)
                .f32s(&votes);
            let mut out = run("top_p_vote", input);
            let outputs = VoteOutputs {
                totals: out.f32s(queries * models),
                clusters: out.u32s(queries * top_p),
                distances: out.f32s(queries * top_p),
                weights: out.f32s(queries * top_p),
            };
            check_votes(
                &distances,
                &votes,
                (k, models, top_p),
                beta as f64,
                &outputs,
            );
        }
    }
}
