// CUDA twins of model/ops/rmsnorm.h: RMSNorm forward (optionally fused with the residual add in
// front of it) and backward, over float32 rows (the residual stream) or bf16 rows (Qwen3's
// QK-norm on [tokens * heads, head_dim]); statistics, weights and weight gradients in float32.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "core/dtype.h"

namespace fp8rl {

struct RmsNormDesc {
  int64_t rows = 0;
  int64_t dim = 0;  // even
  float eps = 1e-6f;
  DType x_dtype = DType::kF32;     // the normalised rows x: kF32 or kBF16
  DType grad_dtype = DType::kF32;  // backward: dy and dx, kF32 or kBF16
  bool accumulate_dx = false;      // backward: dx += (float32 gradients only)

  // InvalidArgument naming the field.
  absl::Status validate() const;
  std::string to_string() const;
};

// y [rows, dim] bf16 = w * (s * rstd), rstd [rows] = 1/sqrt(mean(s^2) + eps), where s = x, or
// with `residual` (float32 x only) s = x + residual, also written to `sum` (which may alias x or
// residual). Device pointers; enqueued on `stream`, not synchronised.
absl::Status rmsnorm_forward_cuda(const RmsNormDesc& d, const void* x, const float* residual,
                                  float* sum, const float* w, uint16_t* y, float* rstd,
                                  cudaStream_t stream);

// Given dy [rows, dim] and the forward's x and rstd: dx (grad_dtype) = rstd * (dy*w - x * rstd *
// mean(dy*w*x*rstd)), overwritten or accumulated into (accumulate_dx); dw [dim] += sum over rows
// of dy * x * rstd in a fixed order. dx may alias dy (same dtype, not accumulating). `partial`
// holds column_reduce_scratch_floats(dim) floats.
absl::Status rmsnorm_backward_cuda(const RmsNormDesc& d, const void* x, const float* w,
                                   const float* rstd, const void* dy, void* dx, float* dw,
                                   float* partial, cudaStream_t stream);

}  // namespace fp8rl
