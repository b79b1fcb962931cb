// Runs one kernel of kernels/*.cu on the CPU (cuda_emu.h): reads its inputs from a file, poisons
// its outputs (all bits set), launches it with the geometry src/kernels/cuda.rs uses, and
// writes the outputs to a file. tests/kernels.rs builds and drives it.
//
//   harness KERNEL INPUT OUTPUT
//
// Files are little-endian: the u32 scalars, then the arrays, in the order each case reads them.

#include "cuda_emu.h"

#include "../mean_pool.cu"
#include "../nearest_centroid.cu"
#include "../segment_sum.cu"
#include "../top_p_vote.cu"

#include <fstream>
#include <iostream>
#include <string>

struct Reader {
    std::ifstream in;
    uint32_t u32() {
        uint32_t v;
        in.read(reinterpret_cast<char *>(&v), 4);
        return v;
    }
    template <typename T>
    std::vector<T> array(size_t len) {
        std::vector<T> v(len);
        in.read(reinterpret_cast<char *>(v.data()), len * sizeof(T));
        return v;
    }
};

struct Writer {
    std::ofstream out;
    template <typename T>
    void array(const std::vector<T> &v) {
        out.write(reinterpret_cast<const char *>(v.data()), v.size() * sizeof(T));
    }
};

template <typename T>
std::vector<T> poisoned(size_t len) {
    std::vector<T> v(len);
    std::memset(v.data(), 0xff, len * sizeof(T));
    return v;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        std::cerr << "usage: harness KERNEL INPUT OUTPUT\n";
        return 2;
    }
    const std::string kernel = argv[1];
    Reader r{std::ifstream(argv[2], std::ios::binary)};
    Writer w{std::ofstream(argv[3], std::ios::binary)};
    if (kernel == "nearest_centroid") {
        const uint32_t n = r.u32(), k = r.u32(), dim = r.u32(), row_stride = r.u32();
        const auto points = r.array<float>(size_t(n) * row_stride);
        const auto point_sq = r.array<float>(n);
        const auto centroids = r.array<float>(size_t(k) * dim);
        const auto centroid_sq = r.array<float>(k);
        auto labels = poisoned<uint32_t>(n);
        auto distances = poisoned<float>(n);
        emu::launch((n + 127) / 128, 256, [&] {
            nearest_centroid(points.data(), point_sq.data(), centroids.data(), centroid_sq.data(),
                             labels.data(), distances.data(), n, k, dim, row_stride);
        });
        w.array(labels);
        w.array(distances);
    } else if (kernel == "segment_sum") {
        const uint32_t n = r.u32(), width = r.u32(), segments = r.u32();
        const auto values = r.array<float>(size_t(n) * width);
        const auto labels = r.array<uint32_t>(n);
        std::vector<float> sums(size_t(segments) * width, 0.f);  // the kernel accumulates
        emu::launch(std::min((n + 7) / 8, 8192u), 256, [&] {
            segment_sum(values.data(), labels.data(), sums.data(), n, width, segments);
        });
        w.array(sums);
    } else if (kernel == "mean_pool_f32") {
        const uint32_t batch = r.u32(), seq = r.u32(), dim = r.u32(), normalize = r.u32();
        const auto hidden = r.array<float>(size_t(batch) * seq * dim);
        const auto mask = r.array<float>(size_t(batch) * seq);
        auto out = poisoned<float>(size_t(batch) * dim);
        const unsigned threads = std::clamp((dim + 31) / 32, 1u, 32u) * 32;
        emu::launch(batch, threads, [&] {
            mean_pool_f32(hidden.data(), mask.data(), out.data(), seq, dim, normalize);
        });
        w.array(out);
    } else if (kernel == "top_p_vote") {
        const uint32_t queries = r.u32(), k = r.u32(), models = r.u32(), top_p = r.u32();
        const uint32_t beta_bits = r.u32();
        float beta;
        std::memcpy(&beta, &beta_bits, 4);
        const auto distances = r.array<float>(size_t(queries) * k);
        const auto votes = r.array<float>(size_t(k) * models);
        auto totals = poisoned<float>(size_t(queries) * models);
        auto clusters = poisoned<uint32_t>(size_t(queries) * top_p);
        auto near = poisoned<float>(size_t(queries) * top_p);
        auto weights = poisoned<float>(size_t(queries) * top_p);
        emu::launch((queries + 7) / 8, 256, [&] {
            top_p_vote(distances.data(), votes.data(), totals.data(), clusters.data(), near.data(),
                       weights.data(), queries, k, models, top_p, beta);
        });
        w.array(totals);
        w.array(clusters);
        w.array(near);
        w.array(weights);
    } else {
        std::cerr << "unknown kernel " << kernel << "\n";
        return 2;
    }
    return r.in && w.out ? 0 : 1;
}
