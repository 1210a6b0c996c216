// The LM head fused with what RL needs of it: log-probability of a given target token and the
// entropy of the next-token distribution at every position, computed over vocabulary chunks so no
// more than [tokens, vocab_chunk] logits exist at once; and the backward of both.
#pragma once

#include <cstdint>

namespace fp8rl {

struct TokenStatsShape {
  int64_t tokens = 0;
  int64_t hidden = 0;
  int64_t vocab = 0;
  int64_t vocab_chunk = 2048;  // logits held at once: tokens x vocab_chunk floats
};

// h [tokens, hidden] (final-normed hidden states), w [vocab, hidden] (lm_head or the tied
// embedding). targets [tokens]: a vocabulary id, or negative for "no target" (logprob 0, no
// gradient). Writes logprob [tokens] = z[target] - lse and entropy [tokens], and saves for the
// backward (instead of a second pass over the vocabulary) lse [tokens], the log-sum-exp of the
// logits, and mean_logit [tokens] = E_p[z] (entropy = lse - E_p[z]). Threads inside.
void token_stats_forward(const TokenStatsShape& s, const float* h, const float* w,
                         const int32_t* targets, float* logprob, float* entropy, float* lse,
                         float* mean_logit);

// Backward of token_stats_forward for upstream gradients dlogprob, dentropy [tokens]:
// dh [tokens, hidden] is overwritten, dw [vocab, hidden] accumulated into.
void token_stats_backward(const TokenStatsShape& s, const float* h, const float* w,
                          const int32_t* targets, const float* dlogprob, const float* dentropy,
                          const float* lse, const float* mean_logit, float* dh, float* dw);

// All logits [tokens, vocab] = h · w^T, for tests and tools on small vocabularies.
void lm_logits(const TokenStatsShape& s, const float* h, const float* w, float* logits);

}  // namespace fp8rl
