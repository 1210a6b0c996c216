// Chunked LM-head log-probabilities / entropy and backward (model/cuda/token_stats_cuda.h).
#include <algorithm>
#include <cmath>

#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "model/cuda/kernel_util.cuh"
#include "model/cuda/token_stats_cuda.h"

namespace fp8rl {
namespace model_cuda {
namespace {

// Online softmax statistics of a set of logits: max m, sum of exp(z - m), sum of exp(z - m) * z.
// A plain aggregate (it lives in shared memory): start from empty().
struct Online {
  float m, s, zs;

  __device__ static Online empty() { return {-INFINITY, 0.f, 0.f}; }

  __device__ void add(float z) {
    if (z > m) {
      const float r = expf(m - z);  // 0 for the first element (m = -inf)
      s = s * r + 1.f;
      zs = zs * r + z;
      m = z;
    } else {
      const float e = expf(z - m);
      s += e;
      zs += e * z;
    }
  }
  __device__ void merge(const Online& o) {
    if (o.m == -INFINITY) return;
    if (m == -INFINITY) {
      *this = o;
      return;
    }
    const float nm = fmaxf(m, o.m), a = expf(m - nm), b = expf(o.m - nm);
    s = s * a + o.s * b;
    zs = zs * a + o.zs * b;
    m = nm;
  }
};

__device__ Online shfl_xor(const Online& v, int o) {
  Online r;
  r.m = __shfl_xor_sync(0xffffffffu, v.m, o);
  r.s = __shfl_xor_sync(0xffffffffu, v.s, o);
  r.zs = __shfl_xor_sync(0xffffffffu, v.zs, o);
  return r;
}

// Block per token: folds z[t, 0..cols) into (run_max, run_sum, run_zsum) and picks the target.
__global__ void __launch_bounds__(kThreads)
    fold_kernel(int64_t cols, int64_t v0, const float* __restrict__ z,
                const int32_t* __restrict__ targets, bool first, float* __restrict__ run_max,
                float* __restrict__ run_sum, float* __restrict__ run_zsum,
                float* __restrict__ target_logit) {
  __shared__ Online part[kThreads / 32];
  const int64_t t = blockIdx.x;
  const float* zt = z + t * cols;
  Online o = Online::empty();
  for (int64_t j = threadIdx.x; j < cols; j += kThreads) o.add(zt[j]);
#pragma unroll
  for (int w = 16; w > 0; w >>= 1) o.merge(shfl_xor(o, w));
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = o;
  __syncthreads();
  if (threadIdx.x != 0) return;
  Online all = part[0];
  for (int i = 1; i < kThreads / 32; ++i) all.merge(part[i]);
  if (!first) {
    Online run;
    run.m = run_max[t], run.s = run_sum[t], run.zs = run_zsum[t];
    all.merge(run);
  }
  run_max[t] = all.m, run_sum[t] = all.s, run_zsum[t] = all.zs;
  const int64_t tg = targets[t];
  if (tg >= v0 && tg < v0 + cols) target_logit[t] = zt[tg - v0];
}

__global__ void finalize_kernel(int64_t tokens, const int32_t* __restrict__ targets,
                                const float* __restrict__ run_max,
                                const float* __restrict__ run_sum,
                                const float* __restrict__ run_zsum,
                                const float* __restrict__ target_logit, float* __restrict__ logprob,
                                float* __restrict__ entropy, float* __restrict__ lse,
                                float* __restrict__ mean_logit) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= tokens) return;
  const float l = run_max[t] + logf(run_sum[t]), mean = run_zsum[t] / run_sum[t];
  lse[t] = l;
  mean_logit[t] = mean;
  entropy[t] = l - mean;
  logprob[t] = targets[t] >= 0 ? target_logit[t] - l : 0.f;
}

// dz = dlogprob (onehot - p) - dentropy p (z - E[z]), p = exp(z - lse), as bf16. Block (t, y)
// covers columns [y * kDlogitsCols, (y + 1) * kDlogitsCols) of token t's row.
constexpr int64_t kDlogitsCols = 1024;
__global__ void __launch_bounds__(kThreads)
    dlogits_kernel(int64_t cols, int64_t v0, const float* __restrict__ z,
                   const int32_t* __restrict__ targets, const float* __restrict__ dlogprob,
                   const float* __restrict__ dentropy, const float* __restrict__ lse,
                   const float* __restrict__ mean_logit, uint16_t* __restrict__ dz) {
  const int64_t t = blockIdx.x;
  const int32_t tg = targets[t];
  const float glp = tg >= 0 ? dlogprob[t] : 0.f, gh = dentropy[t];
  const float row_lse = lse[t], mean = mean_logit[t];
  const float* zt = z + t * cols;
  uint16_t* dzt = dz + t * cols;
  const int64_t j1 = min(cols, int64_t(blockIdx.y + 1) * kDlogitsCols);
  for (int64_t j = int64_t(blockIdx.y) * kDlogitsCols + threadIdx.x; j < j1; j += kThreads) {
    const float p = expf(zt[j] - row_lse);
    float g = -glp * p - gh * p * (zt[j] - mean);
    if (tg == v0 + j) g += glp;
    dzt[j] = uint16_t(cuda_detail::f32_to_bf16_bits(g));
  }
}

int64_t chunk_of(const TokenStatsShape& s) {
  return std::min(s.vocab, std::max<int64_t>(1, s.vocab_chunk));
}

absl::Status check(const TokenStatsShape& s) {
  FP8RL_REQUIRE(s.tokens >= 0 && s.hidden > 0 && s.vocab > 0 && s.vocab_chunk > 0,
                "TokenStatsShape tokens=", s.tokens, " hidden=", s.hidden, " vocab=", s.vocab,
                " vocab_chunk=", s.vocab_chunk);
  return absl::OkStatus();
}

}  // namespace
}  // namespace model_cuda

