// CUDA twin of quant/weight_export.h: the fused export kernel. One pass over the source: load
// (f32, bf16, or FP8 dequantized with its 128x128 scale), round to bf16 in registers, requantize
// to 128x128 FP8 + scale_inv or INT4 packed + bf16 scales. No bf16 copy in device memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "quant/weight_export.h"

namespace fp8rl {

// Same bytes as export_weight_fp8_cpu. Enqueued on `stream`, not synchronised.
absl::Status export_weight_fp8_cuda(const WeightExportDesc& desc, const void* src,
                                    const float* src_scale_inv, uint8_t* q, float* scale_inv,
                                    cudaStream_t stream);
// Same bytes as export_weight_int4_cpu. Synchronises `stream` to report a non-finite weight.
absl::Status export_weight_int4_cuda(const WeightExportDesc& desc, const void* src,
                                     const float* src_scale_inv, int32_t* packed, uint16_t* scale,
                                     cudaStream_t stream);
// Not synchronised: *first_bad (device memory, ~0ull before) receives the smallest flat index of
// a non-finite bf16 weight, as int4_pack_cuda_async; check it once per bucket.
absl::Status export_weight_int4_cuda_async(const WeightExportDesc& desc, const void* src,
                                           const float* src_scale_inv, int32_t* packed,
                                           uint16_t* scale, unsigned long long* first_bad,
                                           cudaStream_t stream);

}  // namespace fp8rl
