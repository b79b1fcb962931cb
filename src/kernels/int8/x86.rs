//! The x86-64 int8 tile kernels. The vector kernels keep a `rows × columns` tile of i32
//! accumulators in registers; per group of `G` k-values they load the panel's `columns × G`
//! weights once and, for every row, broadcast the row's `G` activations (4 bytes) and
//! multiply-accumulate. The AMX kernel does the same on tile registers, 64 k-values a step.
//! A block of `k` before the last is dequantized from the registers into the tile's running
//! sums, not stored as integers for a second pass (AVX2 kernel: MPNet int8 +7 %, MiniLM +5 %).

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::Cell;
use std::sync::OnceLock;

use super::{BlockSums, Isa, TileOperands};

/// Writes `tile`'s products into `acc` (`rows × columns`, row-major), or, given `sums`, adds
/// them there, dequantized (`acc` is then scratch space).
///
/// # Safety
/// The CPU must have `isa`'s instructions, and `tile` must hold `groups` packed groups of its
/// panel and of every row of the tile, in `isa`'s format.
pub(super) unsafe fn tile(isa: Isa, tile: &TileOperands, acc: &mut [i32], sums: Option<BlockSums>) {
    match isa {
        Isa::Amx => amx(tile, acc, sums),
        Isa::Avx512Vnni => avx512_vnni(tile, acc, sums),
        Isa::AvxVnni => avx_vnni(tile, acc, sums),
        Isa::Avx2 => avx2(tile, acc, sums),
    }
}

/// The 4 bytes of row `r` at group `kg` broadcast to every 32-bit lane.
#[inline(always)]
unsafe fn group_of(tile: &TileOperands, r: usize, kg: usize) -> i32 {
    (tile.row(r).add(4 * kg) as *const i32).read_unaligned()
}

/// 8 rows × 32 columns, 4 k per group: `vpdpbusd` on zmm (u8 activations × i8 weights).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn avx512_vnni(tile: &TileOperands, acc: &mut [i32], sums: Option<BlockSums>) {
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
    if let Some(mut sums) = sums {
        for (r, (c, &zero)) in c.iter().zip(tile.zeros).enumerate() {
            add_row_zmm(&mut sums, r, zero, c);
        }
        return;
    }
    let out = acc.as_mut_ptr();
    for (r, c) in c.iter().enumerate() {
        _mm512_storeu_si512(out.add(r * 32) as *mut __m512i, c[0]);
        _mm512_storeu_si512(out.add(r * 32 + 16) as *mut __m512i, c[1]);
    }
}

/// Adds row `r`'s 32 products to `sums`, as [`BlockSums::add`] does.
#[target_feature(enable = "avx512f")]
unsafe fn add_row_zmm(sums: &mut BlockSums, r: usize, zero: i32, c: &[__m512i; 2]) {
    debug_assert!(sums.scales.len() == 32 && sums.sums.len() >= 32 * (r + 1));
    let zero = _mm512_set1_epi32(zero);
    for (half, &c) in c.iter().enumerate() {
        let column = 16 * half;
        let scale = _mm512_loadu_ps(sums.scales.as_ptr().add(column));
        let weight_sum = _mm512_loadu_si512(sums.weight_sums.as_ptr().add(column) as *const _);
        let exact = _mm512_sub_epi32(c, _mm512_mullo_epi32(zero, weight_sum));
        let value = _mm512_mul_ps(scale, _mm512_cvtepi32_ps(exact));
        let sum = sums.sums.as_mut_ptr().add(32 * r + column);
        let value = if sums.first {
            value
        } else {
            _mm512_add_ps(_mm512_loadu_ps(sum), value)
        };
        _mm512_storeu_ps(sum, value);
    }
}

/// 6 rows × 16 columns, 4 k per group: `vpdpbusd` on ymm (VEX-encoded AVX-VNNI).
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn avx_vnni(tile: &TileOperands, acc: &mut [i32], sums: Option<BlockSums>) {
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
    finish_ymm(&c, tile, acc, sums);
}

/// 5 rows × 16 columns, 4 k per group: `vpmaddubsw` (u8 activations × i8 weights of at most
/// 64 in magnitude, so its i16 pair sums cannot saturate), then `vpmaddwd` by ones into i32.
/// Not 6 rows: with the ones and the products, 12 accumulators left one on the stack (5 rows:
/// MPNet +5 %).
#[target_feature(enable = "avx2")]
unsafe fn avx2(tile: &TileOperands, acc: &mut [i32], sums: Option<BlockSums>) {
    const ROWS: usize = 5;
    let mut c = [[_mm256_setzero_si256(); 2]; ROWS];
    let ones = _mm256_set1_epi16(1);
    let mut b = tile.panel.as_ptr();
    for kg in 0..tile.groups {
        let b0 = _mm256_loadu_si256(b as *const __m256i);
        let b1 = _mm256_loadu_si256(b.add(32) as *const __m256i);
        for (r, c) in c.iter_mut().enumerate() {
            let a = _mm256_set1_epi32(group_of(tile, r, kg));
            c[0] = _mm256_add_epi32(c[0], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b0), ones));
            c[1] = _mm256_add_epi32(c[1], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b1), ones));
        }
        b = b.add(64);
    }
    finish_ymm(&c, tile, acc, sums);
}

