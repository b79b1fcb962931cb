//! The int8 GEMM: every kernel against the scalar reference on its own packing, and against the
//! unpacked quantized product, bit for bit (the integer part is exact everywhere); kernels this
//! CPU lacks still have their packing checked through the scalar tiles.

use kroute::kernels::int8::{reference, Epilogue, Int8Weights, Isa};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random(len: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Shapes with every kind of edge: tails of rows, columns and k groups, a lone row, and a BERT
/// feed-forward layer's size.
const SHAPES: [(usize, usize, usize); 6] = [
    (1, 1, 1),
    (1, 384, 384),
    (13, 37, 45),
    (61, 33, 7),
    (7, 100, 130),
    (70, 384, 1536),
];

#[test]
fn every_kernel_equals_the_reference_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(7);
    println!(
        "this CPU runs: {:?}",
        Isa::ALL
            .iter()
            .filter(|i| i.available())
            .map(|i| i.as_str())
            .collect::<Vec<_>>()
    );
    for (rows, n, k) in SHAPES {
        let w = random(n * k, &mut rng);
        let mut x = random(rows * k, &mut rng);
        // An all-zero row quantizes with scale 0 and must give zeros, not NaN.
        x[..k].fill(0.0);
        for isa in Isa::ALL {
            // One scale per output channel, then per channel and block of 8, 64 or 128
            // inputs (AMX, 64 k a step, takes multiples of 64 only).
            let step = isa.tile().k_step.max(4);
            let grouped = [8, 64, 128]
                .into_iter()
                .filter(|b| b % step == 0)
                .map(|b| Int8Weights::quantize_grouped(&w, n, k, isa, b));
            let per_channel = Int8Weights::quantize(&w, n, k, isa);
            for weights in [per_channel].into_iter().chain(grouped) {
                let weights = weights.unwrap();
                let block = weights.scale_block();
                let exact = reference::unpacked(&w, n, &x, rows, isa.tile().weight_max, block);
                let what = format!("{}, {rows}×{n}×{k}, blocks of {block}", isa.as_str());
                let scalar = reference::matmul(&weights, &x, rows).unwrap();
                assert_eq!(scalar, exact, "{what}: packing");
                let out = weights.matmul(&x, rows).unwrap();
                assert_eq!(out, exact, "{what}: kernel");
                assert!(out[..n].iter().all(|&v| v == 0.0));
            }
        }
    }
}

/// Operands at the ends of their ranges, where a kernel's narrower intermediate sums (AVX2's
/// i16 pairs) would saturate: every activation 255 (or 0) and every weight `±weight_max`.
#[test]
fn extreme_operands_do_not_saturate() {
    let (rows, n, k) = (6, 16, 256);
    // Columns of all-positive and all-negative weights; the rows at the top and the bottom of
    // their ranges, so that every activation quantizes to 255 or 0.
    let w: Vec<f32> = (0..n * k)
        .map(|i| if i / k % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let x: Vec<f32> = (0..rows * k)
        .map(|i| if i / k % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    for isa in Isa::ALL {
        let weights = Int8Weights::quantize(&w, n, k, isa).unwrap();
        let out = weights.matmul(&x, rows).unwrap();
        for (i, &got) in out.iter().enumerate() {
            let want = if (i / n + i % n) % 2 == 0 {
                k as f32
            } else {
                -(k as f32)
            };
            assert!(
                (got - want).abs() < 1e-3,
                "{}: output {i}: {got}",
                isa.as_str()
            );
        }
    }
}

/// The erf GELU in f64: erf by its Taylor series below 3, its continued fraction above.
fn gelu(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    let erf = if z.abs() < 3.0 {
        let (mut term, mut sum) = (z, z);
        for n in 1..200 {
            term *= -z * z / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (z.abs() + f);
        }
        let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / (z.abs() + f);
        (1.0 - erfc).copysign(z)
    };
    0.5 * x * (1.0 + erf)
}

#[test]
fn fused_bias_gelu_is_the_gelu_of_the_biased_product() {
    let mut rng = StdRng::seed_from_u64(5);
    // Per-channel and blocked weights: the epilogue runs at the last block either way.
    for (rows, n, k, block) in [(13, 37, 45, None), (70, 100, 384, Some(128))] {
        let w = random(n * k, &mut rng);
        let x = random(rows * k, &mut rng);
        let bias = random(n, &mut rng);
        for isa in Isa::ALL {
            let weights = match block {
                None => Int8Weights::quantize(&w, n, k, isa),
                Some(block) => Int8Weights::quantize_grouped(&w, n, k, isa, block),
            }
            .unwrap();
            let plain = weights.matmul(&x, rows).unwrap();
            let fused = weights
                .matmul_then(&x, rows, Epilogue::BiasGelu(&bias))
                .unwrap();
            let scalar = reference::matmul_then(&weights, &x, rows, Epilogue::BiasGelu(&bias));
            assert_eq!(fused, scalar.unwrap(), "{}: kernel", isa.as_str());
            for (i, (&got, &y)) in fused.iter().zip(&plain).enumerate() {
                let want = gelu(y as f64 + bias[i % n] as f64);
                assert!(
                    (got as f64 - want).abs() < 1e-5,
                    "{i}: {got} vs {want} ({y} + {})",
                    bias[i % n]
                );
            }
        }
    }
    let weights = Int8Weights::quantize(&[0.5; 12], 3, 4, Isa::Avx2).unwrap();
    let short_bias = weights.matmul_then(&[1.0; 8], 2, Epilogue::BiasGelu(&[0.0; 2]));
    assert!(short_bias.is_err_and(|e| e.to_string().contains("bias of 2 values")));
}

#[test]
fn int8_product_is_close_to_f32() {
    let mut rng = StdRng::seed_from_u64(11);
    let (rows, n, k) = (32, 96, 384);
    let w = random(n * k, &mut rng);
    let x = random(rows * k, &mut rng);
    let isa = Isa::detect().unwrap_or(Isa::Avx2);
    let out = Int8Weights::quantize(&w, n, k, isa)
        .unwrap()
        .matmul(&x, rows)
        .unwrap();
    let (mut err, mut norm) = (0f64, 0f64);
    for r in 0..rows {
        for c in 0..n {
            let want: f32 = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum();
            err += ((out[r * n + c] - want) as f64).powi(2);
            norm += (want as f64).powi(2);
        }
    }
    let relative = (err / norm).sqrt();
    assert!(relative < 0.02, "relative error {relative}");
}

#[test]
fn wrong_input_length_is_an_error() {
    let weights = Int8Weights::quantize(&[0.5; 12], 3, 4, Isa::Avx2).unwrap();
    assert!(weights.matmul(&[1.0; 7], 2).is_err());
    assert!(Int8Weights::quantize(&[0.5; 11], 3, 4, Isa::Avx2).is_err());
    let odd_block = Int8Weights::quantize_grouped(&[0.5; 12], 3, 4, Isa::Avx2, 6);
    assert!(odd_block.is_err_and(|e| e.to_string().contains("multiple of 4")));
    let amx_block = Int8Weights::quantize_grouped(&[0.5; 12], 3, 4, Isa::Amx, 32);
    assert!(amx_block.is_err_and(|e| e.to_string().contains("multiple of 64 (amx kernel)")));
}
