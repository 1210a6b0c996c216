// The device twin of AdamW::step (trainer/optimizer.h) for a device-resident optimizer: the
// global gradient norm, reduced in a fixed order, and the fused AdamW update, both in double with
// the host's operation order (no fused multiply-adds), so that from the same gradients and state
// the device step equals the host step bitwise.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "trainer/optimizer.h"

namespace fp8rl {

// Elements per block of the norm's first pass; each block's sum of squares is one partial.
inline constexpr int64_t kNormBlockElems = 8192;
inline constexpr int64_t norm_scratch_doubles(int64_t n) {
  return (n + kNormBlockElems - 1) / kNormBlockElems;
}

// *out (device) = sum of g[i]^2 over [0, n) in double: fixed blocks of kNormBlockElems, each
// reduced in a fixed tree, the partials added by one block in a fixed tree, so the value depends
// only on the data. `scratch` holds norm_scratch_doubles(n) doubles. Not synchronised.
absl::Status sum_of_squares_cuda(int64_t n, const float* g, double* scratch, double* out,
                                 cudaStream_t stream);

// The per-step constants of AdamW::step (k = step count after increment).
struct AdamWStepArgs {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double step_size = 0;  // lr / (1 − β1^k)
  double bc2_sqrt = 1;   // sqrt(1 − β2^k)
  double decay = 1;      // 1 − lr·wd for decayed (2-D) parameters, else 1
  bool clip = false;     // scale the gradient by clip_coeff first (clip_grad_norm)
  double clip_coeff = 1;
};

// AdamW::step's constants for step count `step` (after increment) at learning rate `lr`, with
// the clipping clip_grad_norm applies for a gradient norm `grad_norm` and weight decay for a
// `matrix` (2-D) parameter.
AdamWStepArgs adamw_step_args(const AdamWConfig& config, double lr, int64_t step, double grad_norm,
                              bool matrix);

// For i in [0, n): g = clip ? float(g[i]·coeff) : g[i];  m = float(β1·m + (1−β1)·g);
// v = float(β2·v + (1−β2)·g·g);  p = float(p·decay − step_size·m / (sqrt(v)/bc2_sqrt + eps)).
// `g` is read only. Not synchronised.
absl::Status adamw_step_cuda(int64_t n, const float* g, float* p, float* m, float* v,
                             const AdamWStepArgs& args, cudaStream_t stream);

}  // namespace fp8rl
