//! Launching the kernels of `kernels/*.cu`, whose PTX build.rs embeds.

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Shape, Storage, Tensor};

use super::{poisoned, Contiguous, Nearest, Output, Vote};
use crate::error::{Error, Result};

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

impl Contiguous<'_> {
    fn cuda<T: CudaDType>(&self) -> Result<CudaView<'_, T>> {
        match &*self.storage {
            Storage::Cuda(cuda) => Ok(cuda.as_cuda_slice::<T>()?.slice(self.range.clone())),
            _ => Err(Error::Invalid("kernel inputs must share one device".into())),
        }
    }
}

/// An output buffer the kernel fills completely: uninitialised, or poisoned for tests.
fn output<T: Output + DeviceRepr>(device: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    if poisoned() {
        Ok(device.clone_htod(&vec![T::POISON; len][..])?)
    } else {
        // SAFETY: every element is written by the kernel before anything reads it.
        Ok(unsafe { device.alloc::<T>(len)? })
    }
}

fn tensor<T: CudaDType + DeviceRepr>(
    slice: CudaSlice<T>,
    device: &CudaDevice,
    shape: impl Into<Shape>,
) -> Tensor {
    let storage = CudaStorage::wrap_cuda_slice(slice, device.clone());
    Tensor::from_storage(Storage::Cuda(storage), shape, BackpropOp::none(), false)
}

fn u32_arg(value: usize, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::Invalid(format!("{what} {value} exceeds u32")))
}

fn launch_config(blocks: usize, threads: u32) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (u32_arg(blocks.max(1), "grid size")?, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

pub fn nearest_centroid(
    device: &CudaDevice,
    [points, point_sq_norms, centroids, centroid_sq_norms]: [&Tensor; 4],
    n: usize,
    k: usize,
    dim: usize,
) -> Result<Nearest> {
    const POINTS_PER_BLOCK: usize = 128;
    let ((x, row_stride), x_sq) = (Contiguous::rows(points)?, Contiguous::of(point_sq_norms)?);
    let (c, c_sq) = (
        Contiguous::of(centroids)?,
        Contiguous::of(centroid_sq_norms)?,
    );
    let (x, x_sq, c, c_sq) = (
        x.cuda::<f32>()?,
        x_sq.cuda::<f32>()?,
        c.cuda::<f32>()?,
        c_sq.cuda::<f32>()?,
    );
    let labels = output::<u32>(device, n)?;
    let distances = output::<f32>(device, n)?;
    let (n32, k32, dim32) = (u32_arg(n, "n")?, u32_arg(k, "k")?, u32_arg(dim, "dim")?);
    let stride32 = u32_arg(row_stride, "row stride")?;
    let func = device.get_or_load_custom_func(
        "nearest_centroid",
        "kroute_nearest_centroid",
        ptx::NEAREST_CENTROID,
    )?;
    let mut launch = func.builder();
    launch
        .arg(&x)
        .arg(&x_sq)
        .arg(&c)
        .arg(&c_sq)
        .arg(&labels)
        .arg(&distances)
        .arg(&n32)
        .arg(&k32)
        .arg(&dim32)
        .arg(&stride32);
    let config = launch_config(n.div_ceil(POINTS_PER_BLOCK), 256)?;
    // SAFETY: argument types and order match the kernel's signature; the buffers hold n, k × dim
    // and n elements as the kernel indexes them.
    unsafe { launch.launch(config) }.w()?;
    Ok(Nearest {
        labels: tensor(labels, device, n),
        distances: tensor(distances, device, n),
    })
}

pub fn segment_sum(
    device: &CudaDevice,
    values: &Tensor,
    labels: &Tensor,
    n: usize,
    width: usize,
    segments: usize,
) -> Result<Tensor> {
    const WARPS_PER_BLOCK: usize = 8;
    // Enough warps to fill the GPU; each then loops over its share of the rows.
    const MAX_BLOCKS: usize = 8192;
    if n > 0 {
        let largest = labels.max(0)?.to_scalar::<u32>()?;
        if largest as usize >= segments {
            return Err(Error::Invalid(format!(
                "label {largest} out of range for {segments} segments"
            )));
        }
    }
    let (v, l) = (Contiguous::of(values)?, Contiguous::of(labels)?);
    let (v, l) = (v.cuda::<f32>()?, l.cuda::<u32>()?);
    let sums = device.alloc_zeros::<f32>(segments * width)?;
    let (n32, width32, segments32) = (
        u32_arg(n, "n")?,
        u32_arg(width, "width")?,
        u32_arg(segments, "segments")?,
    );
    let func =
        device.get_or_load_custom_func("segment_sum", "kroute_segment_sum", ptx::SEGMENT_SUM)?;
    let mut launch = func.builder();
    launch
        .arg(&v)
        .arg(&l)
        .arg(&sums)
        .arg(&n32)
        .arg(&width32)
        .arg(&segments32);
    let blocks = n.div_ceil(WARPS_PER_BLOCK).min(MAX_BLOCKS);
    let config = launch_config(blocks, 32 * WARPS_PER_BLOCK as u32)?;
    // SAFETY: signature as declared in segment_sum.cu; every label was checked < segments.
    unsafe { launch.launch(config) }.w()?;
    Ok(tensor(sums, device, (segments, width)))
}

pub fn mean_pool(
    device: &CudaDevice,
    hidden: &Tensor,
    mask: &Tensor,
    (batch, seq, dim): (usize, usize, usize),
    normalize: bool,
) -> Result<Tensor> {
    const MAX_COLUMNS_PER_THREAD: usize = 4;
    const MAX_THREADS: usize = 1024;
    if dim > MAX_COLUMNS_PER_THREAD * MAX_THREADS {
        return Err(Error::Invalid(format!(
            "mean-pool kernel handles up to {} dimensions, got {dim}",
            MAX_COLUMNS_PER_THREAD * MAX_THREADS
        )));
    }
    let threads = dim.div_ceil(32).clamp(1, MAX_THREADS / 32) * 32;
    let config = launch_config(batch, threads as u32)?;
    let args = MeanPoolArgs {
        mask,
        shape: (u32_arg(seq, "seq")?, u32_arg(dim, "dim")?),
        normalize: u32::from(normalize),
        config,
    };
    let out = match hidden.dtype() {
        DType::F16 => args.launch::<half::f16>(device, "mean_pool_f16", hidden, batch * dim)?,
        DType::BF16 => args.launch::<half::bf16>(device, "mean_pool_bf16", hidden, batch * dim)?,
        _ => args.launch::<f32>(device, "mean_pool_f32", hidden, batch * dim)?,
    };
    Ok(tensor(out, device, (batch, dim)))
}

struct MeanPoolArgs<'a> {
    mask: &'a Tensor,
    shape: (u32, u32),
    normalize: u32,
    config: LaunchConfig,
}

