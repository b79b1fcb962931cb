//! Throughput per device: the encoder over sequence lengths and batch budgets, single-query
//! latency, k-means time per Lloyd iteration, and routing throughput. Work is timed with the
//! device synchronised inside the timed region, so GPU numbers are real.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::cluster::{KMeans, KMeansConfig};
use crate::device::Precision;
use crate::embed::models::{self, attention_bias, Architecture, Encoder};
use crate::embed::{l2_normalize, Embedder, EmbeddingInfo};
use crate::error::Result;
use crate::model::Pooling;
use crate::router::{ClusterStats, RouteParams, Router, TrainingInfo};

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    /// Tokens per sequence of the encoder runs.
    pub seq_lens: Vec<usize>,
    /// Padded tokens per batch (rows = budget / seq len).
    pub batch_tokens: Vec<usize>,
    /// Single-query runs for the latency percentiles.
    pub latency_runs: usize,
    /// (points, clusters) of the k-means runs, 384-d.
    pub kmeans: Vec<(usize, usize)>,
    /// Lloyd iterations timed per k-means case.
    pub kmeans_iterations: usize,
    /// Queries routed (60 clusters × 11 models, top-p 4).
    pub route_queries: usize,
    /// Bag sizes (k-means solutions voting) of the routing cases.
    pub route_bags: Vec<usize>,
    /// Each encoder case repeats until it has run this long.
    pub min_seconds: f64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            seq_lens: vec![32, 64, 128, 256],
            batch_tokens: vec![2048, 16384],
            latency_runs: 50,
            kmeans: vec![
                (100_000, 64),
                (100_000, 1024),
                (1_000_000, 64),
                (1_000_000, 1024),
            ],
            kmeans_iterations: 3,
            route_queries: 100_000,
            route_bags: vec![1, 5],
            min_seconds: 1.0,
        }
    }
}

/// The encoder under test: a loaded model (latency then includes tokenization) or random
/// weights built from a `config.json` of any supported architecture (latency is the encoder on
/// one 16-token row).
pub enum Subject<'a> {
    Model(&'a Embedder),
    Random(Box<dyn Encoder>),
}

