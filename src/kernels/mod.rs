//! Fused kernels for the hot paths where candle's generic ops waste work: the k-means
//! assignment ([`nearest_centroid`]) and centroid update ([`segment_sum`]), masked mean pooling
//! with L2 normalisation ([`mean_pool`]), and the routing vote ([`top_p_vote`]); and, CPU-only,
//! the int8 GEMM of `--dtype int8` ([`int8`]) and the dispatcher that compiles element-wise
//! loops for the CPU's widest vectors (`simd`).
//!
//! Each op has a CUDA kernel (`kernels/*.cu`, compiled to PTX by nvcc at build time under the
//! `cuda` feature and embedded in the binary) and a CPU implementation over plain slices
//! (`reference`): what the CUDA kernels are tested against, and what CPU tensors run, except in
//! k-means, whose CPU assignment stays a tiled matmul (faster there, docs/BENCHMARKS.md).
//! Other devices (Metal) have no kernels; callers ask [`active`] and otherwise compose candle's
//! generic ops, which is also what [`set_enabled`]`(false)` makes them do everywhere.
//!
//! candle's `CustomOp` traits return one tensor and these ops return several (labels and
//! distances; totals, clusters, distances and weights), so they read their inputs' storage and
//! build their outputs with `Tensor::from_storage` themselves. No autograd: nothing here trains.

#[cfg(feature = "cuda")]
mod cuda;
pub mod int8;
mod nearest;
mod pool;
mod segment;
pub(crate) mod simd;
mod vote;

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLockReadGuard;

use candle_core::{Device, Storage, Tensor, WithDType};

use crate::error::{Error, Result};

pub use nearest::{nearest_centroid, Nearest, Points};
pub use pool::mean_pool;
pub use segment::segment_sum;
pub use vote::{by_member, top_p_vote, Vote, MAX_KERNEL_TOP_P};

/// Writes `values` into `out` (exactly as many) and returns it as initialised floats.
#[inline(always)]
pub(crate) fn init_with(
    out: &mut [MaybeUninit<f32>],
    values: impl ExactSizeIterator<Item = f32>,
) -> &mut [f32] {
    assert_eq!(values.len(), out.len());
    for (o, v) in out.iter_mut().zip(values) {
        o.write(v);
    }
    // SAFETY: all `out.len()` elements were written just above; MaybeUninit<f32> has f32's
    // layout.
    unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// An output buffer's base pointer, shared by parallel tasks that each write their own disjoint
/// part of it (a tile, a column block), which slices cannot express.
#[derive(Clone, Copy)]
pub(crate) struct DisjointWrites<T>(*mut T);

// SAFETY: the tasks holding copies write disjoint elements; the constructor's caller promises it.
unsafe impl<T> Send for DisjointWrites<T> {}
unsafe impl<T> Sync for DisjointWrites<T> {}

impl<T> DisjointWrites<T> {
    /// # Safety
    /// The tasks given copies must write disjoint elements, within the buffer, and nothing may
    /// read it until they are done.
    pub(crate) unsafe fn new(ptr: *mut T) -> Self {
        Self(ptr)
    }

    /// A method, so that closures capture the whole wrapper rather than its raw field.
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// The CPU implementations over slices: the references the CUDA kernels are held to.
pub mod reference {
    pub use super::nearest::nearest_centroid_cpu as nearest_centroid;
    pub use super::pool::mean_pool_cpu as mean_pool;
    pub use super::segment::segment_sum_cpu as segment_sum;
    pub use super::vote::{top_p_vote_cpu as top_p_vote, VoteOutputs};
}

/// Whether the ops here run on `device` (CPU, and CUDA when built with the `cuda` feature).
pub fn supports(device: &Device) -> bool {
    device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda())
}

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the kernels off (or back on) for the whole process: callers then compose candle's
/// generic ops, as they do on devices without kernels. For holding the two paths against each
/// other in tests and benchmarks.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether callers should run the kernels for tensors on `device`: enabled and supported.
pub fn active(device: &Device) -> bool {
    ENABLED.load(Ordering::Relaxed) && supports(device)
}

static POISON_OUTPUTS: AtomicBool = AtomicBool::new(false);

/// Fills every output with all bits set (NaN for floats, `u32::MAX` for indices) before an op
/// writes it, so that a test sees any element a kernel leaves unwritten. Off by default: it
/// costs a host-to-device upload per output on CUDA.
pub fn poison_outputs(enabled: bool) {
    POISON_OUTPUTS.store(enabled, Ordering::Relaxed);
}

fn poisoned() -> bool {
    POISON_OUTPUTS.load(Ordering::Relaxed)
}

/// Output element types, with their poison value.
trait Output: WithDType {
    const POISON: Self;
}

impl Output for f32 {
    const POISON: f32 = f32::from_bits(u32::MAX);
}

impl Output for u32 {
    const POISON: u32 = u32::MAX;
}

/// A zeroed host output of `len` elements, or a poisoned one when [`poison_outputs`] is on.
fn host_output<T: Output>(len: usize) -> Vec<T> {
    vec![if poisoned() { T::POISON } else { T::zero() }; len]
}

/// A tensor's storage held for reading, with the range its elements occupy.
struct Contiguous<'a> {
    storage: RwLockReadGuard<'a, Storage>,
    range: Range<usize>,
}

impl<'a> Contiguous<'a> {
    /// A contiguous tensor (callers make their inputs so).
    fn of(tensor: &'a Tensor) -> Result<Self> {
        let (storage, layout) = tensor.storage_and_layout();
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| Error::Invalid("kernel input must be contiguous".into()))?;
        Ok(Self {
            storage,
            range: start..end,
        })
    }

    /// A matrix whose rows are each contiguous but may lie further apart (a column slice of a
    /// wider matrix); returns the row stride too.
    fn rows(tensor: &'a Tensor) -> Result<(Self, usize)> {
        let (rows, cols) = tensor.dims2()?;
        let (storage, layout) = tensor.storage_and_layout();
        let (row_stride, col_stride) = (layout.stride()[0], layout.stride()[1]);
        if cols > 1 && col_stride != 1 || rows > 1 && row_stride < cols {
            return Err(Error::Invalid(
                "kernel input rows must be contiguous and must not overlap".into(),
            ));
        }
        let start = layout.start_offset();
        let end = start + rows.saturating_sub(1) * row_stride + cols;
        let range = start..if rows == 0 { start } else { end };
        Ok((Self { storage, range }, row_stride.max(cols)))
    }

    fn cpu<T: WithDType>(&self) -> Result<&[T]> {
        match &*self.storage {
            Storage::Cpu(cpu) => Ok(&cpu.as_slice::<T>()?[self.range.clone()]),
            _ => Err(Error::Invalid("kernel inputs must share one device".into())),
        }
    }
}

/// Checks that `tensor` has `dims` and moves it to contiguous f32 (no copy when it is).
fn f32_input(tensor: &Tensor, name: &str, dims: &[usize]) -> Result<Tensor> {
    if tensor.dims() != dims {
        return Err(Error::Invalid(format!(
            "{name} has shape {:?}, expected {dims:?}",
            tensor.dims()
        )));
    }
    Ok(tensor.to_dtype(candle_core::DType::F32)?.contiguous()?)
}

/// Errors for a device without kernels; callers check [`supports`] first.
fn unsupported(op: &str, device: &Device) -> Error {
    Error::Invalid(format!("no {op} kernel for {device:?}"))
}
