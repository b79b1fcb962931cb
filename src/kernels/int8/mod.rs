//! The int8 GEMM behind `--dtype int8` on the CPU: `y = x·Wᵀ` with `W` quantized once at load
//! (symmetric i8, one scale per output channel), `x` quantized per row at run time
//! (asymmetric: a scale and a zero point per row, so skewed rows such as GELU outputs use every
//! level), an exact i32 accumulation and the dequantization fused into the store:
//! `y[m,n] = s_x[m]·s_w[n]·(Σ_k q_x·q_w − z[m]·Σ_k q_w)`.
//!
//! Activations are u8 for every kernel. Weights are i8 in `±127`, except for the AVX2 kernel's
//! `±64`: its `vpmaddubsw` adds two u8 × i8 products into an i16, which saturates unless
//! `2 · 255 · |w| ≤ 32,767`. The halved weight resolution costs accuracy (worst parity cosine
//! to f32 0.990 on MiniLM, against 0.994 with `±127`), and buys speed: the earlier AVX2 kernel,
//! `vpmaddwd` on 12-bit activations and weights widened to i16, was exact at 0.999 but issued
//! half again as many instructions per multiply-add, and ran 18–24 % slower (docs/BENCHMARKS.md).
//!
//! Why hand-written: no maintained Rust crate offers an i8 GEMM with runtime ISA dispatch
//! (`gemm` and `matrixmultiply` are float-only; `tract-linalg`'s int8 kernels sit behind tract's
//! internal fused-op planner; candle's `QMatMul` is ggml's block-wise Q8_0 format, a dot product
//! per output element, AVX2 only). The kernels here are small and tested against [`reference`].
//!
//! Kernels, picked at run time by [`Isa::detect`]:
//! - AMX (`tdpbusd` on tile registers, Sapphire Rapids and later), 32 columns × 32 rows, k in
//!   steps of 64;
//! - AVX-512 VNNI (`vpdpbusd` on zmm), 32 columns × 8 rows per tile;
//! - AVX-VNNI (`vpdpbusd` on ymm), 16 columns × 6 rows;
//! - AVX2 (`vpmaddubsw` into i16 pairs, then `vpmaddwd` by ones into i32), 16 columns × 5 rows.
//!
//! Every kernel computes the integer dot products exactly (VNNI multiplies u8 by i8 into i32;
//! AVX2's weight range keeps its i16 pair sums from saturating), so a layer packed for one
//! kernel gives the same output on every machine, bit for bit.
//!
//! Layout: weights are packed into panels of `NR` columns; within a panel, for each group of
//! `G` consecutive `k`, the `G` values of each column sit side by side (`[k/G][NR][G]` bytes), so
//! one vector load holds `G` k-values of every column of the tile and one broadcast of `G`
//! activations of a row multiplies them all. Activations stay row-major, `k` padded to `G`.

#[cfg(target_arch = "x86_64")]
mod x86;

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::{init_with, simd, DisjointWrites};

/// The instruction sets the int8 GEMM has kernels for, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Amx,
    Avx512Vnni,
    AvxVnni,
    Avx2,
}

impl Isa {
    /// The best kernel this CPU runs, or `None` (not x86-64, or no AVX2).
    /// `KROUTE_INT8_KERNEL=avx2|avx-vnni|avx512-vnni|amx` picks one instead, for comparing kernels
    /// (one this CPU lacks is emulated with scalar tiles, slowly: for checking its accuracy).
    pub fn detect() -> Option<Isa> {
        let best = Self::ALL.into_iter().find(|isa| isa.available())?;
        let Ok(name) = std::env::var("KROUTE_INT8_KERNEL") else {
            return Some(best);
        };
        let forced = Self::ALL.into_iter().find(|isa| isa.as_str() == name);
        if forced.is_none() {
            tracing::warn!(
                "KROUTE_INT8_KERNEL={name} is not a kernel (amx, avx512-vnni, avx-vnni, avx2); using {}",
                best.as_str()
            );
        }
        Some(forced.unwrap_or(best))
    }

