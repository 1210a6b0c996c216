// SwiGLU forward and backward (model/ops/swiglu.h).
#include "model/ops/swiglu.h"

#include <cmath>

#include "core/parallel.h"

namespace fp8rl {

void swiglu_forward(int64_t n, const float* gate, const float* up, float* act) {
  parallel_for(
      n,
      [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const float g = gate[i];
          act[i] = g / (1.f + std::exp(-g)) * up[i];
        }
      },
      kParallelGrainElems);
}

void swiglu_backward(int64_t n, const float* gate, const float* up, const float* dact, float* dgate,
                     float* dup) {
  parallel_for(
      n,
      [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const float g = gate[i], u = up[i], da = dact[i];
          const float sig = 1.f / (1.f + std::exp(-g));
          dup[i] = da * g * sig;
          dgate[i] = da * u * sig * (1.f + g * (1.f - sig));
        }
      },
      kParallelGrainElems);
}

}  // namespace fp8rl
