//! Runs a closure compiled for the widest vector instructions this CPU has, for element-wise
//! loops the compiler vectorises by itself: the binary's baseline is x86-64 (SSE2), so without
//! this they would run 4 lanes wide on a machine with 16-lane AVX-512.
//!
//! Also the branch-free math those loops share (`exp`, the erf GELU), written so that it
//! vectorises.

/// Calls `f` inlined into a copy compiled for AVX-512 (F, BW, DQ, VL), AVX2 + FMA, or the
/// baseline, whichever the CPU supports (checked at run time; the check is a cached load).
/// `f` must be `#[inline(always)]`-able: a small closure whose body is the loop.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
            // SAFETY: the CPU has the features the copy is compiled for.
            return unsafe { avx512(f) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

const LANES: usize = 16;

/// Folds `values` into 16 independent lanes with `step`, from `init`, then the lanes into one
/// with `combine`: a float reduction (sum, min, max) is only vectorised when written this way,
/// since the compiler may not reorder float operations itself.
#[inline(always)]
pub fn fold_lanes(
    values: &[f32],
    init: f32,
    step: impl Fn(f32, f32) -> f32,
    combine: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut acc = [init; LANES];
    let chunks = values.chunks_exact(LANES);
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = step(*a, v);
    }
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = step(*a, v);
        }
    }
    acc.into_iter().fold(init, combine)
}

/// The smallest of `values` and `init`.
#[inline(always)]
pub fn min(values: &[f32], init: f32) -> f32 {
    let min = |m: f32, v: f32| if v < m { v } else { m };
    fold_lanes(values, init, min, min)
}

/// The largest of `values` and `init`.
#[inline(always)]
pub fn max(values: &[f32], init: f32) -> f32 {
    let max = |m: f32, v: f32| if v > m { v } else { m };
    fold_lanes(values, init, max, max)
}

/// The exact (erf) GELU, `x·Φ(x)`, as BERT and MPNet checkpoints use it.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf with absolute error below 5e-7 (Abramowitz & Stegun 7.1.26 with a polynomial exp).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_neg(a * a);
    y.copysign(x)
}

/// e^(−z) for z ≥ 0: Cody–Waite reduction and a degree-6 polynomial, relative error ~2e-7.
/// `n = round(−z·log₂e)` and `2ⁿ` come from float bits, not casts: Rust's saturating
/// float-to-int `as` does not vectorise.
#[inline(always)]
pub fn exp_neg(z: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5·2²³: integer-valued sums sit in the low bits
    let y = (-z).max(-87.0);
    let shifted = y * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = y - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67 + r * (0.041_666_68 + r * (0.008_333_6 + r * 0.001_388_9)))));
    let exponent = shifted
        .to_bits()
        .wrapping_sub(SHIFT.to_bits())
        .wrapping_add(127);
    // Past −87 the result is below f32's normal range: exactly 0 (a masked key's weight).
    if z > 87.0 {
        0.0
    } else {
        p * f32::from_bits(exponent << 23)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_is_accurate() {
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            let want = libm_erf(x as f64);
            let err = (super::erf(x) as f64 - want).abs();
            assert!(err < 5e-7, "erf({x}): error {err}");
        }
    }

    /// erf by its Taylor series (|x| < 3) and continued fraction, in f64: a reference.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let mut term = x;
            let mut sum = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (x.abs() + f);
            }
            let erfc = (-x * x).exp() / std::f64::consts::PI.sqrt() / (x.abs() + f);
            (1.0 - erfc).copysign(x)
        }
    }
}
