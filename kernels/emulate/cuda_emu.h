// Just enough of CUDA to run kernels/*.cu on the CPU, for checking their logic (indexing,
// tiling edges, reductions, tie-breaks) on a machine without a GPU. One block runs at a time,
// its threads as std::threads; __syncthreads is a barrier over the block, a warp's shuffles
// exchange through a slot per lane between two barriers over the warp. Timing, occupancy and
// memory-model subtleties are not emulated.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct float4 {
    float x, y, z, w;
};

namespace emu {
inline thread_local dim3 thread_idx;
inline dim3 block_idx, block_dim, grid_dim;

struct Warp {
    std::barrier<> sync{32};
    uint32_t slots[32];
};
inline std::unique_ptr<std::barrier<>> block_sync;
inline std::vector<std::unique_ptr<Warp>> warps;

inline Warp &warp() { return *warps[thread_idx.x / 32]; }

template <typename T>
T exchange(T value, unsigned source_lane) {
    static_assert(sizeof(T) == 4, "shuffles move 32-bit values");
    Warp &w = warp();
    std::memcpy(&w.slots[thread_idx.x % 32], &value, 4);
    w.sync.arrive_and_wait();
    T out;
    std::memcpy(&out, &w.slots[source_lane % 32], 4);
    w.sync.arrive_and_wait();
    return out;
}

// Runs `kernel` over the grid, a block at a time.
template <typename Kernel>
void launch(unsigned blocks, unsigned threads, Kernel kernel) {
    grid_dim = {blocks, 1, 1};
    block_dim = {threads, 1, 1};
    for (unsigned b = 0; b < blocks; ++b) {
        block_idx = {b, 0, 0};
        block_sync = std::make_unique<std::barrier<>>(threads);
        warps.clear();
        for (unsigned w = 0; w < (threads + 31) / 32; ++w) warps.push_back(std::make_unique<Warp>());
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t)
            pool.emplace_back([t, &kernel] {
                thread_idx = {t, 0, 0};
                kernel();
            });
        for (auto &thread : pool) thread.join();
    }
}
}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __align__(n) __attribute__((aligned(n)))
// Blocks run one at a time, so one static copy serves as every block's shared memory.
#define __shared__ static

inline void __syncthreads() { emu::block_sync->arrive_and_wait(); }
inline void __syncwarp() { emu::warp().sync.arrive_and_wait(); }
template <typename T>
T __shfl_xor_sync(unsigned, T value, int lane_mask) {
    return emu::exchange(value, (threadIdx.x % 32) ^ lane_mask);
}
template <typename T>
T __shfl_sync(unsigned, T value, int lane) {
    return emu::exchange(value, lane);
}
inline float atomicAdd(float *address, float value) {
    return std::atomic_ref<float>(*address).fetch_add(value);
}
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
using std::isnan;
