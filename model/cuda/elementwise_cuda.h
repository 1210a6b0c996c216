// Elementwise CUDA kernels of the decoder: float32 -> bf16 casts, bias add and bias gradient (the
// bias half of model/ops/linear.cc), and normal random fill for parameter initialisation.
// Launchers enqueue on `stream`, return without synchronising; launch errors come back as
// Internal. Bf16 tensors are uint16_t bit patterns (core/dtype.h f32_to_bf16 rounding).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace fp8rl {

// Row chunks of the deterministic column reductions (bias and norm weight gradients): their
// scratch is kColumnReduceChunks * cols floats.
inline constexpr int64_t kColumnReduceChunks = 64;
inline constexpr int64_t column_reduce_scratch_floats(int64_t cols) {
  return kColumnReduceChunks * cols;
}

// y[i] = bf16(x[i]), bitwise core/dtype.h f32_to_bf16. x and y 4-byte aligned.
absl::Status cast_f32_to_bf16_cuda(int64_t n, const float* x, uint16_t* y, cudaStream_t stream);

// y [rows, cols] bf16 += b [cols] float32 (in float32, rounded once). cols even.
absl::Status bias_add_cuda(int64_t rows, int64_t cols, const float* b, uint16_t* y,
                           cudaStream_t stream);

// db [cols] += sum over rows of dy [rows, cols] bf16, in a fixed order. `partial` holds
// column_reduce_scratch_floats(cols) floats.
absl::Status bias_grad_cuda(int64_t rows, int64_t cols, const uint16_t* dy, float* db,
                            float* partial, cudaStream_t stream);

// p[i] = mean + std * N(0, 1), a counter-based generator: the value of element i depends only on
// (seed, i), not on the launch.
absl::Status fill_normal_cuda(int64_t n, float* p, uint64_t seed, float mean, float std,
                              cudaStream_t stream);

}  // namespace fp8rl