    pub const ALL: [Isa; 4] = [Isa::Amx, Isa::Avx512Vnni, Isa::AvxVnni, Isa::Avx2];

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                // The AMX kernel adds its blocks into the running sums with AVX-512.
                Isa::Amx => is_x86_feature_detected!("avx512f") && x86::amx_available(),
                Isa::Avx512Vnni => {
                    is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vnni")
                }
                Isa::AvxVnni => {
                    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("avxvnni")
                }
                Isa::Avx2 => is_x86_feature_detected!("avx2"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Isa::Amx => "amx",
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::AvxVnni => "avx-vnni",
            Isa::Avx2 => "avx2",
        }
    }

    /// The kernel's tile and packing.
    pub fn tile(self) -> Tile {
        match self {
            // The panels of the AVX-512 kernel, read as two 16-column tiles.
            Isa::Amx => Tile {
                rows: 32,
                columns: 32,
                group: 4,
                k_step: 64,
                weight_max: 127,
            },
            Isa::Avx512Vnni => Tile {
                rows: 8,
                columns: 32,
                group: 4,
                k_step: 4,
                weight_max: 127,
            },
            Isa::AvxVnni => Tile {
                rows: 6,
                columns: 16,
                group: 4,
                k_step: 4,
                weight_max: 127,
            },
            Isa::Avx2 => Tile {
                rows: 5,
                columns: 16,
                group: 4,
                k_step: 4,
                weight_max: 64,
            },
        }
    }
}

/// A kernel's tile shape and operand format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Rows of `x` per tile (`MR`).
    pub rows: usize,
    /// Output columns per tile and weight panel (`NR`).
    pub columns: usize,
    /// Consecutive `k` values per packed group (`G`).
    pub group: usize,
    /// `k` values per step of the kernel (a multiple of `G`): `k` is padded to it, and weight
    /// scale blocks are multiples of it.
    pub k_step: usize,
    /// The largest weight magnitude: 127, or 64 where the kernel's pair sums are i16.
    pub weight_max: i8,
}

/// A weight matrix `(out, in)` quantized and packed for one kernel.
pub struct Int8Weights {
    isa: Isa,
    /// This CPU has the kernel's instructions (else the scalar tiles run: tests of other ISAs'
    /// packing, and non-x86 machines).
    runnable: bool,
    tile: Tile,
    out_features: usize,
    in_features: usize,
    /// `in_features` rounded up to the kernel's `k` step.
    k_padded: usize,
    /// `k` values per weight scale: `k_padded` (one scale per output channel) or a multiple of
    /// `G` (one per block of `k` and output channel).
    block: usize,
    /// `[panel][k / G][NR][G]`, zero in the padding.
    packed: Vec<i8>,
    /// `[block][panel · NR]`: the dequantization scales, zero past the last column (so a
    /// kernel reads a whole panel's).
    scales: Vec<f32>,
    /// `[block][panel · NR]`: `Σ q` over the block, for the activations' zero points.
    sums: Vec<i32>,
}

/// Symmetric quantization of one vector: `q` into `out` and the scale, with `v ≈ q·scale`,
/// `|q| ≤ max`. Written without libm's `round` and `f32::max` so that it vectorizes.
fn quantize_into<T: From<i8>>(values: &[f32], out: &mut [T], max: i8) -> f32 {
    let limit = f32::from(max);
    let largest = values
        .iter()
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    let inverse = if largest > 0.0 { limit / largest } else { 0.0 };
    for (o, &v) in out.iter_mut().zip(values) {
        *o = T::from(round(v * inverse).clamp(-limit, limit) as i8);
    }
    largest / limit
}

/// The activations' quantization levels: u8.
const ACTIVATION_LEVELS: f32 = 255.0;

