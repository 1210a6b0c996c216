// Element types, their sizes and names, and exact scalar conversions between float32, bfloat16 and
// float16 (round to nearest even, NaN kept quiet).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace fp8rl {

enum class DType : uint8_t {
  kF32,
  kBF16,
  kF16,
  kF8E4M3,  // OCP float8_e4m3fn
  kE8M0,    // OCP E8M0 (float8_e8m0fnu): 2^(e-127), 0xFF NaN
  kI8,
  kI32,
  kI64,
  kU8,
};

inline constexpr DType kAllDTypes[] = {DType::kF32, DType::kBF16, DType::kF16,
                                       DType::kF8E4M3, DType::kE8M0, DType::kI8,
                                       DType::kI32, DType::kI64, DType::kU8};

// Bytes per element.
size_t dtype_size(DType t);
// PyTorch-style name: "float32", "bfloat16", "float8_e4m3fn", ...
std::string_view dtype_name(DType t);
// Safetensors header name: "F32", "BF16", "F8_E4M3", "F8_E8M0", ...
std::string_view safetensors_dtype_name(DType t);
// Inverse of safetensors_dtype_name; InvalidArgument for names fp8rl does not hold.
absl::StatusOr<DType> dtype_from_safetensors_name(std::string_view name);
// Accepts either naming ("bf16", "bfloat16", "BF16", "float8_e4m3fn", ...).
absl::StatusOr<DType> parse_dtype(std::string_view name);

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

// Round to nearest even; NaN becomes a quiet NaN with the same sign; overflow rounds to inf.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace fp8rl
