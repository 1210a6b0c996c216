// CUDA twins of model/ops/rope.h with Qwen3's QK-norm in front: the query or key path between its
// projection and attention, forward (norm, then the rotate_half rotation) and backward, fused into
// one pass over each tensor. Bf16 tensors, float32 statistics, weights and weight gradients.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace fp8rl {

// out = rope(qk_norm(raw)) for raw [tokens, heads, head_dim] bf16: RMSNorm over each head with
// weight `norm` [head_dim] (statistics into rstd [tokens * heads]), or no norm when `norm` is null
// (Qwen2: out = rope(raw), rstd unused); then each head rotated by the angle of positions[t]
// (device int32, each below the table's positions) with cos, sin [positions, head_dim/2] float32
// (RopeTable::build's values). The normalised values are rotated in float32 and rounded to bf16
// once. head_dim even, at most 128; out must not alias raw. Enqueued on `stream`.
absl::Status qk_norm_rope_cuda(int64_t tokens, int64_t heads, int64_t head_dim, double eps,
                               const uint16_t* raw, const float* norm, float* rstd,
                               const float* cos, const float* sin, const int32_t* positions,
                               uint16_t* out, cudaStream_t stream);

// The backward of qk_norm_rope_cuda: d holds dL/d(out) on entry and dL/d(raw) on return (bf16;
// the inverse rotation and the norm's backward run in float32 in between); dnorm [head_dim] +=
// the norm weight's gradient, summed in a fixed order through `partial`
// (qk_norm_rope_backward_scratch_floats(head_dim) floats). raw and rstd are the forward's; with a
// null `norm` only the rotation is undone (raw, rstd, dnorm and partial unused).
absl::Status qk_norm_rope_backward_cuda(int64_t tokens, int64_t heads, int64_t head_dim,
                                        const uint16_t* raw, const float* norm, const float* rstd,
                                        const float* cos, const float* sin,
                                        const int32_t* positions, uint16_t* d, float* dnorm,
                                        float* partial, cudaStream_t stream);
int64_t qk_norm_rope_backward_scratch_floats(int64_t head_dim);

}  // namespace fp8rl
