// Helpers shared by the CPU reference kernels of quant/: source loads and output stores per dtype,
// buffer checks and the parallel grain.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/dtype.h"
#include "core/float8.h"
#include "core/status.h"
#include "quant/block_quant.h"

namespace fp8rl::quant_cpu {

// Elements one parallel chunk should cover: below this a thread costs more than it saves.
// Sources are float32 (float) or bfloat16 (uint16_t bits), converted to float32 exactly.
inline float load_f32(float x) { return x; }
inline float load_f32(uint16_t x) { return bf16_to_f32(x); }
// Outputs are float32 or bfloat16 (round to nearest even).
inline void store_as(float v, float* out) { *out = v; }
inline void store_as(float v, uint16_t* out) { *out = f32_to_bf16(v); }

// e4m3_to_f32 of every code, for decoding in inner loops (one load instead of branches).
inline const float* e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int b = 0; b < 256; ++b) t[size_t(b)] = e4m3_to_f32(uint8_t(b));
    return t;
  }();
  return table.data();
}

// NaN-propagating amax of x[0, n) as an amax_key (quant/block_quant.h); 0 when n is 0.
template <typename Src>
uint32_t amax_key_of(const Src* x, int64_t n) {
  uint32_t key = 0;
  for (int64_t i = 0; i < n; ++i) key = std::max(key, amax_key(load_f32(x[i])));
  return key;
}

// InvalidArgument when a buffer the call needs is null (null is fine when it is empty).
inline absl::Status require_buffer(const void* p, int64_t elems, const char* name) {
  FP8RL_REQUIRE(p != nullptr || elems == 0, name, " is null");
  return absl::OkStatus();
}

inline absl::Status require_float_out(DType t) {
  FP8RL_REQUIRE(t == DType::kF32 || t == DType::kBF16,
                "output dtype must be float32 or bfloat16, got ", std::string(dtype_name(t)));
  return absl::OkStatus();
}

// desc.validate(), prefixed with the function's name and every field of the desc.
template <typename Desc>
absl::Status validate_for(const Desc& desc, const char* fn) {
  return annotate(desc.validate(), absl::StrCat(fn, " ", desc.to_string()));
}

}  // namespace fp8rl::quant_cpu
