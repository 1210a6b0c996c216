// RoPE rotation and its inverse (model/ops/rope.h).
#include "model/ops/rope.h"

#include <cmath>

#include "core/parallel.h"

namespace fp8rl {

RopeTable RopeTable::build(int64_t max_positions, int64_t head_dim, double theta) {
  RopeTable t;
  t.head_dim = head_dim;
  const int64_t half = head_dim / 2;
  t.cos.resize(size_t(max_positions * half));
  t.sin.resize(size_t(max_positions * half));
  for (int64_t i = 0; i < half; ++i) {
    const float inv_freq = float(1.0 / std::pow(theta, double(2 * i) / double(head_dim)));
    for (int64_t p = 0; p < max_positions; ++p) {
      const float angle = float(p) * inv_freq;
      t.cos[p * half + i] = float(std::cos(double(angle)));
      t.sin[p * half + i] = float(std::sin(double(angle)));
    }
  }
  return t;
}

void rope_apply(const RopeTable& table, int64_t tokens, int64_t heads, const int32_t* positions,
                bool inverse, float* x) {
  const int64_t d = table.head_dim, half = d / 2;
  parallel_for(
      tokens,
      [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const float* c = table.cos.data() + positions[t] * half;
          const float* s = table.sin.data() + positions[t] * half;
          for (int64_t h = 0; h < heads; ++h) {
            float* xh = x + (t * heads + h) * d;
            for (int64_t i = 0; i < half; ++i) {
              const float a = xh[i], b = xh[i + half];
              const float si = inverse ? -s[i] : s[i];
              xh[i] = a * c[i] - b * si;
              xh[i + half] = b * c[i] + a * si;
            }
          }
        }
      },
      grain_for(heads * d));
}

}  // namespace fp8rl
