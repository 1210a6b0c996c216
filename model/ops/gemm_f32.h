// Multi-threaded float32 GEMMs of the CPU backend: the three operand layouts a linear layer's
// forward, dgrad and wgrad need, all reduced to one blocked row-major kernel whose inner loop runs
// over contiguous output columns (so it vectorises without -ffast-math).
#pragma once

#include <cstdint>

namespace fp8rl {

// C[M,N] (+)= A[M,K] · B[K,N]; all row-major and dense. `accumulate` adds into C instead of
// overwriting it. Threads over rows of C (core/parallel.h); A, B and C must not alias. Summation
// order over K is ascending, so results do not depend on the thread count.
void gemm_nn_f32(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                 bool accumulate);
// C[M,N] (+)= A[M,K] · B[N,K]^T (a linear layer's forward with B the [out, in] weight).
// Transposes B once into a per-thread scratch buffer that is reused across calls.
void gemm_nt_f32(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                 bool accumulate);
// C[M,N] (+)= A[K,M]^T · B[K,N] (a weight gradient: dW[out,in] = dY[T,out]^T · X[T,in]).
// Transposes A once into the per-thread scratch buffer.
void gemm_tn_f32(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                 bool accumulate);

// out[cols, rows] = in[rows, cols]^T, threaded over blocks of rows of `out`.
void transpose_f32(int64_t rows, int64_t cols, const float* in, float* out);

}  // namespace fp8rl
