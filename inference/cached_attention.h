// Causal GQA attention of new tokens against a per-sequence KV cache: the decode (and prefill)
// twin of model/ops/attention.h, with the same loop order so that a token's output equals what
// the full-sequence attention_forward gives it.
#pragma once

#include <cstdint>
#include <span>

namespace fp8rl {

// One sequence's new tokens: `count` queries at positions [start, start + count), whose keys and
// values k, v [start + count, kv_heads, head_dim] (the cache, new rows already appended) they
// attend to causally.
struct CachedAttentionSeq {
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t start = 0;
  int64_t count = 0;
};

struct CachedAttentionShape {
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  float scale = 0.f;  // softmax scale, 1/sqrt(head_dim) for HF models
};

// q, out [sum of counts, q_heads, head_dim], sequences' new tokens laid end to end in `seqs`
// order. Threads over (sequence, head).
void cached_attention_forward(const CachedAttentionShape& s,
                              std::span<const CachedAttentionSeq> seqs, const float* q, float* out);

}  // namespace fp8rl