/// Stores a 16-column tile's products into `acc`, or, given `sums`, adds them there.
#[target_feature(enable = "avx2")]
unsafe fn finish_ymm<const ROWS: usize>(
    c: &[[__m256i; 2]; ROWS],
    tile: &TileOperands,
    acc: &mut [i32],
    sums: Option<BlockSums>,
) {
    if let Some(mut sums) = sums {
        for (r, (c, &zero)) in c.iter().zip(tile.zeros).enumerate() {
            add_row_ymm(&mut sums, r, zero, c);
        }
        return;
    }
    let out = acc.as_mut_ptr();
    for (r, c) in c.iter().enumerate() {
        _mm256_storeu_si256(out.add(r * 16) as *mut __m256i, c[0]);
        _mm256_storeu_si256(out.add(r * 16 + 8) as *mut __m256i, c[1]);
    }
}

/// Adds row `r`'s 16 products to `sums`, as [`BlockSums::add`] does.
#[target_feature(enable = "avx2")]
unsafe fn add_row_ymm(sums: &mut BlockSums, r: usize, zero: i32, c: &[__m256i; 2]) {
    debug_assert!(sums.scales.len() == 16 && sums.sums.len() >= 16 * (r + 1));
    let zero = _mm256_set1_epi32(zero);
    for (half, &c) in c.iter().enumerate() {
        let column = 8 * half;
        let scale = _mm256_loadu_ps(sums.scales.as_ptr().add(column));
        let weight_sum = _mm256_loadu_si256(sums.weight_sums.as_ptr().add(column) as *const _);
        let exact = _mm256_sub_epi32(c, _mm256_mullo_epi32(zero, weight_sum));
        let value = _mm256_mul_ps(scale, _mm256_cvtepi32_ps(exact));
        let sum = sums.sums.as_mut_ptr().add(16 * r + column);
        let value = if sums.first {
            value
        } else {
            _mm256_add_ps(_mm256_loadu_ps(sum), value)
        };
        _mm256_storeu_ps(sum, value);
    }
}

/// Whether the CPU has AMX-INT8 and the OS lets this process use the tile registers. Linux
/// hands out the 8 KiB of tile state only on request (`arch_prctl`), asked once here.
pub(super) fn amx_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // CPUID leaf 7: EDX bit 24 is AMX-TILE, bit 25 AMX-INT8.
        let leaf = __cpuid_count(7, 0);
        leaf.edx >> 24 & 1 == 1 && leaf.edx >> 25 & 1 == 1 && request_tile_state()
    })
}

#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call; an old kernel or one without AMX support refuses it.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// The `ldtilecfg` operand: every tile register as 16 rows of 64 bytes (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// tmm0–3: the 32 × 32 i32 sums as four 16 × 16 quarters; tmm4–5: 16 rows × 64 activations
/// each; tmm6–7: 16 groups of 4 k × 16 columns each (the two halves of a 32-column panel).
static TILE_CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

thread_local! {
    /// The tile configuration is per thread and survives context switches: loaded once.
    static TILES_CONFIGURED: Cell<bool> = const { Cell::new(false) };
}

/// 32 rows × 32 columns, k in steps of 64: `tdpbusd` (u8 activations × i8 weights) on four
/// accumulator tiles, each step loading two tiles of activation rows and the panel's two
/// 16-column halves.
///
/// # Safety
/// As [`tile`]; besides, `groups` must be a multiple of 16.
#[target_feature(enable = "avx512f")]
unsafe fn amx(tile: &TileOperands, acc: &mut [i32], sums: Option<BlockSums>) {
    debug_assert!(tile.groups.is_multiple_of(16) && acc.len() >= 32 * 32);
    if !TILES_CONFIGURED.get() {
        asm!("ldtilecfg [{}]", in(reg) &TILE_CONFIG, options(nostack, readonly));
        TILES_CONFIGURED.set(true);
    }
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem)
    );
    // A panel row: one group of 4 k for all 32 columns.
    const PANEL_ROW: usize = 128;
    for step in 0..tile.groups / 16 {
        let a = tile.row(0).add(64 * step);
        let b = tile.panel.as_ptr().add(16 * PANEL_ROW * step);
        asm!(
            "tileloadd tmm4, [{a0} + {stride} * 1]",
            "tileloadd tmm5, [{a1} + {stride} * 1]",
            "tileloadd tmm6, [{b0} + {panel_row} * 1]",
            "tileloadd tmm7, [{b1} + {panel_row} * 1]",
            "tdpbusd tmm0, tmm4, tmm6",
            "tdpbusd tmm1, tmm4, tmm7",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            a0 = in(reg) a,
            a1 = in(reg) a.add(16 * tile.stride),
            b0 = in(reg) b,
            b1 = in(reg) b.add(64),
            stride = in(reg) tile.stride,
            panel_row = in(reg) PANEL_ROW,
            options(nostack, readonly)
        );
    }
    // `acc` is 32 rows of 32 i32: 128 bytes a row.
    let out = acc.as_mut_ptr() as *mut u8;
    asm!(
        "tilestored [{c00} + {row} * 1], tmm0",
        "tilestored [{c01} + {row} * 1], tmm1",
        "tilestored [{c10} + {row} * 1], tmm2",
        "tilestored [{c11} + {row} * 1], tmm3",
        c00 = in(reg) out,
        c01 = in(reg) out.add(64),
        c10 = in(reg) out.add(16 * 128),
        c11 = in(reg) out.add(16 * 128 + 64),
        row = in(reg) 128usize,
        options(nostack)
    );
    if let Some(mut sums) = sums {
        for (r, &zero) in tile.zeros.iter().enumerate() {
            let row = acc.as_ptr().add(32 * r);
            let c = [
                _mm512_loadu_si512(row as *const _),
                _mm512_loadu_si512(row.add(16) as *const _),
            ];
            add_row_zmm(&mut sums, r, zero, &c);
        }
    }
}
