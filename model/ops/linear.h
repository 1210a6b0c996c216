// Linear layers y = x · W^T (+ b) of the CPU backend in the precision modes the trainer runs:
// exact float32, BF16 operands with fp32 accumulation, TransformerEngine's FP8 blockwise recipe
// emulated through quant/, and INT4 fake-quant of the weight with a straight-through backward.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace fp8rl {

enum class LinearPrecision {
  kF32,   // exact reference (gradient checks, parity with transformers in fp32)
  kBF16,  // operands rounded to bf16, fp32 accumulation
  kFP8,  // fprop X 1x128 · W 128x128; dgrad dY 1x128 · W^T 128x128; wgrad dY, X 1x128 along tokens
};

// "f32", "bf16", "fp8".
std::string linear_precision_name(LinearPrecision p);

struct LinearOptions {
  LinearPrecision precision = LinearPrecision::kF32;
  // INT4 QAT: the forward (and dgrad) use int4_fake_quant_cpu(W) before the precision mode applies;
  // dW is the gradient w.r.t. the fake-quantized weight (straight-through).
  bool int4_weights = false;
  int64_t int4_group_size = 128;
};

// One linear problem: x [tokens, in], W [out, in] (HF layout), optional bias [out].
struct LinearShape {
  int64_t tokens = 0;
  int64_t in = 0;
  int64_t out = 0;
};

// y [tokens, out] = x · W^T + b (b may be null). Threads inside; buffers must not alias.
absl::Status linear_forward(const LinearOptions& opts, const LinearShape& s, const float* x,
                            const float* w, const float* b, float* y);

// Gradients of linear_forward given dy [tokens, out]: dx [tokens, in] is overwritten (skipped when
// null); dw [out, in] and db [out] are accumulated into (db skipped when null).
absl::Status linear_backward(const LinearOptions& opts, const LinearShape& s, const float* x,
                             const float* w, const float* dy, float* dx, float* dw, float* db);

}  // namespace fp8rl
