// Fused flash-style causal GQA attention on the GPU: the CUDA twin of model/ops/attention.h
// (same AttentionShape, same packed layouts, same natural-log LSE), with BF16 tensors and fp32
// softmax and accumulation on the tensor cores.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "model/ops/attention.h"

namespace fp8rl::cuda {

// Shapes as model/ops/attention.h, except that s.cu_seqlens is a DEVICE pointer (int32
// [seqs + 1], 0 = cu[0] <= cu[1] <= ... <= cu[seqs] = tokens). q [tokens, q_heads, head_dim],
// k and v [tokens, kv_heads, head_dim], out [tokens, q_heads, head_dim] bf16; lse [tokens,
// q_heads] float receives the natural-log log-sum-exp of scale * scores of each row.
// max_seqlen must be at least the longest sequence (rows past it are not computed; the host
// cannot see the device offsets, so this is the caller's contract, as in FlashAttention).
// head_dim must be 32, 64 or 128; q_heads a multiple of kv_heads; scale positive and finite;
// q, k, v, out 16-byte aligned. Bad shapes or pointers give InvalidArgument naming the field
// and leave every buffer untouched. Enqueues on `stream` and returns without synchronising.
absl::Status attention_forward(const AttentionShape& s, int64_t max_seqlen, const __nv_bfloat16* q,
                               const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* out,
                               float* lse, cudaStream_t stream);

// Bytes of device workspace attention_backward needs: an fp32 dq accumulator [tokens, q_heads,
// head_dim] and the per-row dot(dout, out) [tokens, q_heads].
size_t attention_backward_workspace_bytes(const AttentionShape& s, int64_t max_seqlen);

// Gradients of attention_forward given out and lse from it and dout [tokens, q_heads,
// head_dim]: dq [tokens, q_heads, head_dim], dk and dv [tokens, kv_heads, head_dim] are
// overwritten (bf16; dk and dv sum over the q heads that share a kv head). `workspace` is
// attention_backward_workspace_bytes() of device memory, 16-byte aligned, used only until the
// enqueued work finishes. Same contract as attention_forward otherwise.
absl::Status attention_backward(const AttentionShape& s, int64_t max_seqlen, const __nv_bfloat16* q,
                                const __nv_bfloat16* k, const __nv_bfloat16* v,
                                const __nv_bfloat16* out, const float* lse,
                                const __nv_bfloat16* dout, __nv_bfloat16* dq, __nv_bfloat16* dk,
                                __nv_bfloat16* dv, void* workspace, cudaStream_t stream);

}  // namespace fp8rl::cuda
