// CUDA twin of model/ops/rope.h: the rotate_half rotation (or its inverse, the backward) of bf16
// heads in place, from a RopeTable copied to the device.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace fp8rl {

// x [tokens, heads, head_dim] bf16 rotated in place by the angle of positions[t] (device int32,
// each below the table's max_positions); cos, sin [max_positions, head_dim/2] float32 on the
// device (RopeTable::build's values). Enqueued on `stream`, not synchronised.
absl::Status rope_apply_cuda(int64_t tokens, int64_t heads, int64_t head_dim, const float* cos,
                             const float* sin, const int32_t* positions, bool inverse, uint16_t* x,
                             cudaStream_t stream);

// Qwen3's query or key path after its projection: out = rope(qk_norm(raw)) for raw [tokens,
// heads, head_dim] bf16 (RMSNorm over each head with weight `norm` [head_dim], statistics into
// rstd [tokens * heads]; without `norm` (no QK-norm) a copy), then rotated in place as
// rope_apply_cuda. out must not alias raw.
absl::Status qk_norm_rope_cuda(int64_t tokens, int64_t heads, int64_t head_dim, double eps,
                               const uint16_t* raw, const float* norm, float* rstd,
                               const float* cos, const float* sin, const int32_t* positions,
                               uint16_t* out, cudaStream_t stream);

}  // namespace fp8rl
