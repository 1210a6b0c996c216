// Whole-tensor amax on the device (overflow checks, grad-norm guards, delayed-scaling history),
// with the quantizers' rule: NaN-propagating (quant/block_quant.h amax_key), inf kept.
// tensor_amax_cpu is its CPU twin.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "core/dtype.h"
#include "quant/block_quant.h"

namespace fp8rl {

// max |x[i]| over n elements of dtype (kF32 or kBF16); 0 for n == 0; NaN if any x[i] is NaN.
inline float tensor_amax_cpu(DType dtype, const void* x, int64_t n) {
  uint32_t key = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = dtype == DType::kF32 ? static_cast<const float*>(x)[i]
                                         : bf16_to_f32(static_cast<const uint16_t*>(x)[i]);
    key = std::max(key, amax_key(v));
  }
  return f32_from_bits(key);
}

// Writes the amax to *amax_out (device memory). Enqueued on `stream`, not synchronised.
absl::Status tensor_amax_cuda(DType dtype, const void* x, int64_t n, float* amax_out,
                              cudaStream_t stream);

}  // namespace fp8rl
