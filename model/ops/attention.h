// Causal grouped-query attention over packed variable-length sequences: a query attends to the
// keys of its own sequence at positions <= its own, never across sequences.
#pragma once

#include <cstdint>

namespace fp8rl {

// q [tokens, q_heads, head_dim]; k, v [tokens, kv_heads, head_dim]; q head h reads kv head
// h / (q_heads / kv_heads). cu_seqlens [seqs + 1] are token offsets (0, ..., tokens).
struct AttentionShape {
  int64_t tokens = 0;
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t seqs = 0;
  const int32_t* cu_seqlens = nullptr;
  float scale = 0.f;  // softmax scale, 1/sqrt(head_dim) for HF models
};

// out [tokens, q_heads, head_dim]; lse [tokens, q_heads] receives each row's log-sum-exp of the
// scaled scores, which is all the backward needs to rebuild the probabilities (flash-attention
// style: no [L, L] matrix is kept). Threads over (sequence, head).
void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       float* out, float* lse);

// Gradients given dout: dq [tokens, q_heads, head_dim], dk and dv [tokens, kv_heads, head_dim]
// are overwritten. Threads over (sequence, kv head), so the q heads sharing a kv head accumulate
// into dk/dv on one thread.
void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        const float* out, const float* lse, const float* dout, float* dq, float* dk,
                        float* dv);

}  // namespace fp8rl
