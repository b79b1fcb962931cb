// The routing vote for a batch of queries: the top_p nearest clusters by distance, their weights
// softmax(−β·d), and each model's total Σ weight × vote. One warp per query: top_p rounds of a
// warp-wide argmin over the query's distances (each round takes the smallest (distance, cluster)
// pair after the previous one, so nothing needs marking), then lanes spread over the models.
// Replaces a full sort of every row, a gather, a softmax, an index_select of the votes, a
// broadcast multiply and a sum: seven kernels and their intermediates.

#include <math.h>
#include <stdint.h>

#define MAX_TOP_P 32
#define WARPS_PER_BLOCK 8

// Pairs ordered by distance, then cluster: equal distances go to the lower cluster. NaN counts
// as +∞ so that every row has a full ordering.
__device__ __forceinline__ bool before(float d, uint32_t c, float other_d, uint32_t other_c) {
    return d < other_d || (d == other_d && c < other_c);
}

extern "C" __global__ void __launch_bounds__(32 * WARPS_PER_BLOCK) top_p_vote(
    const float *__restrict__ distances,  // (queries, k)
    const float *__restrict__ votes,      // (k, models)
    float *__restrict__ totals,           // (queries, models) out
    uint32_t *__restrict__ nearest,       // (queries, top_p) out: clusters, nearest first
    float *__restrict__ nearest_distances,// (queries, top_p) out
    float *__restrict__ weights,          // (queries, top_p) out
    const uint32_t queries,
    const uint32_t k,
    const uint32_t models,
    const uint32_t top_p,                 // ≤ min(k, MAX_TOP_P)
    const float beta) {
    __shared__ uint32_t chosen[WARPS_PER_BLOCK][MAX_TOP_P];
    __shared__ float chosen_weight[WARPS_PER_BLOCK][MAX_TOP_P];
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const size_t query = (size_t)blockIdx.x * WARPS_PER_BLOCK + warp;
    if (query >= queries) return;  // the whole warp leaves together
    const float *row = distances + query * k;

    // Lane j keeps the j-th nearest cluster and its distance.
    uint32_t my_cluster = 0;
    float my_distance = 0.f;
    float last_d = -INFINITY;
    uint32_t last_c = 0;
    for (uint32_t j = 0; j < top_p; ++j) {
        float best_d = INFINITY;
        uint32_t best_c = UINT32_MAX;
        for (uint32_t c = lane; c < k; c += 32) {
            const float d = isnan(row[c]) ? INFINITY : row[c];
            const bool after = j == 0 || before(last_d, last_c, d, c);
            if (after && before(d, c, best_d, best_c)) {
                best_d = d;
                best_c = c;
            }
        }
        for (int offset = 16; offset > 0; offset /= 2) {
            const float other_d = __shfl_xor_sync(0xffffffff, best_d, offset);
            const uint32_t other_c = __shfl_xor_sync(0xffffffff, best_c, offset);
            if (before(other_d, other_c, best_d, best_c)) {
                best_d = other_d;
                best_c = other_c;
            }
        }
        if (lane == j) {
            my_cluster = best_c;
            my_distance = best_d;
        }
        last_d = best_d;
        last_c = best_c;
    }

    // softmax(−β·d) over the chosen; the nearest (lane 0) has the largest logit.
    // Explicit roundings (no fused multiply-add) compute what the CPU reference computes.
    const float logit = __fmul_rn(-beta, my_distance);
    const float top_logit = __shfl_sync(0xffffffff, logit, 0);
    float weight = lane < top_p ? expf(__fsub_rn(logit, top_logit)) : 0.f;
    float sum = weight;
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffff, sum, offset);
    weight /= sum;

    if (lane < top_p) {
        chosen[warp][lane] = my_cluster;
        chosen_weight[warp][lane] = weight;
        nearest[query * top_p + lane] = my_cluster;
        nearest_distances[query * top_p + lane] = my_distance;
        weights[query * top_p + lane] = weight;
    }
    __syncwarp();
    // Summed nearest first, term by term: equal votes give bit-equal totals, so ties stay ties.
    for (uint32_t m = lane; m < models; m += 32) {
        float total = 0.f;
        for (uint32_t j = 0; j < top_p; ++j)
            total = __fadd_rn(total, __fmul_rn(chosen_weight[warp][j],
                                               votes[(size_t)chosen[warp][j] * models + m]));
        totals[query * models + m] = total;
    }
}
