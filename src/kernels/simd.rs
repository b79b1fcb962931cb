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
