// Weight export for rollout and HF checkpoints: one tensor from the trainer's storage (f32 master,
// bf16, or FP8 with 128x128 scale_inv) through BF16 rounding to DeepSeek-V3 blockwise FP8
// (`weight` + `weight_scale_inv`) or compressed-tensors INT4 (`weight_packed` + `weight_scale`).
// The CPU functions are the composition of the CPU references (dequantize_128x128 -> f32_to_bf16
// -> quantize_128x128 / int4_pack) and define the bytes; quant/cuda/weight_export_cuda.h does
// the same in one pass.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "quant/block_quant.h"
#include "quant/int4.h"

namespace fp8rl {

enum class ExportSource : uint8_t {
  kF32,       // fp32 master weights
  kBF16,      // bf16 parameters
  kFP8Block,  // e4m3 with 128x128 scale_inv (FP8 param mode)
};
enum class ExportTarget : uint8_t {
  kFP8Block,   // e4m3 [rows, cols] + scale_inv f32 [ceil(rows/128), dst_scale_ld]
  kInt4Packed, // int32 [rows, ceil(cols/8)] + bf16 scale [rows, ceil(cols/group_size)]
};

struct WeightExportDesc {
  int64_t rows = 0;  // out_features
  int64_t cols = 0;  // in_features
  ExportSource source = ExportSource::kBF16;
  int64_t src_scale_ld = 0;  // kFP8Block source: scale_inv row stride (0: ceil(cols/128))
  ExportTarget target = ExportTarget::kFP8Block;
  ScaleParams scale;         // FP8 target: scale rule (the FWD_WEIGHT role)
  int64_t dst_scale_ld = 0;  // FP8 target: scale_inv row stride (0: ceil(cols/128))
  int64_t group_size = 128;  // INT4 target

  // InvalidArgument naming the field.
  absl::Status validate() const;
  std::string to_string() const;
  // The requantization step, from bf16: the FP8 target's QuantDesc, the INT4 target's Int4Desc.
  QuantDesc fp8_desc() const;
  Int4Desc int4_desc() const;
  // The FP8 source as a QuantDesc (for dequantize_128x128).
  QuantDesc source_desc() const;
};

std::string_view export_source_name(ExportSource s);
std::string_view export_target_name(ExportTarget t);

// src: [rows, cols] of the source dtype; src_scale_inv only for a kFP8Block source.
absl::Status export_weight_fp8_cpu(const WeightExportDesc& desc, const void* src,
                                   const float* src_scale_inv, uint8_t* q, float* scale_inv);
// InvalidArgument (row, column) when the bf16 weight holds a non-finite value.
absl::Status export_weight_int4_cpu(const WeightExportDesc& desc, const void* src,
                                    const float* src_scale_inv, int32_t* packed, uint16_t* scale);

}  // namespace fp8rl
