// Causal GQA attention forward and backward on packed sequences (model/ops/attention.h).
#include "model/ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/parallel.h"

namespace fp8rl {
namespace {

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Scaled scores of query row `qt` against keys [begin, begin + len) of one kv head.
void scores(const AttentionShape& s, const float* qt, const float* k, int64_t kv_head,
            int64_t begin, int64_t len, float* out) {
  const int64_t kv_stride = s.kv_heads * s.head_dim;
  for (int64_t j = 0; j < len; ++j) {
    out[j] = s.scale * dot(qt, k + (begin + j) * kv_stride + kv_head * s.head_dim, s.head_dim);
  }
}

// Parallel grain: a (sequence, head) item of an average-length sequence costs ~len^2 * head_dim.
int64_t grain(const AttentionShape& s) {
  const int64_t len = s.tokens / std::max<int64_t>(1, s.seqs);
  return grain_for(len * len * s.head_dim);
}

}  // namespace

void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       float* out, float* lse) {
  const int64_t d = s.head_dim, group = s.q_heads / s.kv_heads;
  const int64_t q_stride = s.q_heads * d, kv_stride = s.kv_heads * d;
  parallel_for(
      s.seqs * s.q_heads,
      [&](int64_t w0, int64_t w1) {
        std::vector<float> p;
        for (int64_t w = w0; w < w1; ++w) {
          const int64_t seq = w / s.q_heads, h = w % s.q_heads, kvh = h / group;
          const int64_t begin = s.cu_seqlens[seq], len = s.cu_seqlens[seq + 1] - begin;
          p.resize(size_t(len));
          for (int64_t i = 0; i < len; ++i) {
            const int64_t t = begin + i;
            scores(s, q + t * q_stride + h * d, k, kvh, begin, i + 1, p.data());
            const float m = *std::max_element(p.begin(), p.begin() + i + 1);
            float sum = 0.f;
            for (int64_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - m));
            const float inv = 1.f / sum;
            float* o = out + t * q_stride + h * d;
            std::memset(o, 0, size_t(d) * sizeof(float));
            for (int64_t j = 0; j <= i; ++j) {
              const float pj = p[j] * inv;
              const float* vj = v + (begin + j) * kv_stride + kvh * d;
              for (int64_t e = 0; e < d; ++e) o[e] += pj * vj[e];
            }
            lse[t * s.q_heads + h] = m + std::log(sum);
          }
        }
      },
      grain(s));
}

void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        const float* out, const float* lse, const float* dout, float* dq, float* dk,
                        float* dv) {
  const int64_t d = s.head_dim, group = s.q_heads / s.kv_heads;
  const int64_t q_stride = s.q_heads * d, kv_stride = s.kv_heads * d;
  std::memset(dq, 0, size_t(s.tokens * q_stride) * sizeof(float));
  std::memset(dk, 0, size_t(s.tokens * kv_stride) * sizeof(float));
  std::memset(dv, 0, size_t(s.tokens * kv_stride) * sizeof(float));
  parallel_for(
      s.seqs * s.kv_heads,
      [&](int64_t w0, int64_t w1) {
        std::vector<float> p;
        for (int64_t w = w0; w < w1; ++w) {
          const int64_t seq = w / s.kv_heads, kvh = w % s.kv_heads;
          const int64_t begin = s.cu_seqlens[seq], len = s.cu_seqlens[seq + 1] - begin;
          p.resize(size_t(len));
          for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
            for (int64_t i = 0; i < len; ++i) {
              const int64_t t = begin + i;
              const float* qt = q + t * q_stride + h * d;
              const float* dot_ = dout + t * q_stride + h * d;
              float* dqt = dq + t * q_stride + h * d;
              const float row_lse = lse[t * s.q_heads + h];
              const float delta = dot(dot_, out + t * q_stride + h * d, d);  // sum_j p_j dp_j
              scores(s, qt, k, kvh, begin, i + 1, p.data());
              for (int64_t j = 0; j <= i; ++j) {
                const int64_t kj = (begin + j) * kv_stride + kvh * d;
                const float pj = std::exp(p[j] - row_lse);
                const float ds = pj * (dot(dot_, v + kj, d) - delta) * s.scale;
                for (int64_t e = 0; e < d; ++e) {
                  dqt[e] += ds * k[kj + e];
                  dk[kj + e] += ds * qt[e];
                  dv[kj + e] += pj * dot_[e];
                }
              }
            }
          }
        }
      },
      grain(s) / std::max<int64_t>(1, group) + 1);
}

}  // namespace fp8rl
