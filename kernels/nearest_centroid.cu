// Nearest centroid of every point, fused: the distance tile of 128 points × 128 centroids lives
// in registers and only the running minimum per point leaves them, so the (points × centroids)
// distance matrix is never written to memory (at 1M points × 1024 centroids it would be 4 GiB,
// written and read back by an argmin every Lloyd iteration).
//
// Layout: a block of 256 threads owns 128 points and walks every centroid, 128 at a time; a
// tile's dot products accumulate over the dimension in steps of 16 staged through shared
// memory, each thread computing 8 points × 8 centroids (SGEMM-style register blocking). The
// score kept per point is ‖c‖² − 2·x·c, the squared distance less the point's own ‖x‖².

#include <float.h>
#include <stdint.h>

#define TILE 128     // points, and centroids, per tile
#define STEP 16      // dimensions staged per shared-memory round
#define THREADS 256  // 16 × 16 threads, each owning 8 × 8 of the tile

// The 8 rows (or columns) of a tile that lane `lane` (0..15) owns: two runs of four, 64 apart,
// so that a half-warp's float4 reads of shared memory are 256 consecutive bytes.
__device__ __forceinline__ int owned(int lane, int i) {
    return (i < 4 ? 0 : 64) + lane * 4 + (i & 3);
}

// (score, index) pairs ordered by score, then index: equal distances go to the lower centroid,
// as a sequential scan would choose.
__device__ __forceinline__ bool better(float s, uint32_t i, float best, uint32_t best_i) {
    return s < best || (s == best && i < best_i);
}

extern "C" __global__ void __launch_bounds__(THREADS) nearest_centroid(
    const float *__restrict__ points,             // (n, dim), rows `row_stride` apart
    const float *__restrict__ point_sq_norms,     // (n)
    const float *__restrict__ centroids,          // (k, dim)
    const float *__restrict__ centroid_sq_norms,  // (k)
    uint32_t *__restrict__ labels,                // (n) out
    float *__restrict__ distances,                // (n) out: squared distance to the label
    const uint32_t n,
    const uint32_t k,
    const uint32_t dim,
    const uint32_t row_stride) {
    // +4 floats per row: staging writes conflict 2-way instead of 16-way; rows stay 16-byte
    // aligned for the float4 reads.
    __shared__ __align__(16) float tile_points[STEP][TILE + 4];
    __shared__ __align__(16) float tile_centroids[STEP][TILE + 4];

    const int col_lane = threadIdx.x % 16;
    const int row_lane = threadIdx.x / 16;
    const size_t first_point = (size_t)blockIdx.x * TILE;

    float best[8];
    uint32_t best_index[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        best[i] = FLT_MAX;
        best_index[i] = UINT32_MAX;
    }

    for (uint32_t first_centroid = 0; first_centroid < k; first_centroid += TILE) {
        float dot[8][8];
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int j = 0; j < 8; ++j) dot[i][j] = 0.f;

        for (uint32_t first_dim = 0; first_dim < dim; first_dim += STEP) {
            // Stage 128 × 16 of each operand, transposed, zero-filled past the edges.
#pragma unroll
            for (int l = 0; l < TILE * STEP / THREADS; ++l) {
                const int e = threadIdx.x + l * THREADS;
                const int row = e / STEP, d = e % STEP;
                const uint32_t dd = first_dim + d;
                const size_t p = first_point + row;
                const uint32_t c = first_centroid + row;
                tile_points[d][row] = (p < n && dd < dim) ? points[p * row_stride + dd] : 0.f;
                tile_centroids[d][row] =
                    (c < k && dd < dim) ? centroids[(size_t)c * dim + dd] : 0.f;
            }
            __syncthreads();
#pragma unroll
            for (int d = 0; d < STEP; ++d) {
                const float4 p0 = *reinterpret_cast<const float4 *>(&tile_points[d][row_lane * 4]);
                const float4 p1 = *reinterpret_cast<const float4 *>(&tile_points[d][64 + row_lane * 4]);
                const float4 c0 = *reinterpret_cast<const float4 *>(&tile_centroids[d][col_lane * 4]);
                const float4 c1 = *reinterpret_cast<const float4 *>(&tile_centroids[d][64 + col_lane * 4]);
                const float a[8] = {p0.x, p0.y, p0.z, p0.w, p1.x, p1.y, p1.z, p1.w};
                const float b[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
#pragma unroll
                for (int i = 0; i < 8; ++i)
#pragma unroll
                    for (int j = 0; j < 8; ++j) dot[i][j] = fmaf(a[i], b[j], dot[i][j]);
            }
            __syncthreads();
        }

        // Columns are visited in increasing centroid order, so a strict `<` keeps the lowest
        // index among equal scores within the thread.
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const uint32_t c = first_centroid + owned(col_lane, j);
            if (c < k) {
                const float c_sq = centroid_sq_norms[c];
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    const float score = c_sq - 2.f * dot[i][j];
                    if (score < best[i]) {
                        best[i] = score;
                        best_index[i] = c;
                    }
                }
            }
        }
    }

    // The 16 lanes sharing a row lane sit in one half-warp: reduce across them by shuffles.
#pragma unroll
    for (int i = 0; i < 8; ++i) {
#pragma unroll
        for (int offset = 8; offset > 0; offset /= 2) {
            const float other = __shfl_xor_sync(0xffffffff, best[i], offset);
            const uint32_t other_index = __shfl_xor_sync(0xffffffff, best_index[i], offset);
            if (better(other, other_index, best[i], best_index[i])) {
                best[i] = other;
                best_index[i] = other_index;
            }
        }
    }
    if (col_lane == 0) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const size_t p = first_point + owned(row_lane, i);
            if (p < n) {
                labels[p] = best_index[i];
                distances[p] = fmaxf(point_sq_norms[p] + best[i], 0.f);
            }
        }
    }
}
