// INT4 weight quantization: symmetric per-group fake-quant for QAT (slime's
// OPEN_TRAINING_INT4_FAKE_QAT_FLAG) and compressed-tensors `pack-quantized` packing.
//
// For each row and each group of `group_size` consecutive input elements (the last group may be
// shorter): scale = bf16(max(amax / 7, 1e-5)) with amax in fp32; q = clamp(rne(x / scale), -7, 7).
// The scale is rounded to BF16 *before* it is used, so the trainer's fake-quant grid is exactly
// the grid a compressed-tensors loader rebuilds from the exported BF16 `weight_scale`.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "core/dtype.h"

namespace fp8rl {

inline constexpr int kInt4QMax = 7;
inline constexpr float kInt4MinScale = 1e-5f;

struct Int4Desc {
  int64_t rows = 0;            // out_features
  int64_t cols = 0;            // in_features
  int64_t group_size = 128;    // OPEN_TRAINING_INT4_GROUP_SIZE
  DType src_dtype = DType::kBF16;  // kF32 or kBF16

  int64_t groups() const { return (cols + group_size - 1) / group_size; }
  int64_t packed_cols() const { return (cols + 7) / 8; }
  absl::Status validate() const;
  std::string to_string() const;
};

// OPEN_TRAINING_INT4_GROUP_SIZE (default 128), read once.
int64_t int4_group_size_from_env();
// OPEN_TRAINING_INT4_FAKE_QAT_FLAG (default off), read once.
bool int4_fake_qat_from_env();

// Forward of the fake-quant: y = q * scale in src_dtype (same shape as x). NaN/inf propagate.
// The backward is the identity (straight-through): callers pass the gradient unchanged.
absl::Status int4_fake_quant_cpu(const Int4Desc& desc, const void* x, void* y);

// compressed-tensors pack-quantized: packed [rows, ceil(cols/8)] int32 holding q + 8, element j of
// each word in bits [4j, 4j+4) (lowest nibble first, zero-padded); scale [rows, groups] BF16 bits.
// InvalidArgument (naming row and column) when x holds a non-finite value.
absl::Status int4_pack_cpu(const Int4Desc& desc, const void* x, int32_t* packed, uint16_t* scale);
// out [rows, cols] = (nibble - 8) * bf16 scale, written as out_dtype (kF32 or kBF16).
absl::Status int4_unpack_cpu(const Int4Desc& desc, const int32_t* packed, const uint16_t* scale,
                             void* out, DType out_dtype);

}  // namespace fp8rl
