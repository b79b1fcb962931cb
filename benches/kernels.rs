//! The fused kernels against candle's generic ops (the kernels switched off), through the code
//! that calls them: k-means refinement, mean pooling of an encoder batch, routing a batch.
//! The device is synchronised inside every timed region, so GPU times are whole.
//!
//! cargo bench --bench kernels                                     # CPU
//! KROUTE_BENCH_DEVICE=cuda cargo bench --features cuda --bench kernels

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kroute::bench::{random_router, unit_rows};
use kroute::cluster::{KMeans, KMeansConfig};
use kroute::embed::{pool, Pooling};
use kroute::kernels;
use kroute::router::RouteParams;

fn device() -> Device {
    match std::env::var("KROUTE_BENCH_DEVICE").as_deref() {
        Ok("cuda") => Device::new_cuda(0).expect("KROUTE_BENCH_DEVICE=cuda needs a GPU"),
        _ => Device::Cpu,
    }
}

/// Times `f` with the kernels on and off, synchronising the device after each run.
fn both_paths<R>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    case: &str,
    device: &Device,
    mut f: impl FnMut() -> R,
) {
    for (path, enabled) in [("kernels", true), ("generic", false)] {
        kernels::set_enabled(enabled);
        group.bench_function(BenchmarkId::new(case, path), |b| {
            b.iter(|| {
                let out = f();
                device.synchronize().unwrap();
                out
            })
        });
    }
    kernels::set_enabled(true);
}

/// One Lloyd iteration and the final assignment from fixed centroids (no restarts).
fn lloyd(c: &mut Criterion) {
    let device = device();
    let sizes: &[(usize, usize)] = if device.is_cuda() {
        &[(1_000_000, 64), (1_000_000, 1024)]
    } else {
        &[(100_000, 64), (20_000, 1024)]
    };
    let mut group = c.benchmark_group("lloyd");
    group.sample_size(10);
    for &(n, k) in sizes {
        let x = unit_rows(n, 384, &device).unwrap();
        let start = x.narrow(0, 0, k).unwrap().contiguous().unwrap();
        let config = KMeansConfig {
            k,
            max_iter: 1,
            ..Default::default()
        };
        group.throughput(Throughput::Elements(n as u64));
        both_paths(&mut group, &format!("{n}x384_k{k}"), &device, || {
            KMeans::refine(&x, start.clone(), &config).unwrap()
        });
    }
    group.finish();
}

/// Masked mean pooling and L2 normalisation of an encoder batch with ragged lengths.
fn mean_pool(c: &mut Criterion) {
    let device = device();
    let (batch, seq, dim) = (256, 64, 384);
    let dtype = if device.is_cuda() {
        DType::F16
    } else {
        DType::F32
    };
    let hidden = Tensor::randn(0f32, 1.0, (batch, seq, dim), &device)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let lengths = Tensor::arange(0u32, batch as u32, &device)
        .unwrap()
        .affine(1.0, 1.0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .broadcast_div(&Tensor::new(batch as f32 / seq as f32, &device).unwrap())
        .unwrap();
    let positions = Tensor::arange(0f32, seq as f32, &device).unwrap();
    let mask = positions
        .unsqueeze(0)
        .unwrap()
        .broadcast_lt(&lengths.unsqueeze(1).unwrap())
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let mut group = c.benchmark_group("mean_pool");
    group.throughput(Throughput::Elements(batch as u64));
    both_paths(
        &mut group,
        &format!("{batch}x{seq}x{dim}_{dtype:?}"),
        &device,
        || pool(&hidden, &mask, Pooling::Mean, true).unwrap(),
    );
    group.finish();
}

/// Routing a batch: distances to 60 centroids, the top-4 vote over 11 models, decisions.
fn route(c: &mut Criterion) {
    let device = device();
    let queries = 65_536;
    let router = random_router(60, 11, 384, 1, &device).unwrap();
    let q = unit_rows(queries, 384, &device).unwrap();
    let params = RouteParams::default();
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(queries as u64));
    both_paths(&mut group, &format!("{queries}_queries"), &device, || {
        router.route(&q, &params).unwrap()
    });
    group.finish();
}

criterion_group!(benches, lloyd, mean_pool, route);
criterion_main!(benches);
