// CUDA twins of model/ops/rmsnorm.h over the float32 residual stream: RMSNorm forward (optionally
// fused with the residual add in front of it, output bf16) and backward with the weight gradient
// in the same pass; statistics, weights and weight gradients in float32. (Qwen3's QK-norm on bf16
// heads is fused with RoPE: model/cuda/rope_cuda.h.)
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace fp8rl {

struct RmsNormDesc {
  int64_t rows = 0;
  int64_t dim = 0;  // even, at most kRmsNormMaxDim
  float eps = 1e-6f;
  bool accumulate_dx = false;  // backward: dx +=

  // InvalidArgument naming the field.
  absl::Status validate() const;
  std::string to_string() const;
};
inline constexpr int64_t kRmsNormMaxDim = 8192;

// y [rows, dim] bf16 = w * (s * rstd), rstd [rows] = 1/sqrt(mean(s^2) + eps), where s = x
// [rows, dim] float32, or with `residual` s = x + residual, also written to `sum` (which may alias
// x or residual). Device pointers; enqueued on `stream`, not synchronised.
absl::Status rmsnorm_forward_cuda(const RmsNormDesc& d, const float* x, const float* residual,
                                  float* sum, const float* w, uint16_t* y, float* rstd,
                                  cudaStream_t stream);

// Given dy [rows, dim] float32 and the forward's x and rstd: dx = rstd * (dy*w - x * rstd *
// mean(dy*w*x*rstd)), overwritten or accumulated into (accumulate_dx); dw [dim] += the sum over
// rows of dy * x * rstd, in a fixed order (a fixed split of the rows, then a fixed tree).
// dx may alias dy when not accumulating. dx16 (may be null): bf16(dx) as well, the operand a
// BF16 GEMM takes next. `partial` holds rmsnorm_backward_scratch_floats(dim) floats.
absl::Status rmsnorm_backward_cuda(const RmsNormDesc& d, const float* x, const float* w,
                                   const float* rstd, const float* dy, float* dx, uint16_t* dx16,
                                   float* dw, float* partial, cudaStream_t stream);
int64_t rmsnorm_backward_scratch_floats(int64_t dim);

}  // namespace fp8rl
