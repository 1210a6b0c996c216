// Scalar codecs for the 8-bit float formats fp8rl stores: OCP float8_e4m3fn and E8M0.
// Header-only and usable from CUDA device code, so host references and kernels share one definition.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FP8RL_HD __host__ __device__ __forceinline__
#else
#define FP8RL_HD inline
#endif

namespace fp8rl {

FP8RL_HD uint32_t fp8_f32_bits_(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  return __builtin_bit_cast(uint32_t, f);
#endif
}
FP8RL_HD float fp8_f32_from_bits_(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}

inline constexpr float kE4M3Max = 448.0f;
inline constexpr uint8_t kE4M3NaN = 0x7F;
inline constexpr uint8_t kE8M0NaN = 0xFF;

// float32 -> E4M3: round to nearest even, saturate to +-448 (CUDA __NV_SATFINITE, including
// +-inf), NaN -> 0x7F/0xFF keeping the sign (as ml_dtypes and PyTorch do).
FP8RL_HD uint8_t f32_to_e4m3(float f) {
  const uint32_t u = fp8_f32_bits_(f);
  const uint8_t sign = uint8_t((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint8_t(sign | kE4M3NaN);
  if (a >= 0x43e00000u) return uint8_t(sign | 0x7Eu);  // |f| >= 448
  if (a < 0x3c800000u) {                               // |f| < 2^-6: subnormal result
    // q = |f| * 2^9 rounded to nearest even; exact scaling, q in [0, 8] (8 is the min normal).
    const float v = fp8_f32_from_bits_(a) * 512.0f;
    uint32_t q = uint32_t(v);
    const float rem = v - float(q);
    if (rem > 0.5f || (rem == 0.5f && (q & 1u))) ++q;
    return uint8_t(sign | q);
  }
  const uint32_t r = a + 0x7ffffu + ((a >> 20) & 1u);  // round the 23-bit mantissa to 3 bits
  const uint32_t exp = (r >> 23) - 127u + 7u;
  return uint8_t(sign | (exp << 3) | ((r >> 20) & 7u));
}

// E4M3 -> float32, exact. 0x7F/0xFF are NaN.
FP8RL_HD float e4m3_to_f32(uint8_t b) {
  const uint32_t sign = uint32_t(b & 0x80u) << 24;
  const uint32_t e = (b >> 3) & 0xFu;
  const uint32_t m = b & 7u;
  if (e == 15u && m == 7u) return fp8_f32_from_bits_(sign | 0x7fc00000u);
  if (e == 0u) {
    const float v = float(m) * (1.0f / 512.0f);
    return sign ? -v : v;
  }
  return fp8_f32_from_bits_(sign | ((e + 120u) << 23) | (m << 20));
}

// E8M0 -> float32: 2^(b-127); 0xFF is NaN. 0x00 is 2^-127, a float32 subnormal.
FP8RL_HD float e8m0_to_f32(uint8_t b) {
  if (b == kE8M0NaN) return fp8_f32_from_bits_(0x7fc00000u);
  if (b == 0) return fp8_f32_from_bits_(0x00400000u);
  return fp8_f32_from_bits_(uint32_t(b) << 23);
}

// float32 -> E8M0 exactly as ml_dtypes' float8_e8m0fnu: a normal float rounds up to the next
// power of two when its mantissa is at least half an exponent step (1.5 -> 2, 1.49 -> 1); a float32
// subnormal above 2^-127 gives 2^-126 (code 1), 2^-127 and below give code 0. Zero, negatives, inf,
// NaN and values that round above 2^127 give 0xFF.
FP8RL_HD uint8_t f32_to_e8m0(float f) {
  const uint32_t u = fp8_f32_bits_(f);
  if ((u >> 31) || (u & 0x7fffffffu) == 0 || (u & 0x7f800000u) == 0x7f800000u) return kE8M0NaN;
  const uint32_t exp = u >> 23;
  if (exp == 0) return (u & 0x7fffffu) > 0x400000u ? 1 : 0;
  const uint32_t e = exp + ((u & 0x400000u) ? 1u : 0u);
  return e > 254u ? kE8M0NaN : uint8_t(e);
}

}  // namespace fp8rl
