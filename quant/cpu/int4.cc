// CPU reference of the INT4 group fake-quant and compressed-tensors pack-quantized packing
// (quant/int4.h).
#include "quant/int4.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/env.h"
#include "core/parallel.h"
#include "core/status.h"
#include "quant/block_quant.h"
#include "quant/cpu/kernel_util.h"

namespace fp8rl {
namespace {

using namespace quant_cpu;

// The group's scale, already rounded to BF16: bf16(max(amax / 7, 1e-5)). amax is NaN-propagating
// (amax_key, as torch.amax in slime's fake-quant), and so is the clamp (torch.clamp), so a group
// holding a NaN gets a NaN scale and one holding an inf an infinite scale.
template <typename Src>
float group_scale(const Src* x, int64_t n) {
  float s = f32_from_bits(amax_key_of(x, n)) / float(kInt4QMax);
  if (s < kInt4MinScale) s = kInt4MinScale;
  return bf16_to_f32(f32_to_bf16(s));
}

// clamp(rne(x / scale), -7, 7) as a float; NaN stays NaN. Clamping before rounding gives the same
// result (rounding is monotonic and the bounds are integers).
inline float int4_level(float x, float scale) {
  float v = x / scale;
  if (v < -float(kInt4QMax)) v = -float(kInt4QMax);
  if (v > float(kInt4QMax)) v = float(kInt4QMax);
  return std::nearbyint(v);
}

template <typename T>
void fake_quant_rows(const Int4Desc& d, const T* x, T* y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c0 = 0; c0 < d.cols; c0 += d.group_size) {
      const int64_t len = std::min(d.group_size, d.cols - c0);
      const T* xg = x + r * d.cols + c0;
      const float scale = group_scale(xg, len);
      for (int64_t i = 0; i < len; ++i) {
        store_as(int4_level(load_f32(xg[i]), scale) * scale, y + r * d.cols + c0 + i);
      }
    }
  }
}

// Packs rows [r0, r1); returns the flat index of the first non-finite element, or -1.
template <typename Src>
int64_t pack_rows(const Int4Desc& d, const Src* x, int32_t* packed, uint16_t* scale, int64_t r0,
                  int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const Src* xr = x + r * d.cols;
    for (int64_t c = 0; c < d.cols; ++c) {
      if (!std::isfinite(load_f32(xr[c]))) return r * d.cols + c;
    }
    uint32_t* words = reinterpret_cast<uint32_t*>(packed + r * d.packed_cols());
    std::fill(words, words + d.packed_cols(), 0u);
    for (int64_t g = 0; g < d.groups(); ++g) {
      const int64_t c0 = g * d.group_size;
      const int64_t c1 = std::min(d.cols, c0 + d.group_size);
      const float s = group_scale(xr + c0, c1 - c0);
      scale[r * d.groups() + g] = f32_to_bf16(s);
      for (int64_t c = c0; c < c1; ++c) {
        const uint32_t nibble = uint32_t(int(int4_level(load_f32(xr[c]), s)) + 8);
        words[c / 8] |= nibble << (4 * (c % 8));
      }
    }
  }
  return -1;
}

template <typename Out>
void unpack_rows(const Int4Desc& d, const int32_t* packed, const uint16_t* scale, Out* out,
                 int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint32_t* words = reinterpret_cast<const uint32_t*>(packed + r * d.packed_cols());
    for (int64_t c = 0; c < d.cols; ++c) {
      const int level = int((words[c / 8] >> (4 * (c % 8))) & 0xFu) - 8;
      const float s = bf16_to_f32(scale[r * d.groups() + c / d.group_size]);
      store_as(float(level) * s, out + r * d.cols + c);
    }
  }
}

}  // namespace

absl::Status Int4Desc::validate() const {
  FP8RL_REQUIRE(rows >= 0, "Int4Desc.rows=", rows, " is negative");
  FP8RL_REQUIRE(cols >= 0, "Int4Desc.cols=", cols, " is negative");
  FP8RL_REQUIRE(group_size > 0, "Int4Desc.group_size=", group_size, " must be positive");
  FP8RL_REQUIRE(src_dtype == DType::kF32 || src_dtype == DType::kBF16,
                "Int4Desc.src_dtype must be float32 or bfloat16, got ",
                std::string(dtype_name(src_dtype)));
  return absl::OkStatus();
}

