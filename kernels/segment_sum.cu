// Row sums per segment: sums[labels[i], :] += values[i, :] (the k-means centroid update).
//
// candle's `index_add` along dim 0 runs one thread per output column, each looping over every
// row: 385 threads for 1M rows. Here one warp takes a row at a time, its lanes spread over the
// columns, so every atomic of a warp hits consecutive addresses of one segment's row.
// `sums` must start zeroed; float atomics make the summation order, and so the last bits,
// vary from run to run.

#include <stdint.h>

extern "C" __global__ void segment_sum(
    const float *__restrict__ values,    // (n, width)
    const uint32_t *__restrict__ labels, // (n), each < segments
    float *__restrict__ sums,            // (segments, width), zeroed
    const uint32_t n,
    const uint32_t width,
    const uint32_t segments) {
    const uint32_t lane = threadIdx.x % 32;
    const size_t warp = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const size_t warps = ((size_t)gridDim.x * blockDim.x) / 32;
    for (size_t row = warp; row < n; row += warps) {
        const uint32_t segment = labels[row];
        if (segment >= segments) continue;  // validated on the host; never write out of bounds
        const float *src = values + row * width;
        float *dst = sums + (size_t)segment * width;
        for (uint32_t col = lane; col < width; col += 32) atomicAdd(dst + col, src[col]);
    }
}