/// Asymmetric u8 quantization of one vector: `q` into `out`, the scale and the zero point, with
/// `v ≈ (q − zero)·scale`; the range always holds 0, so zero padding stays exact. Vectorised
/// for the CPU's widest instructions: this runs on every activation.
fn quantize_asymmetric(values: &[f32], out: &mut [u8]) -> (f32, i32) {
    simd::dispatch(
        #[inline(always)]
        || quantize_asymmetric_generic(values, out),
    )
}

#[inline(always)]
fn quantize_asymmetric_generic(values: &[f32], out: &mut [u8]) -> (f32, i32) {
    // The range always holds 0.
    let (low, high) = (simd::min(values, 0.0), simd::max(values, 0.0));
    let range = high - low;
    let inverse = if range > 0.0 {
        ACTIVATION_LEVELS / range
    } else {
        0.0
    };
    let zero = round(-low * inverse);
    for (o, &v) in out.iter_mut().zip(values) {
        // The level's integer from the float's bits (as in `round`), not a saturating cast.
        let level = (round(v * inverse) + zero).clamp(0.0, ACTIVATION_LEVELS) + ROUND_SHIFT;
        *o = level.to_bits().wrapping_sub(ROUND_SHIFT.to_bits()) as u8;
    }
    (range / ACTIVATION_LEVELS, zero as i32)
}

/// Rounds to the nearest integer (ties to even) for `|v| < 2²²`: adding 1.5·2²³ leaves no
/// fraction bits.
#[inline(always)]
fn round(v: f32) -> f32 {
    (v + ROUND_SHIFT) - ROUND_SHIFT
}

/// 1.5·2²³: the float's low mantissa bits hold the integer `v` once it is added to `v`.
const ROUND_SHIFT: f32 = 12_582_912.0;

impl Int8Weights {
    /// Quantizes `weights` (`out_features × in_features`, row-major) for `isa`'s kernel, one
    /// scale per output channel.
    pub fn quantize(
        weights: &[f32],
        out_features: usize,
        in_features: usize,
        isa: Isa,
    ) -> Result<Self> {
        Self::quantize_blocks(weights, out_features, in_features, isa, None)
    }

    /// As [`quantize`](Self::quantize), with one scale per output channel and block of `block`
    /// consecutive inputs (a multiple of 4, and of 64 for AMX): a channel whose weights are small
    /// except on a few inputs keeps its precision elsewhere. What a feed-forward down projection
    /// needs.
    pub fn quantize_grouped(
        weights: &[f32],
        out_features: usize,
        in_features: usize,
        isa: Isa,
        block: usize,
    ) -> Result<Self> {
        Self::quantize_blocks(weights, out_features, in_features, isa, Some(block))
    }

