// Linear layers y = x · W^T (+ b) of the CPU backend in the precision modes the trainer runs:
// exact float32, BF16 operands with fp32 accumulation, TransformerEngine's FP8 blockwise recipe
// emulated through quant/, and INT4 fake-quant of the weight with a straight-through backward;
// and the FP8 parameter cache of --fp8-param-gather.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"

namespace fp8rl {

enum class LinearPrecision {
  kF32,   // exact reference (gradient checks, parity with transformers in fp32)
  kBF16,  // operands rounded to bf16, fp32 accumulation
  kFP8,  // fprop X 1x128 · W 128x128; dgrad dY 1x128 · W^T 128x128; wgrad dY, X 1x128 along tokens
};

// "f32", "bf16", "fp8".
std::string linear_precision_name(LinearPrecision p);

class Fp8WeightCache;

struct LinearOptions {
  LinearPrecision precision = LinearPrecision::kF32;
  // INT4 QAT: the forward (and dgrad) use int4_fake_quant_cpu(W) before the precision mode applies;
  // dW is the gradient w.r.t. the fake-quantized weight (straight-through).
  bool int4_weights = false;
  int64_t int4_group_size = 128;
  // FP8 parameters (kFP8 without int4_weights): weights found here are used as cached instead of
  // being quantized on every call. Shared with the trainer, which refreshes it between steps.
  std::shared_ptr<const Fp8WeightCache> fp8_weights;
};

// One weight held in FP8: W [out, in] quantized 128x128 (FWD_WEIGHT scale rule) and its
// transpose W^T [in, out] for dgrad (the same tiles, so bitwise the same values).
struct Fp8Weight {
  int64_t out = 0, in = 0;
  std::vector<uint8_t> q, q_t;                // e4m3
  std::vector<float> scale_inv, scale_inv_t;  // [ceil(out/128), ceil(in/128)] and transposed
};

// --fp8-param-gather: linear weights that live on the FP8 128x128 grid, as TransformerEngine's
// FP8 parameters do. Keyed by the address of the float32 weight they stand for, which must stay
// valid (and unmoved) while the cache refers to it. Not thread-safe to set() while a linear reads.
class Fp8WeightCache {
 public:
  // Quantizes w [out, in] 128x128 and keeps the payload, scales and the transposed copy; then
  // overwrites w with their dequantized values, so that readers of the float32 weight (exports,
  // other precision modes) see exactly what the FP8 GEMMs multiply by. Replaces an earlier entry.
  absl::Status set(float* w, int64_t out, int64_t in);
  // The entry of `w`, or nullptr.
  const Fp8Weight* find(const float* w) const;

 private:
  std::unordered_map<const float*, Fp8Weight> entries_;
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
