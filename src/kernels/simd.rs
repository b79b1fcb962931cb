//! Runs a closure compiled for the widest vector instructions this CPU has, for element-wise
//! loops the compiler vectorises by itself: the binary's baseline is x86-64 (SSE2), so without
//! this they would run 4 lanes wide on a machine with 16-lane AVX-512.

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
