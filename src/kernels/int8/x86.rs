//! The x86-64 int8 tile kernels. Each keeps a `rows × columns` tile of i32 accumulators in
//! registers; per group of `G` k-values it loads the panel's `columns × G` weights once and, for
//! every row, broadcasts the row's `G` activations (4 bytes) and multiply-accumulates.

use std::arch::x86_64::*;

use super::{Isa, TileOperands};

/// Writes `tile`'s products into `acc` (`rows × columns`, row-major).
///
/// # Safety
/// The CPU must have `isa`'s instructions, and `tile` must hold `groups` packed groups of its
/// panel and of every row pointer, in `isa`'s format.
pub(super) unsafe fn tile(isa: Isa, tile: &TileOperands, acc: &mut [i32]) {
    match isa {
        Isa::Avx512Vnni => avx512_vnni(tile, acc),
        Isa::AvxVnni => avx_vnni(tile, acc),
        Isa::Avx2 => avx2(tile, acc),
    }
}

/// The 4 bytes of row `r` at group `kg` broadcast to every 32-bit lane.
#[inline(always)]
unsafe fn group_of(tile: &TileOperands, r: usize, kg: usize) -> i32 {
    (tile.rows[r].add(4 * kg) as *const i32).read_unaligned()
}

/// 8 rows × 32 columns, 4 k per group: `vpdpbusd` on zmm (u8 activations × i8 weights).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn avx512_vnni(tile: &TileOperands, acc: &mut [i32]) {
    const ROWS: usize = 8;
    let mut c = [[_mm512_setzero_si512(); 2]; ROWS];
    let mut b = tile.panel.as_ptr();
    for kg in 0..tile.groups {
        let b0 = _mm512_loadu_si512(b as *const __m512i);
        let b1 = _mm512_loadu_si512(b.add(64) as *const __m512i);
        for (r, c) in c.iter_mut().enumerate() {
            let a = _mm512_set1_epi32(group_of(tile, r, kg));
            c[0] = _mm512_dpbusd_epi32(c[0], a, b0);
            c[1] = _mm512_dpbusd_epi32(c[1], a, b1);
        }
        b = b.add(128);
    }
    let out = acc.as_mut_ptr();
    for (r, c) in c.iter().enumerate() {
        _mm512_storeu_si512(out.add(r * 32) as *mut __m512i, c[0]);
        _mm512_storeu_si512(out.add(r * 32 + 16) as *mut __m512i, c[1]);
    }
}

/// 6 rows × 16 columns, 4 k per group: `vpdpbusd` on ymm (VEX-encoded AVX-VNNI).
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn avx_vnni(tile: &TileOperands, acc: &mut [i32]) {
    const ROWS: usize = 6;
    let mut c = [[_mm256_setzero_si256(); 2]; ROWS];
    let mut b = tile.panel.as_ptr();
    for kg in 0..tile.groups {
        let b0 = _mm256_loadu_si256(b as *const __m256i);
        let b1 = _mm256_loadu_si256(b.add(32) as *const __m256i);
        for (r, c) in c.iter_mut().enumerate() {
            let a = _mm256_set1_epi32(group_of(tile, r, kg));
            c[0] = _mm256_dpbusd_avx_epi32(c[0], a, b0);
            c[1] = _mm256_dpbusd_avx_epi32(c[1], a, b1);
        }
        b = b.add(64);
    }
    store_ymm(&c, acc);
}

/// 6 rows × 16 columns, 2 k per group: the weights sign-extended to i16 and `vpmaddwd` with a
/// pair of i16 activations, exact where `vpmaddubsw` would saturate.
#[target_feature(enable = "avx2")]
unsafe fn avx2(tile: &TileOperands, acc: &mut [i32]) {
    const ROWS: usize = 6;
    let mut c = [[_mm256_setzero_si256(); 2]; ROWS];
    let mut b = tile.panel.as_ptr();
    for kg in 0..tile.groups {
        let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b as *const __m128i));
        let b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(16) as *const __m128i));
        for (r, c) in c.iter_mut().enumerate() {
            let a = _mm256_set1_epi32(group_of(tile, r, kg));
            c[0] = _mm256_add_epi32(c[0], _mm256_madd_epi16(a, b0));
            c[1] = _mm256_add_epi32(c[1], _mm256_madd_epi16(a, b1));
        }
        b = b.add(32);
    }
    store_ymm(&c, acc);
}

#[target_feature(enable = "avx2")]
unsafe fn store_ymm<const ROWS: usize>(c: &[[__m256i; 2]; ROWS], acc: &mut [i32]) {
    let out = acc.as_mut_ptr();
    for (r, c) in c.iter().enumerate() {
        _mm256_storeu_si256(out.add(r * 16) as *mut __m256i, c[0]);
        _mm256_storeu_si256(out.add(r * 16 + 8) as *mut __m256i, c[1]);
    }
}