impl MeanPoolArgs<'_> {
    /// Runs the kernel instantiated for the hidden states' element type `T`.
    fn launch<T: CudaDType + DeviceRepr>(
        &self,
        device: &CudaDevice,
        name: &str,
        hidden: &Tensor,
        out_len: usize,
    ) -> Result<CudaSlice<f32>> {
        let (h, m) = (Contiguous::of(hidden)?, Contiguous::of(self.mask)?);
        let (h, m) = (h.cuda::<T>()?, m.cuda::<f32>()?);
        let out = output::<f32>(device, out_len)?;
        let func = device.get_or_load_custom_func(name, "kroute_mean_pool", ptx::MEAN_POOL)?;
        let mut launch = func.builder();
        launch
            .arg(&h)
            .arg(&m)
            .arg(&out)
            .arg(&self.shape.0)
            .arg(&self.shape.1)
            .arg(&self.normalize);
        // SAFETY: signature as declared in mean_pool.cu for `T`; dim ≤ 4 × threads, as the
        // kernel requires.
        unsafe { launch.launch(self.config) }.w()?;
        Ok(out)
    }
}

pub fn top_p_vote(
    device: &CudaDevice,
    distances: &Tensor,
    votes: &Tensor,
    top_p: usize,
    beta: f32,
) -> Result<Vote> {
    const WARPS_PER_BLOCK: usize = 8;
    let (queries, k) = distances.dims2()?;
    let models = votes.dim(1)?;
    let (d, v) = (Contiguous::of(distances)?, Contiguous::of(votes)?);
    let (d, v) = (d.cuda::<f32>()?, v.cuda::<f32>()?);
    let totals = output::<f32>(device, queries * models)?;
    let clusters = output::<u32>(device, queries * top_p)?;
    let near = output::<f32>(device, queries * top_p)?;
    let weights = output::<f32>(device, queries * top_p)?;
    let args = [
        u32_arg(queries, "queries")?,
        u32_arg(k, "k")?,
        u32_arg(models, "models")?,
        u32_arg(top_p, "top_p")?,
    ];
    let func =
        device.get_or_load_custom_func("top_p_vote", "kroute_top_p_vote", ptx::TOP_P_VOTE)?;
    let mut launch = func.builder();
    launch
        .arg(&d)
        .arg(&v)
        .arg(&totals)
        .arg(&clusters)
        .arg(&near)
        .arg(&weights);
    for arg in &args {
        launch.arg(arg);
    }
    launch.arg(&beta);
    let config = launch_config(
        queries.div_ceil(WARPS_PER_BLOCK),
        32 * WARPS_PER_BLOCK as u32,
    )?;
    // SAFETY: signature as declared in top_p_vote.cu; 1 ≤ top_p ≤ min(k, 32) was checked.
    unsafe { launch.launch(config) }.w()?;
    Ok(Vote {
        totals: tensor(totals, device, (queries, models)),
        clusters: tensor(clusters, device, (queries, top_p)),
        distances: tensor(near, device, (queries, top_p)),
        weights: tensor(weights, device, (queries, top_p)),
    })
}
