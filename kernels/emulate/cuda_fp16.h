// Emulation stand-in for CUDA's header: IEEE half precision stored as bits.
#pragma once
#include <cstdint>
#include <cmath>
#include <cstring>

struct __half {
    uint16_t bits;
};

inline float __half2float(__half h) {
    const uint32_t sign = (h.bits & 0x8000u) << 16, exponent = (h.bits >> 10) & 0x1f,
                   mantissa = h.bits & 0x3ffu;
    float magnitude;
    if (exponent == 0) magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    else if (exponent == 31) magnitude = mantissa ? NAN : INFINITY;
    else magnitude = std::ldexp(static_cast<float>(mantissa | 0x400u), static_cast<int>(exponent) - 25);
    uint32_t out;
    std::memcpy(&out, &magnitude, 4);
    out |= sign;
    float result;
    std::memcpy(&result, &out, 4);
    return result;
}