impl Subject<'_> {
    /// Placeholder weights on `device`, shaped by a `config.json`, in `precision` or the
    /// architecture's default; returns the precision used too.
    pub fn random(
        config_json: &std::path::Path,
        device: &Device,
        precision: Option<Precision>,
    ) -> Result<(Self, Precision)> {
        let config = models::EncoderConfig::read(config_json)?;
        let precision = precision.unwrap_or(config.architecture.default_precision(device));
        Ok((
            Subject::Random(models::random(&config, precision, device)?),
            precision,
        ))
    }

    fn encoder(&self) -> &dyn Encoder {
        match self {
            Subject::Model(embedder) => embedder.encoder(),
            Subject::Random(encoder) => encoder.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EncoderCase {
    pub seq_len: usize,
    pub batch_tokens: usize,
    pub rows: usize,
    pub sentences_per_s: f64,
    pub tokens_per_s: f64,
    /// Estimated from the model's shape (dense layers and attention, multiply-add = 2).
    pub tflops: f64,
    /// `tflops / peak`, when the peak was given.
    pub mfu: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub runs: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KMeansCase {
    pub points: usize,
    pub clusters: usize,
    pub dim: usize,
    pub seconds_per_iteration: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteCase {
    pub queries: usize,
    /// Clusters per k-means solution.
    pub clusters: usize,
    pub models: usize,
    /// k-means solutions voting (bagging).
    pub bag: usize,
    pub queries_per_s: f64,
    /// One query routed on its own, median of 200.
    pub single_query_p50_ms: f64,
    /// The same right after an outcome (of an unchanged model, scores alternating 0 and 1)
    /// taken in with [`Router::observe`]: the outcome and the routing together.
    pub after_outcome_p50_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub device: String,
    pub dtype: String,
    /// For `--dtype int8`: the integer kernel this CPU runs (`avx512-vnni`, `avx-vnni`, `avx2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8_kernel: Option<&'static str>,
    pub threads: usize,
    pub kroute_version: String,
    pub features: Vec<&'static str>,
    /// Whether k-means, pooling and routing ran the fused kernels (`kernels::active`).
    pub fused_kernels: bool,
    pub model: String,
    pub encoder: Vec<EncoderCase>,
    pub latency: Latency,
    pub kmeans: Vec<KMeansCase>,
    pub route: Vec<RouteCase>,
}

/// Runs `f` once to warm up, then until `min_seconds` have passed; returns runs per second.
fn rate(device: &Device, min_seconds: f64, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    device.synchronize()?;
    let (start, mut runs) = (Instant::now(), 0usize);
    while runs == 0 || start.elapsed().as_secs_f64() < min_seconds {
        f()?;
        runs += 1;
    }
    device.synchronize()?;
    Ok(runs as f64 / start.elapsed().as_secs_f64())
}

pub fn run(
    subject: &Subject,
    model: &str,
    config: &BenchConfig,
    device: &Device,
    precision: Precision,
    peak_tflops: Option<f64>,
    mut progress: impl FnMut(&str),
) -> Result<BenchReport> {
    let encoder = subject.encoder();
    let mut cases = Vec::new();
    for &seq_len in &config.seq_lens {
        let seq_len = seq_len.min(encoder.max_positions());
        for &batch_tokens in &config.batch_tokens {
            progress(&format!(
                "encoder: {seq_len} tokens × {batch_tokens}-token batches"
            ));
            let rows = (batch_tokens / seq_len).max(1);
            let ids = Tensor::rand(
                0f32,
                (encoder.vocab_size() - 1) as f32,
                (rows, seq_len),
                device,
            )?
            .to_dtype(DType::U32)?;
            let bias = attention_bias(
                &vec![seq_len; rows],
                seq_len,
                precision.activations(),
                device,
            )?;
            let mask = Tensor::ones((rows, seq_len), DType::F32, device)?;
            let batches_per_s = rate(device, config.min_seconds, || {
                let hidden = encoder.forward(&ids, &bias)?;
                crate::embed::pool(&hidden, &mask, Pooling::Mean, true).map(|_| ())
            })?;
            let tokens_per_s = batches_per_s * (rows * seq_len) as f64;
            let tflops = tokens_per_s * encoder.flops_per_token(seq_len) / 1e12;
            cases.push(EncoderCase {
                seq_len,
                batch_tokens,
                rows,
                sentences_per_s: batches_per_s * rows as f64,
                tokens_per_s,
                tflops,
                mfu: peak_tflops.map(|peak| tflops / peak),
            });
        }
    }

    progress("single-query latency");
    let latency = single_query_latency(subject, config.latency_runs, device, precision)?;
    let mut kmeans = Vec::new();
    for &(points, clusters) in &config.kmeans {
        progress(&format!("k-means: {points} points, {clusters} clusters"));
        kmeans.push(kmeans_iteration(
            points,
            clusters,
            config.kmeans_iterations,
            device,
        )?);
    }
    progress("routing");
    let route = config
        .route_bags
        .iter()
        .map(|&bag| route_throughput(config.route_queries, bag, device))
        .collect::<Result<Vec<_>>>()?;
    Ok(BenchReport {
        device: device_name(device),
        dtype: precision.as_str().to_string(),
        int8_kernel: precision.int8_kernel(),
        threads: rayon::current_num_threads(),
        kroute_version: env!("CARGO_PKG_VERSION").to_string(),
        features: [
            ("cuda", cfg!(feature = "cuda")),
            ("metal", cfg!(feature = "metal")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect(),
        fused_kernels: crate::kernels::active(device),
        model: model.to_string(),
        encoder: cases,
        latency,
        kmeans,
        route,
    })
}

fn single_query_latency(
    subject: &Subject,
    runs: usize,
    device: &Device,
    precision: Precision,
) -> Result<Latency> {
    let query = "Which of these models should answer a question about the boiling point of water?";
    let mut once: Box<dyn FnMut() -> Result<()>> = match subject {
        Subject::Model(embedder) => Box::new(move || embedder.embed(&[query]).map(|_| ())),
        Subject::Random(encoder) => {
            let len = 16.min(encoder.max_positions());
            let ids: Vec<u32> = (1..=len)
                .map(|i| (i % encoder.vocab_size()) as u32)
                .collect();
            let ids = Tensor::from_vec(ids, (1, len), device)?;
            let bias = attention_bias(&[len], len, precision.activations(), device)?;
            Box::new(move || encoder.forward(&ids, &bias).map(|_| ()))
        }
    };
    once()?;
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            once()?;
            device.synchronize()?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        runs: times.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    })
}

/// Unit-norm random rows, as embeddings are.
pub fn unit_rows(n: usize, dim: usize, device: &Device) -> Result<Tensor> {
    l2_normalize(&Tensor::randn(0f32, 1.0, (n, dim), device)?)
}

/// Seconds per Lloyd iteration: the difference between `1 + iterations` and 1 iteration from
/// the same start, so set-up and the final assignment cancel out.
fn kmeans_iteration(
    points: usize,
    clusters: usize,
    iterations: usize,
    device: &Device,
) -> Result<KMeansCase> {
    let dim = 384;
    let x = unit_rows(points, dim, device)?;
    let start_centroids = x.narrow(0, 0, clusters)?.contiguous()?;
    let timed = |max_iter: usize| -> Result<f64> {
        let config = KMeansConfig {
            k: clusters,
            max_iter,
            tol: 0.0,
            min_improvement: 0.0,
            ..Default::default()
        };
        device.synchronize()?;
        let start = Instant::now();
        let fitted = KMeans::refine(&x, start_centroids.clone(), &config)?;
        device.synchronize()?;
        if fitted.iterations != max_iter {
            return Err(crate::Error::Invalid(format!(
                "k-means converged after {} of {max_iter} iterations: nothing left to time",
                fitted.iterations
            )));
        }
        Ok(start.elapsed().as_secs_f64())
    };
    let iterations = iterations.max(1);
    let one = timed(1)?;
    let more = timed(1 + iterations)?;
    Ok(KMeansCase {
        points,
        clusters,
        dim,
        seconds_per_iteration: (more - one).max(0.0) / iterations as f64,
    })
}

/// A router of `bag` k-means solutions of `clusters` each, with random centroids and
/// statistics: routing cost does not depend on the values.
pub fn random_router(
    clusters: usize,
    models: usize,
    dim: usize,
    bag: usize,
    device: &Device,
) -> Result<Router> {
    let value =
        |c: usize, m: usize, salt: usize| Some(((c * 31 + m * 17 + salt) % 97) as f64 / 97.0);
    Ok(Router::from_parts(
        (0..models).map(|m| format!("model-{m}")).collect(),
        unit_rows(clusters * bag, dim, device)?,
        (0..clusters * bag)
            .map(|c| ClusterStats {
                size: 10,
                count: vec![10; models],
                accuracy: (0..models).map(|m| value(c, m, 0)).collect(),
                cost: (0..models).map(|m| value(c, m, 5)).collect(),
                tokens: Vec::new(),
            })
            .collect(),
        bag,
        EmbeddingInfo {
            model: "random".into(),
            revision: None,
            weights_sha256: String::new(),
            architecture: Architecture::Bert,
            dim,
            normalized: true,
            pooling: Pooling::Mean,
            prompt: String::new(),
            max_seq_length: 256,
        },
        RouteParams::default(),
        TrainingInfo::default(),
    ))
}

/// Routes `queries` random queries (60 clusters × 11 models, `bag` solutions); best of 3,
/// decisions on the host; then one query at a time for the latency.
pub fn route_throughput(queries: usize, bag: usize, device: &Device) -> Result<RouteCase> {
    let (clusters, models) = (60, 11);
    let router = random_router(clusters, models, 384, bag, device)?;
    let q = unit_rows(queries, 384, device)?;
    let params = RouteParams::default();
    router.route(&q.narrow(0, 0, queries.min(1000))?, &params)?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let routed = router.route(&q, &params)?;
        std::hint::black_box((0..routed.len()).map(|i| routed.best(i)).sum::<usize>());
        best = best.min(start.elapsed().as_secs_f64());
    }
    let one = q.narrow(0, 0, 1)?;
    let single = median_ms(200, || {
        std::hint::black_box(router.route(&one, &params)?.best(0));
        Ok(())
    })?;
    let mut learning = router.clone();
    let routed = learning.route(&q.narrow(0, 0, queries.min(200))?, &params)?;
    let mut outcomes = (0..routed.len()).cycle();
    let after_outcome = median_ms(200, || {
        let i = outcomes.next().expect("cycles");
        let score = (i % 2) as f64;
        learning.observe(&Router::observation(&routed, i, 0, score, None), None)?;
        std::hint::black_box(learning.route(&one, &params)?.best(0));
        Ok(())
    })?;
    Ok(RouteCase {
        queries,
        clusters,
        models,
        bag,
        queries_per_s: queries as f64 / best,
        single_query_p50_ms: single,
        after_outcome_p50_ms: after_outcome,
    })
}

/// The median wall time of `runs` calls of `f`, in milliseconds.
fn median_ms(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f()?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => {
            let cpu = std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|info| {
                    info.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split(':').nth(1))
                        .map(|name| name.trim().to_string())
                })
                .unwrap_or_else(|| "unknown CPU".into());
            format!("cpu ({cpu})")
        }
        other => crate::device::DeviceSpec::of(other).to_string(),
    }
}