    fn quantize_blocks(
        weights: &[f32],
        out_features: usize,
        in_features: usize,
        isa: Isa,
        block: Option<usize>,
    ) -> Result<Self> {
        if weights.len() != out_features * in_features || in_features == 0 {
            return Err(Error::Invalid(format!(
                "int8 weights: {} values for a {out_features} × {in_features} matrix",
                weights.len()
            )));
        }
        let tile = isa.tile();
        let (nr, g) = (tile.columns, tile.group);
        let k_padded = in_features.div_ceil(tile.k_step) * tile.k_step;
        let multiple = tile.k_step.max(4);
        let block = match block {
            None => k_padded,
            Some(block) if block > 0 && block % multiple == 0 => block.min(k_padded),
            Some(block) => {
                return Err(Error::Invalid(format!(
                    "int8 weights: a scale block of {block} inputs is not a multiple of \
                     {multiple} ({} kernel)",
                    isa.as_str()
                )))
            }
        };
        // A block's sums, |Σ q_x·q_w| ≤ 255 · weight_max · block, must fit in i32.
        if ACTIVATION_LEVELS as usize * tile.weight_max as usize * block > i32::MAX as usize {
            return Err(Error::Invalid(format!(
                "int8 weights: {block} inputs per weight scale overflow the i32 sums"
            )));
        }
        let blocks = k_padded.div_ceil(block);
        let panels = out_features.div_ceil(nr);
        let mut packed = vec![0i8; panels * nr * k_padded];
        let mut scales = vec![0f32; blocks * panels * nr];
        let mut sums = vec![0i32; blocks * panels * nr];
        let mut row = vec![0i8; in_features];
        for n in 0..out_features {
            let values = &weights[n * in_features..(n + 1) * in_features];
            for (b, (values, row)) in values.chunks(block).zip(row.chunks_mut(block)).enumerate() {
                scales[b * panels * nr + n] = quantize_into(values, row, tile.weight_max);
                sums[b * panels * nr + n] = row.iter().map(|&q| q as i32).sum();
            }
            let (panel, column) = (n / nr, n % nr);
            let base = panel * nr * k_padded;
            for (k, &q) in row.iter().enumerate() {
                packed[base + (k / g) * nr * g + column * g + k % g] = q;
            }
        }
        Ok(Self {
            isa,
            runnable: isa.available(),
            tile,
            out_features,
            in_features,
            k_padded,
            block,
            packed,
            scales,
            sums,
        })
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Inputs per weight scale (`in_features` rounded up to the kernel's group when there is
    /// one scale per output channel).
    pub fn scale_block(&self) -> usize {
        self.block
    }

    fn panels(&self) -> usize {
        self.out_features.div_ceil(self.tile.columns)
    }

    fn panel(&self, p: usize) -> &[i8] {
        let size = self.tile.columns * self.k_padded;
        &self.packed[p * size..(p + 1) * size]
    }

    /// Panel `p`'s output columns.
    fn columns(&self, p: usize) -> std::ops::Range<usize> {
        let nr = self.tile.columns;
        p * nr..((p + 1) * nr).min(self.out_features)
    }

    /// Blocks of `k` with a weight scale each.
    fn blocks(&self) -> usize {
        self.k_padded.div_ceil(self.block)
    }

    /// Block `b`'s weight scales and sums, for panel `p`'s columns.
    fn block_scales(&self, b: usize, p: usize) -> (&[f32], &[i32]) {
        let nr = self.tile.columns;
        let start = (b * self.panels() + p) * nr;
        (
            &self.scales[start..start + nr],
            &self.sums[start..start + nr],
        )
    }

    /// `x·Wᵀ` for `x` of `rows × in_features` (row-major): `rows × out_features`.
    pub fn matmul(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.matmul_then(x, rows, Epilogue::None)
    }

    /// `x·Wᵀ` with `epilogue` applied to each output as it is stored.
    pub fn matmul_then(&self, x: &[f32], rows: usize, epilogue: Epilogue) -> Result<Vec<f32>> {
        self.check_input(x, rows, epilogue)?;
        let activations = Activations::quantize(x, rows, self);
        Ok(self.run(&activations, epilogue, |tile, acc, sums| {
            if self.runnable {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `runnable` says the CPU has the kernel's instructions, and the tile's
                // pointers cover `groups · G` activations of each row and a packed panel.
                unsafe {
                    x86::tile(self.isa, tile, acc, sums)
                }
            } else {
                reference::scalar_tile(self.tile, tile, acc, sums);
            }
        }))
    }

    fn check_input(&self, x: &[f32], rows: usize, epilogue: Epilogue) -> Result<()> {
        if x.len() != rows * self.in_features {
            return Err(Error::Invalid(format!(
                "int8 matmul: {} values for {rows} rows of {}",
                x.len(),
                self.in_features
            )));
        }
        if let Epilogue::BiasGelu(bias) = epilogue {
            if bias.len() != self.out_features {
                return Err(Error::Invalid(format!(
                    "int8 matmul: a bias of {} values for {} outputs",
                    bias.len(),
                    self.out_features
                )));
            }
        }
        Ok(())
    }

    /// Splits the output into (row block × panel range) tasks over the thread pool. For each
    /// tile and block of `k` but the last, `kernel` adds the tile's products, dequantized, into
    /// the tile's running f32 sums; at the last block it writes them into `acc`, and they are
    /// dequantized, added to the sums and stored, through `epilogue`, into the
    /// `rows × out_features` output, which is never zeroed first.
    fn run<K>(&self, activations: &Activations, epilogue: Epilogue, kernel: K) -> Vec<f32>
    where
        K: Fn(&TileOperands, &mut [i32], Option<BlockSums>) + Sync,
    {
        let (mr, nr) = (self.tile.rows, self.tile.columns);
        let rows = activations.rows;
        let block_rows = mr * 10;
        let row_blocks = rows.div_ceil(block_rows);
        let panels = self.panels();
        // Small batches (a lone query) still spread over every core by splitting the panels.
        let panel_groups = (4 * rayon::current_num_threads())
            .div_ceil(row_blocks)
            .clamp(1, panels);
        let panels_per_group = panels.div_ceil(panel_groups);
        let blocks = self.blocks();
        let mut out = Vec::<f32>::with_capacity(rows * self.out_features);
        // SAFETY: tasks write disjoint (row block × panel range) tiles of the output.
        let out_ptr = unsafe { DisjointWrites::new(out.spare_capacity_mut().as_mut_ptr()) };
        (0..row_blocks * panel_groups)
            .into_par_iter()
            .for_each(|task| {
                let (block, group) = (task / panel_groups, task % panel_groups);
                let row_range = block * block_rows..((block + 1) * block_rows).min(rows);
                let panel_range =
                    group * panels_per_group..((group + 1) * panels_per_group).min(panels);
                let tiles = row_range.len().div_ceil(mr);
                let mut acc = vec![0i32; mr * nr];
                // Running sums across blocks of k: only with more than one.
                let mut sums = vec![0f32; if blocks > 1 { tiles * mr * nr } else { 0 }];
                for p in panel_range {
                    let panel = self.panel(p);
                    // Blocks of k outside, tiles of rows inside: the panel's block and the row
                    // block's activations stay in L1 while every tile uses them.
                    for b in 0..blocks {
                        let k = b * self.block..((b + 1) * self.block).min(self.k_padded);
                        for (t, start) in row_range.clone().step_by(mr).enumerate() {
                            let count = mr.min(row_range.end - start);
                            let tile =
                                TileOperands::new(activations, start, count, panel, k.clone());
                            let sums = sums.get_mut(t * mr * nr..(t + 1) * mr * nr);
                            if b + 1 < blocks {
                                let (scales, weight_sums) = self.block_scales(b, p);
                                let sums = BlockSums {
                                    sums: sums.expect("running sums across blocks"),
                                    scales,
                                    weight_sums,
                                    first: b == 0,
                                };
                                kernel(&tile, &mut acc, Some(sums));
                                continue;
                            }
                            kernel(&tile, &mut acc, None);
                            let store = Store {
                                out: OutRows {
                                    ptr: out_ptr,
                                    stride: self.out_features,
                                    first_row: start,
                                },
                                row_scales: &activations.scales[start..start + count],
                                epilogue,
                            };
                            self.store(p, &tile, &acc, sums.as_deref(), store);
                        }
                    }
                }
            });
        // SAFETY: the tasks' (row block × panels) ranges cover every row and column, and
        // `dequantize` stores every value of each tile at its last block.
        unsafe { out.set_len(rows * self.out_features) };
        out
    }

    /// Dequantizes the last block of a tile's products (panel `p`), `s_w · (acc − z·Σq_w)` per
    /// value (the zero-point term exact, in integers), adds the running `sums` of the blocks
    /// before it, if any, and stores `row scale · sum` through the epilogue.
    fn store(
        &self,
        p: usize,
        tile: &TileOperands,
        acc: &[i32],
        sums: Option<&[f32]>,
        store: Store,
    ) {
        simd::dispatch(
            #[inline(always)]
            || self.store_rows(p, tile, acc, sums, store),
        )
    }

    #[inline(always)]
    fn store_rows(
        &self,
        p: usize,
        tile: &TileOperands,
        acc: &[i32],
        sums: Option<&[f32]>,
        mut store: Store,
    ) {
        let nr = self.tile.columns;
        let columns = self.columns(p);
        let width = columns.len();
        let (scales, weight_sums) = self.block_scales(self.blocks() - 1, p);
        let (scales, weight_sums) = (&scales[..width], &weight_sums[..width]);
        for (r, &zero) in tile.zeros.iter().enumerate() {
            let values = dequantized(&acc[r * nr..][..width], zero, scales, weight_sums);
            let row_scale = store.row_scales[r];
            // SAFETY: each task stores only its own rows and columns of the output.
            let out = unsafe { store.out.row(r, columns.clone()) };
            let out = match sums {
                Some(sums) => init_with(
                    out,
                    values
                        .zip(&sums[r * nr..][..width])
                        .map(|(v, &s)| row_scale * (s + v)),
                ),
                None => init_with(out, values.map(|v| row_scale * v)),
            };
            if let Epilogue::BiasGelu(bias) = store.epilogue {
                let bias = &bias[columns.start..][..width];
                out.iter_mut()
                    .zip(bias)
                    .for_each(|(o, &b)| *o = simd::gelu_erf(*o + b));
            }
        }
    }
}

/// One row's products of one block, dequantized: `scale · (acc − zero · weight_sum)` per
/// column, the zero-point term exact in integers (the kernels' register versions follow it).
#[inline(always)]
fn dequantized<'a>(
    acc: &'a [i32],
    zero: i32,
    scales: &'a [f32],
    weight_sums: &'a [i32],
) -> impl ExactSizeIterator<Item = f32> + 'a {
    acc.iter()
        .zip(weight_sums)
        .zip(scales)
        .map(move |((&a, &weight_sum), &scale)| scale * (a - zero * weight_sum) as f32)
}

