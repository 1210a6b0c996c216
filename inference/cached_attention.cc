// Attention over a KV cache (inference/cached_attention.h).
#include "inference/cached_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/parallel.h"

namespace fp8rl {

void cached_attention_forward(const CachedAttentionShape& s,
                              std::span<const CachedAttentionSeq> seqs, const float* q,
                              float* out) {
  const int64_t d = s.head_dim, group = s.q_heads / s.kv_heads;
  const int64_t q_stride = s.q_heads * d, kv_stride = s.kv_heads * d;
  std::vector<int64_t> first(seqs.size() + 1, 0);  // row of each sequence's first query
  int64_t work = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    first[i + 1] = first[i] + seqs[i].count;
    work += seqs[i].count * (seqs[i].start + seqs[i].count);
  }
  const int64_t items = int64_t(seqs.size()) * s.q_heads;
  parallel_for(
      items,
      [&](int64_t w0, int64_t w1) {
        std::vector<float> p;
        for (int64_t w = w0; w < w1; ++w) {
          const int64_t si = w / s.q_heads, h = w % s.q_heads, kvh = h / group;
          const CachedAttentionSeq& sq = seqs[size_t(si)];
          p.resize(size_t(sq.start + sq.count));
          for (int64_t i = 0; i < sq.count; ++i) {
            const int64_t t = first[size_t(si)] + i, len = sq.start + i + 1;
            const float* qt = q + t * q_stride + h * d;
            // The same arithmetic, in the same order, as attention_forward.
            for (int64_t j = 0; j < len; ++j) {
              const float* kj = sq.k + j * kv_stride + kvh * d;
              float dot = 0.f;
              for (int64_t e = 0; e < d; ++e) dot += qt[e] * kj[e];
              p[size_t(j)] = s.scale * dot;
            }
            const float m = *std::max_element(p.begin(), p.begin() + len);
            float sum = 0.f;
            for (int64_t j = 0; j < len; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - m));
            const float inv = 1.f / sum;
            float* o = out + t * q_stride + h * d;
            std::memset(o, 0, size_t(d) * sizeof(float));
            for (int64_t j = 0; j < len; ++j) {
              const float pj = p[size_t(j)] * inv;
              const float* vj = sq.v + j * kv_stride + kvh * d;
              for (int64_t e = 0; e < d; ++e) o[e] += pj * vj[e];
            }
          }
        }
      },
      grain_for(work / std::max<int64_t>(1, int64_t(seqs.size())) * d));
}

}  // namespace fp8rl
