// Emulation stand-in for CUDA's header: bfloat16 stored as the top half of an f32's bits.
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
    uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t bits = static_cast<uint32_t>(h.bits) << 16;
    float out;
    std::memcpy(&out, &bits, 4);
    return out;
}
