// Blocked float32 GEMM over core/parallel.h threads (model/ops/gemm_f32.h).
#include "model/ops/gemm_f32.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/parallel.h"
#include "quant/block_quant.h"  // ceil_div

namespace fp8rl {
namespace {

// Output columns per panel: a full panel has a constant trip count, which GCC's -O2 cost model
// vectorises; the ragged last panel takes the scalar loop.
constexpr int64_t kPanelN = 64;
// Rows of B streamed per panel pass: kPanelK x kPanelN floats (32 KiB) stay in L1/L2 while every
// row of the thread's chunk of C consumes them.
constexpr int64_t kPanelK = 128;
constexpr int64_t kTranspose = 32;

std::vector<float>& scratch(int64_t elems) {
  thread_local std::vector<float> buf;
  if (int64_t(buf.size()) < elems) buf.resize(size_t(elems));
  return buf;
}

void gemm_rows(int64_t n, int64_t k, const float* a, const float* b, float* c, int64_t m0,
               int64_t m1) {
  for (int64_t n0 = 0; n0 < n; n0 += kPanelN) {
    const int64_t nb = std::min(kPanelN, n - n0);
    for (int64_t k0 = 0; k0 < k; k0 += kPanelK) {
      const int64_t k1 = std::min(k, k0 + kPanelK);
      for (int64_t i = m0; i < m1; ++i) {
        float* ci = c + i * n + n0;
        const float* ai = a + i * k;
        if (nb == kPanelN) {
          for (int64_t kk = k0; kk < k1; ++kk) {
            const float av = ai[kk];
            const float* bk = b + kk * n + n0;
            for (int64_t j = 0; j < kPanelN; ++j) ci[j] += av * bk[j];
          }
        } else {
          for (int64_t kk = k0; kk < k1; ++kk) {
            const float av = ai[kk];
            const float* bk = b + kk * n + n0;
            for (int64_t j = 0; j < nb; ++j) ci[j] += av * bk[j];
          }
        }
      }
    }
  }
}

}  // namespace

void gemm_nn_f32(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                 bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (!accumulate) std::memset(c, 0, size_t(m * n) * sizeof(float));
  if (k <= 0) return;
  parallel_for(
      m, [&](int64_t m0, int64_t m1) { gemm_rows(n, k, a, b, c, m0, m1); },
      grain_for(n * k));
}

void gemm_nt_f32(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                 bool accumulate) {
  std::vector<float>& bt = scratch(n * k);
  transpose_f32(n, k, b, bt.data());
  gemm_nn_f32(m, n, k, a, bt.data(), c, accumulate);
}

void gemm_tn_f32(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                 bool accumulate) {
  std::vector<float>& at = scratch(m * k);
  transpose_f32(k, m, a, at.data());
  gemm_nn_f32(m, n, k, at.data(), b, c, accumulate);
}

void transpose_f32(int64_t rows, int64_t cols, const float* in, float* out) {
  parallel_for(
      ceil_div(cols, kTranspose),
      [&](int64_t b0, int64_t b1) {
        for (int64_t r0 = 0; r0 < rows; r0 += kTranspose) {
          const int64_t r1 = std::min(rows, r0 + kTranspose);
          for (int64_t c = b0 * kTranspose; c < std::min(cols, b1 * kTranspose); ++c) {
            for (int64_t r = r0; r < r1; ++r) out[c * rows + r] = in[r * cols + c];
          }
        }
      },
      grain_for(kTranspose * rows));
}

}  // namespace fp8rl