/// A tile's running f32 sums across blocks of `k` (in units of the row scales), and what one
/// block before the last needs to add its products to them:
/// `sums[r][c] (+)= scales[c] · (acc[r][c] − zero[r] · weight_sums[c])`, in exactly this order
/// of operations wherever it runs, for bit-identical results.
pub(crate) struct BlockSums<'a> {
    /// `rows × columns` of the tile, row-major.
    sums: &'a mut [f32],
    /// The block's weight scales and sums, one per column of the panel.
    scales: &'a [f32],
    weight_sums: &'a [i32],
    /// The first block: the sums are set, not added to.
    first: bool,
}

impl BlockSums<'_> {
    /// Adds the products `acc` (`rows × columns`, row-major) of the rows with `zeros`.
    fn add(&mut self, acc: &[i32], zeros: &[i32]) {
        let columns = self.scales.len();
        for (r, &zero) in zeros.iter().enumerate() {
            let acc = &acc[r * columns..][..columns];
            let sums = &mut self.sums[r * columns..][..columns];
            let values = dequantized(acc, zero, self.scales, self.weight_sums);
            if self.first {
                sums.iter_mut().zip(values).for_each(|(s, v)| *s = v);
            } else {
                sums.iter_mut().zip(values).for_each(|(s, v)| *s += v);
            }
        }
    }
}