std::string Int4Desc::to_string() const {
  return absl::StrCat("Int4Desc{rows=", rows, ", cols=", cols, ", group_size=", group_size,
                      ", src=", std::string(dtype_name(src_dtype)), "}");
}

int64_t int4_group_size_from_env() { return env_long("OPEN_TRAINING_INT4_GROUP_SIZE", 128); }

bool int4_fake_qat_from_env() { return env_bool("OPEN_TRAINING_INT4_FAKE_QAT_FLAG", false); }

absl::Status int4_fake_quant_cpu(const Int4Desc& desc, const void* x, void* y) {
  FP8RL_RETURN_IF_ERROR(validate_for(desc, "int4_fake_quant_cpu"));
  const int64_t n = desc.rows * desc.cols;
  FP8RL_RETURN_IF_ERROR(require_buffer(x, n, "x"));
  FP8RL_RETURN_IF_ERROR(require_buffer(y, n, "y"));
  parallel_for(
      desc.rows,
      [&](int64_t r0, int64_t r1) {
        if (desc.src_dtype == DType::kF32) {
          fake_quant_rows(desc, static_cast<const float*>(x), static_cast<float*>(y), r0, r1);
        } else {
          fake_quant_rows(desc, static_cast<const uint16_t*>(x), static_cast<uint16_t*>(y), r0, r1);
        }
      },
      grain_for(desc.cols));
  return absl::OkStatus();
}

absl::Status int4_pack_cpu(const Int4Desc& desc, const void* x, int32_t* packed, uint16_t* scale) {
  FP8RL_RETURN_IF_ERROR(validate_for(desc, "int4_pack_cpu"));
  const int64_t n = desc.rows * desc.cols;
  FP8RL_RETURN_IF_ERROR(require_buffer(x, n, "x"));
  FP8RL_RETURN_IF_ERROR(require_buffer(packed, n, "packed"));
  FP8RL_RETURN_IF_ERROR(require_buffer(scale, n, "scale"));
  // The smallest flat index of a non-finite element over all chunks, or n when there is none.
  std::atomic<int64_t> first_bad{n};
  parallel_for(
      desc.rows,
      [&](int64_t r0, int64_t r1) {
        const int64_t bad =
            desc.src_dtype == DType::kF32
                ? pack_rows(desc, static_cast<const float*>(x), packed, scale, r0, r1)
                : pack_rows(desc, static_cast<const uint16_t*>(x), packed, scale, r0, r1);
        if (bad < 0) return;
        int64_t cur = first_bad.load();
        while (bad < cur && !first_bad.compare_exchange_weak(cur, bad)) {
        }
      },
      grain_for(desc.cols));
  const int64_t bad = first_bad.load();
  if (bad < n) {
    return absl::InvalidArgumentError(absl::StrCat("int4_pack_cpu ", desc.to_string(),
                                                   ": non-finite value at row ", bad / desc.cols,
                                                   ", column ", bad % desc.cols));
  }
  return absl::OkStatus();
}

absl::Status int4_unpack_cpu(const Int4Desc& desc, const int32_t* packed, const uint16_t* scale,
                             void* out, DType out_dtype) {
  FP8RL_RETURN_IF_ERROR(validate_for(desc, "int4_unpack_cpu"));
  FP8RL_RETURN_IF_ERROR(require_float_out(out_dtype));
  const int64_t n = desc.rows * desc.cols;
  FP8RL_RETURN_IF_ERROR(require_buffer(packed, n, "packed"));
  FP8RL_RETURN_IF_ERROR(require_buffer(scale, n, "scale"));
  FP8RL_RETURN_IF_ERROR(require_buffer(out, n, "out"));
  parallel_for(
      desc.rows,
      [&](int64_t r0, int64_t r1) {
        if (out_dtype == DType::kF32) {
          unpack_rows(desc, packed, scale, static_cast<float*>(out), r0, r1);
        } else {
          unpack_rows(desc, packed, scale, static_cast<uint16_t*>(out), r0, r1);
        }
      },
      grain_for(desc.cols));
  return absl::OkStatus();
}

}  // namespace fp8rl
