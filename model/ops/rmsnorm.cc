// RMSNorm forward and backward (model/ops/rmsnorm.h).
#include "model/ops/rmsnorm.h"

#include <cmath>
#include <vector>

#include "core/parallel.h"

namespace fp8rl {

void rmsnorm_forward(int64_t rows, int64_t dim, float eps, const float* x, const float* w, float* y,
                     float* rstd) {
  parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const float* xr = x + r * dim;
          float* yr = y + r * dim;
          float ss = 0.f;
          for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
          const float rs = 1.f / std::sqrt(ss / float(dim) + eps);
          rstd[r] = rs;
          for (int64_t i = 0; i < dim; ++i) yr[i] = w[i] * (xr[i] * rs);
        }
      },
      grain_for(dim));
}

void rmsnorm_backward(int64_t rows, int64_t dim, const float* x, const float* w, const float* rstd,
                      const float* dy, float* dx, float* dw) {
  // dw is a reduction over rows: every row block sums into its own partial, added up at the end.
  const int64_t grain = grain_for(dim);
  const int64_t blocks =
      std::max<int64_t>(1, std::min<int64_t>(64, rows / std::max<int64_t>(1, grain)));
  std::vector<float> partial(size_t(blocks * dim), 0.f);
  parallel_for(blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float* dwb = partial.data() + b * dim;
      for (int64_t r = b * rows / blocks; r < (b + 1) * rows / blocks; ++r) {
        const float* xr = x + r * dim;
        const float* dyr = dy + r * dim;
        float* dxr = dx + r * dim;
        const float rs = rstd[r];
        float dot = 0.f;  // sum_i (dy_i w_i) * xhat_i
        for (int64_t i = 0; i < dim; ++i) {
          const float xhat = xr[i] * rs;
          dwb[i] += dyr[i] * xhat;
          dot += dyr[i] * w[i] * xhat;
        }
        const float mean = dot / float(dim);
        for (int64_t i = 0; i < dim; ++i) dxr[i] = rs * (dyr[i] * w[i] - xr[i] * rs * mean);
      }
    }
  });
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t i = 0; i < dim; ++i) dw[i] += partial[b * dim + i];
  }
}

}  // namespace fp8rl