using namespace model_cuda;

TokenStatsScratch TokenStatsScratch::carve(const TokenStatsShape& s, ArenaCarver& arena) {
  TokenStatsScratch r;
  r.logits = arena.take<float>(s.tokens * chunk_of(s));
  r.dlogits = arena.take<uint16_t>(s.tokens * chunk_of(s));
  r.run_max = arena.take<float>(s.tokens);
  r.run_sum = arena.take<float>(s.tokens);
  r.run_zsum = arena.take<float>(s.tokens);
  r.target_logit = arena.take<float>(s.tokens);
  return r;
}

absl::Status token_stats_forward_cuda(Bf16Gemm& gemm, const TokenStatsShape& s, const uint16_t* h,
                                      const uint16_t* w, const int32_t* targets, float* logprob,
                                      float* entropy, float* lse, float* mean_logit,
                                      const TokenStatsScratch& scratch, cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(check(s));
  if (s.tokens == 0) return absl::OkStatus();
  const int64_t chunk = chunk_of(s);
  for (int64_t v0 = 0; v0 < s.vocab; v0 += chunk) {
    const int64_t c = std::min(chunk, s.vocab - v0);
    Bf16GemmDesc g;
    g.m = s.tokens, g.n = c, g.k = s.hidden, g.out_dtype = DType::kF32;
    FP8RL_RETURN_IF_ERROR(gemm.run(g, h, w + v0 * s.hidden, scratch.logits, stream));
    fold_kernel<<<unsigned(s.tokens), kThreads, 0, stream>>>(
        c, v0, scratch.logits, targets, v0 == 0, scratch.run_max, scratch.run_sum, scratch.run_zsum,
        scratch.target_logit);
    FP8RL_CUDA_CHECK_LAUNCH();
  }
  finalize_kernel<<<grid_for(s.tokens), kThreads, 0, stream>>>(
      s.tokens, targets, scratch.run_max, scratch.run_sum, scratch.run_zsum, scratch.target_logit,
      logprob, entropy, lse, mean_logit);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status token_stats_backward_cuda(Bf16Gemm& gemm, const TokenStatsShape& s, const uint16_t* h,
                                       const uint16_t* w, const int32_t* targets,
                                       const float* dlogprob, const float* dentropy,
                                       const float* lse, const float* mean_logit, float* dh,
                                       float* dw, const TokenStatsScratch& scratch,
                                       cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(check(s));
  if (s.tokens == 0) return absl::OkStatus();
  const int64_t chunk = chunk_of(s);
  for (int64_t v0 = 0; v0 < s.vocab; v0 += chunk) {
    const int64_t c = std::min(chunk, s.vocab - v0);
    Bf16GemmDesc z;
    z.m = s.tokens, z.n = c, z.k = s.hidden, z.out_dtype = DType::kF32;
    FP8RL_RETURN_IF_ERROR(gemm.run(z, h, w + v0 * s.hidden, scratch.logits, stream));
    const dim3 grid(unsigned(s.tokens), unsigned((c + kDlogitsCols - 1) / kDlogitsCols));
    dlogits_kernel<<<grid, kThreads, 0, stream>>>(c, v0, scratch.logits, targets, dlogprob,
                                                  dentropy, lse, mean_logit, scratch.dlogits);
    FP8RL_CUDA_CHECK_LAUNCH();
    // dh (+)= dz . W[v0 : v0 + c]   (W's chunk is [k = c, n = hidden])
    Bf16GemmDesc gh;
    gh.m = s.tokens, gh.n = s.hidden, gh.k = c, gh.out_dtype = DType::kF32;
    gh.accumulate = v0 > 0, gh.b_kmajor = true;
    FP8RL_RETURN_IF_ERROR(gemm.run(gh, scratch.dlogits, w + v0 * s.hidden, dh, stream));
    // dW[v0 : v0 + c] += dz^T . h   (dz is [k = tokens, m = c], h is [k = tokens, n = hidden])
    Bf16GemmDesc gw;
    gw.m = c, gw.n = s.hidden, gw.k = s.tokens, gw.out_dtype = DType::kF32;
    gw.accumulate = true, gw.a_kmajor = true, gw.b_kmajor = true;
    FP8RL_RETURN_IF_ERROR(gemm.run(gw, scratch.dlogits, h, dw + v0 * s.hidden, stream));
  }
  return absl::OkStatus();
}

}  // namespace fp8rl