/// What the int8 GEMM applies to each output value `y` of column `n` as it stores it.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    /// `y`.
    None,
    /// `gelu_erf(y + bias[n])`: the feed-forward layer's activation, fused so the
    /// intermediate output is written once.
    BiasGelu(&'a [f32]),
}

/// A tile's destination at its last block of `k`.
struct Store<'a> {
    out: OutRows,
    row_scales: &'a [f32],
    epilogue: Epilogue<'a>,
}

/// Activations quantized per row (asymmetric u8), `k` padded to the kernel's step with zeros
/// (whose weights are zero too).
struct Activations {
    rows: usize,
    k_padded: usize,
    /// Row-major, in whole tiles of rows.
    data: Vec<u8>,
    group: usize,
    scales: Vec<f32>,
    zeros: Vec<i32>,
}

impl Activations {
    /// `x`'s rows quantized for `weights`' kernel.
    fn quantize(x: &[f32], rows: usize, weights: &Int8Weights) -> Self {
        let (k, k_padded, tile) = (weights.in_features, weights.k_padded, weights.tile);
        // Whole tiles of rows: the AMX kernel loads every row of a tile, with one stride. Each
        // task zeroes its own rows (for the padding) just before quantizing into them: a zeroed
        // allocation was a single-threaded memset of every activation.
        let len = rows.div_ceil(tile.rows) * tile.rows * k_padded;
        let mut data = Vec::<u8>::with_capacity(len);
        let mut scales = vec![0f32; rows];
        let mut zeros = vec![0i32; rows];
        let rows_per_task = (16_384 / k).max(1);
        let (quantized, padding) = data.spare_capacity_mut()[..len].split_at_mut(rows * k_padded);
        padding.fill(MaybeUninit::new(0));
        quantized
            .par_chunks_mut(k_padded * rows_per_task)
            .zip(scales.par_chunks_mut(rows_per_task))
            .zip(zeros.par_chunks_mut(rows_per_task))
            .zip(x.par_chunks(k * rows_per_task))
            .for_each(|(((data, scales), zeros), x)| {
                for (((row, scale), zero), x) in data
                    .chunks_mut(k_padded)
                    .zip(scales.iter_mut())
                    .zip(zeros.iter_mut())
                    .zip(x.chunks(k))
                {
                    row.fill(MaybeUninit::new(0));
                    // SAFETY: every element was just written.
                    let row = unsafe { &mut *(row as *mut [MaybeUninit<u8>] as *mut [u8]) };
                    (*scale, *zero) = quantize_asymmetric(x, &mut row[..k]);
                }
            });
        // SAFETY: the tasks' chunks cover the rows, each wrote all of its own, and the padding
        // rows were zeroed.
        unsafe { data.set_len(len) };
        Self {
            rows,
            k_padded,
            data,
            group: tile.group,
            scales,
            zeros,
        }
    }

