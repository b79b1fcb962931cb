// Masked mean pooling and L2 normalisation in one pass over the encoder's last hidden states:
// one block per sequence, one thread per hidden column (up to 4 columns per thread), reading
// the states in their own dtype and writing f32. The generic path materialises `hidden × mask`
// in f32 and runs eight kernels.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define MAX_COLUMNS_PER_THREAD 4

__device__ __forceinline__ float as_f32(float x) { return x; }
__device__ __forceinline__ float as_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float as_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

// Sum of `value` over the block; every thread gets the result. `scratch` holds 32 floats.
__device__ float block_sum(float value, float *scratch) {
    __syncthreads();  // `scratch` may still be read from a previous call
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffff, value, offset);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    const int warps = (blockDim.x + 31) / 32;
    value = lane < warps ? scratch[lane] : 0.f;
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffff, value, offset);
    return value;
}

// blockDim.x is a multiple of 32 (at most 1024) with dim ≤ MAX_COLUMNS_PER_THREAD × blockDim.x.
template <typename T>
__device__ void mean_pool(
    const T *__restrict__ hidden,    // (batch, seq, dim)
    const float *__restrict__ mask,  // (batch, seq): 1 for real tokens, 0 for padding
    float *__restrict__ out,         // (batch, dim)
    const uint32_t seq,
    const uint32_t dim,
    const uint32_t normalize) {
    __shared__ float scratch[32];
    const size_t sequence = blockIdx.x;
    // Every thread reads the whole mask row; it is small and stays in L1.
    const float *row_mask = mask + sequence * seq;

    float count = 0.f;
    for (uint32_t t = threadIdx.x; t < seq; t += blockDim.x) count += row_mask[t];
    count = fmaxf(block_sum(count, scratch), 1e-9f);

    const T *states = hidden + sequence * seq * dim;
    float pooled[MAX_COLUMNS_PER_THREAD];
    float sq_norm = 0.f;
#pragma unroll
    for (int r = 0; r < MAX_COLUMNS_PER_THREAD; ++r) {
        const uint32_t col = threadIdx.x + r * blockDim.x;
        float sum = 0.f;
        if (col < dim) {
            for (uint32_t t = 0; t < seq; ++t) {
                if (row_mask[t] != 0.f) sum += row_mask[t] * as_f32(states[(size_t)t * dim + col]);
            }
        }
        pooled[r] = sum / count;
        sq_norm += pooled[r] * pooled[r];
    }
    const float norm = normalize ? fmaxf(sqrtf(block_sum(sq_norm, scratch)), 1e-12f) : 1.f;
#pragma unroll
    for (int r = 0; r < MAX_COLUMNS_PER_THREAD; ++r) {
        const uint32_t col = threadIdx.x + r * blockDim.x;
        if (col < dim) out[sequence * dim + col] = pooled[r] / norm;
    }
}

#define MEAN_POOL(NAME, T)                                                                    \
    extern "C" __global__ void NAME(const T *hidden, const float *mask, float *out,          \
                                    const uint32_t seq, const uint32_t dim,                  \
                                    const uint32_t normalize) {                              \
        mean_pool<T>(hidden, mask, out, seq, dim, normalize);                                \
    }

MEAN_POOL(mean_pool_f32, float)
MEAN_POOL(mean_pool_f16, __half)
MEAN_POOL(mean_pool_bf16, __nv_bfloat16)
