// Chunked log-probabilities, entropy and their backward (model/ops/token_stats.h).
#include "model/ops/token_stats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/parallel.h"
#include "model/ops/gemm_f32.h"

namespace fp8rl {

void token_stats_forward(const TokenStatsShape& s, const float* h, const float* w,
                         const int32_t* targets, float* logprob, float* entropy, float* lse,
                         float* mean_logit) {
  const int64_t chunk = std::min(s.vocab, std::max<int64_t>(1, s.vocab_chunk));
  // Online softmax state per token: running max m, sum of exp(z - m), sum of exp(z - m) * z.
  std::vector<float> m(size_t(s.tokens), -std::numeric_limits<float>::infinity());
  std::vector<float> sum(size_t(s.tokens), 0.f), zsum(size_t(s.tokens), 0.f);
  std::vector<float> z(size_t(s.tokens * chunk));
  for (int64_t v0 = 0; v0 < s.vocab; v0 += chunk) {
    const int64_t c = std::min(chunk, s.vocab - v0);
    gemm_nt_f32(s.tokens, c, s.hidden, h, w + v0 * s.hidden, z.data(), false);
    parallel_for(
        s.tokens,
        [&](int64_t t0, int64_t t1) {
          for (int64_t t = t0; t < t1; ++t) {
            const float* zt = z.data() + t * c;
            const float cm = *std::max_element(zt, zt + c);
            const float nm = std::max(m[t], cm);
            const float rescale = std::exp(m[t] - nm);  // 0 on the first chunk (m = -inf)
            float cs = 0.f, czs = 0.f;
            for (int64_t j = 0; j < c; ++j) {
              const float e = std::exp(zt[j] - nm);
              cs += e;
              czs += e * zt[j];
            }
            sum[t] = sum[t] * rescale + cs;
            zsum[t] = zsum[t] * rescale + czs;
            m[t] = nm;
            if (targets[t] >= v0 && targets[t] < v0 + c) logprob[t] = zt[targets[t] - v0];
          }
        },
        grain_for(c));
  }
  for (int64_t t = 0; t < s.tokens; ++t) {
    lse[t] = m[t] + std::log(sum[t]);
    mean_logit[t] = zsum[t] / sum[t];
    entropy[t] = lse[t] - mean_logit[t];
    logprob[t] = targets[t] >= 0 ? logprob[t] - lse[t] : 0.f;
  }
}

void token_stats_backward(const TokenStatsShape& s, const float* h, const float* w,
                          const int32_t* targets, const float* dlogprob, const float* dentropy,
                          const float* lse, const float* mean_logit, float* dh, float* dw) {
  const int64_t chunk = std::min(s.vocab, std::max<int64_t>(1, s.vocab_chunk));
  std::vector<float> z(size_t(s.tokens * chunk));
  std::memset(dh, 0, size_t(s.tokens * s.hidden) * sizeof(float));
  for (int64_t v0 = 0; v0 < s.vocab; v0 += chunk) {
    const int64_t c = std::min(chunk, s.vocab - v0);
    gemm_nt_f32(s.tokens, c, s.hidden, h, w + v0 * s.hidden, z.data(), false);
    // z becomes dL/dz: dlogprob (onehot - p) - dentropy p (z - E[z]).
    parallel_for(
        s.tokens,
        [&](int64_t t0, int64_t t1) {
          for (int64_t t = t0; t < t1; ++t) {
            float* zt = z.data() + t * c;
            const float glp = targets[t] >= 0 ? dlogprob[t] : 0.f, gh = dentropy[t];
            const float row_lse = lse[t], ez = mean_logit[t];
            for (int64_t j = 0; j < c; ++j) {
              const float p = std::exp(zt[j] - row_lse);
              zt[j] = -glp * p - gh * p * (zt[j] - ez);
            }
            if (targets[t] >= v0 && targets[t] < v0 + c) zt[targets[t] - v0] += glp;
          }
        },
        grain_for(c));
    gemm_nn_f32(s.tokens, s.hidden, c, z.data(), w + v0 * s.hidden, dh, true);
    gemm_tn_f32(c, s.hidden, s.tokens, z.data(), h, dw + v0 * s.hidden, true);
  }
}

void lm_logits(const TokenStatsShape& s, const float* h, const float* w, float* logits) {
  gemm_nt_f32(s.tokens, s.vocab, s.hidden, h, w, logits, false);
}

}  // namespace fp8rl