    fn row(&self, r: usize) -> *const u8 {
        // SAFETY: `r` is below the rows rounded up to whole tiles, so the offset stays inside
        // `data`.
        unsafe { self.data.as_ptr().add(r * self.k_padded) }
    }
}

/// What one tile's kernel reads: a tile of activation rows (zero rows past the last one) and
/// one packed weight panel, both over the same range of `k`.
pub(crate) struct TileOperands<'a> {
    /// The tile's first activation row, at the range's first `k`.
    first_row: *const u8,
    /// Bytes from one activation row to the next.
    stride: usize,
    zeros: &'a [i32],
    panel: &'a [i8],
    /// Groups of `G` k-values.
    groups: usize,
}

impl<'a> TileOperands<'a> {
    /// Rows `start..start + count` of the activations and `panel`, both over the inputs `k`
    /// (a range of whole groups).
    fn new(
        activations: &'a Activations,
        start: usize,
        count: usize,
        panel: &'a [i8],
        k: std::ops::Range<usize>,
    ) -> Self {
        let columns = panel.len() / activations.k_padded;
        Self {
            // SAFETY: `k` lies within the row's `k_padded` values.
            first_row: unsafe { activations.row(start).add(k.start) },
            stride: activations.k_padded,
            zeros: &activations.zeros[start..start + count],
            panel: &panel[k.start * columns..k.end * columns],
            groups: k.len() / activations.group,
        }
    }

    /// Row `r` of the tile, at the range's first `k`.
    fn row(&self, r: usize) -> *const u8 {
        // SAFETY: the activations hold whole tiles of rows.
        unsafe { self.first_row.add(r * self.stride) }
    }
}

