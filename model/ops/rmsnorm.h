// RMSNorm over the last dimension with HF semantics, y = w * (x * rsqrt(mean(x^2) + eps)), in
// float32; also Qwen3's QK-norm (rows of head_dim).
#pragma once

#include <cstdint>

namespace fp8rl {

// x, y [rows, dim]; w [dim]; rstd [rows] receives 1/sqrt(mean(x^2)+eps) for the backward.
// y may alias x. Threads over rows.
void rmsnorm_forward(int64_t rows, int64_t dim, float eps, const float* x, const float* w, float* y,
                     float* rstd);

// Given dy: dx [rows, dim] is overwritten (may alias dy), dw [dim] accumulated into. Needs the
// forward's input x and rstd.
void rmsnorm_backward(int64_t rows, int64_t dim, const float* x, const float* w, const float* rstd,
                      const float* dy, float* dx, float* dw);

}  // namespace fp8rl
