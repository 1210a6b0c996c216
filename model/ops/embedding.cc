// Embedding gather and scatter-add (model/ops/embedding.h).
#include "model/ops/embedding.h"

#include <cstring>

#include "core/parallel.h"

namespace fp8rl {

void embedding_forward(int64_t tokens, int64_t dim, const int32_t* ids, const float* table,
                       float* out) {
  parallel_for(
      tokens,
      [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          std::memcpy(out + t * dim, table + int64_t(ids[t]) * dim, size_t(dim) * sizeof(float));
        }
      },
      grain_for(dim));
}

void embedding_backward(int64_t tokens, int64_t dim, int64_t vocab, const int32_t* ids,
                        const float* dout, float* dtable) {
  parallel_for(
      vocab,
      [&](int64_t v0, int64_t v1) {
        for (int64_t t = 0; t < tokens; ++t) {
          if (ids[t] < v0 || ids[t] >= v1) continue;
          float* row = dtable + int64_t(ids[t]) * dim;
          const float* g = dout + t * dim;
          for (int64_t i = 0; i < dim; ++i) row[i] += g[i];
        }
      },
      grain_for(tokens));
}

}  // namespace fp8rl