struct OutRows {
    ptr: DisjointWrites<MaybeUninit<f32>>,
    stride: usize,
    first_row: usize,
}

impl OutRows {
    /// # Safety
    /// No other task may hold the same row and columns.
    unsafe fn row(&mut self, r: usize, columns: std::ops::Range<usize>) -> &mut [MaybeUninit<f32>] {
        let start = (self.first_row + r) * self.stride + columns.start;
        std::slice::from_raw_parts_mut(self.ptr.get().add(start), columns.len())
    }
}

/// Plain loops over the same quantization and packing: what the kernels are tested against, and
/// the int8 GEMM where no kernel runs.
pub mod reference {
    use super::*;

    /// `x·Wᵀ` through the same quantized operands as [`Int8Weights::matmul`], with scalar tiles.
    pub fn matmul(weights: &Int8Weights, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        matmul_then(weights, x, rows, Epilogue::None)
    }

    /// [`Int8Weights::matmul_then`] with scalar tiles.
    pub fn matmul_then(
        weights: &Int8Weights,
        x: &[f32],
        rows: usize,
        epilogue: Epilogue,
    ) -> Result<Vec<f32>> {
        weights.check_input(x, rows, epilogue)?;
        let activations = Activations::quantize(x, rows, weights);
        let tile_shape = weights.tile;
        Ok(weights.run(&activations, epilogue, |tile, acc, sums| {
            scalar_tile(tile_shape, tile, acc, sums)
        }))
    }

    /// The exact f32 result of the quantized operands, computed without packing: per block of
    /// `block` inputs, `Σ (q_x − z)·q_w` times the weight scale, summed over the blocks and
    /// times the row scale; for checking the packing itself.
    pub fn unpacked(
        weights: &[f32],
        n: usize,
        x: &[f32],
        rows: usize,
        weight_max: i8,
        block: usize,
    ) -> Vec<f32> {
        let k = x.len() / rows.max(1);
        // Per output channel, per block: the quantized weights and their scale.
        let w: Vec<Vec<_>> = weights
            .chunks(k)
            .map(|channel| {
                channel
                    .chunks(block)
                    .map(|v| {
                        let mut q = vec![0i32; v.len()];
                        let scale = quantize_into(v, &mut q, weight_max);
                        (q, scale)
                    })
                    .collect()
            })
            .collect();
        let mut out = vec![0f32; rows * n];
        for (r, xr) in x.chunks(k).enumerate() {
            let mut qa = vec![0u8; k];
            let (sa, zero) = quantize_asymmetric(xr, &mut qa);
            for (c, blocks) in w.iter().enumerate() {
                let mut sum = 0f32;
                for ((qw, sw), qa) in blocks.iter().zip(qa.chunks(block)) {
                    let dot: i32 = qa.iter().zip(qw).map(|(&a, b)| (a as i32 - zero) * b).sum();
                    sum += sw * dot as f32;
                }
                out[r * n + c] = sa * sum;
            }
        }
        out
    }

    /// Writes the tile's products into `acc`, or, given `sums`, adds them there.
    pub(crate) fn scalar_tile(
        shape: Tile,
        tile: &TileOperands,
        acc: &mut [i32],
        sums: Option<BlockSums>,
    ) {
        let (nr, g) = (shape.columns, shape.group);
        for r in 0..shape.rows {
            let row = tile.row(r);
            for c in 0..nr {
                let mut sum = 0i32;
                for kg in 0..tile.groups {
                    let b = &tile.panel[kg * nr * g..(kg + 1) * nr * g];
                    for j in 0..g {
                        let k = kg * g + j;
                        // SAFETY: `row` holds `groups · G` activations.
                        let a = unsafe { *row.add(k) as i32 };
                        sum += a * b[c * g + j] as i32;
                    }
                }
                acc[r * nr + c] = sum;
            }
        }
        if let Some(mut sums) = sums {
            sums.add(acc, tile.zeros);
        }
    }
}
