// Gradient norm and fused AdamW update on the device (trainer/cuda/adamw_cuda.h).
#include <algorithm>
#include <cmath>

#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "trainer/cuda/adamw_cuda.h"

namespace fp8rl {
namespace {

constexpr int kNormThreads = 256;

// Sums the block's kNormThreads values of `s` in a fixed tree; the total ends in s[0].
__device__ void tree_sum(double* s) {
  for (int w = kNormThreads / 2; w > 0; w /= 2) {
    __syncthreads();
    if (int(threadIdx.x) < w) s[threadIdx.x] = __dadd_rn(s[threadIdx.x], s[threadIdx.x + w]);
  }
  __syncthreads();
}

__global__ void norm_partials_kernel(int64_t n, const float* __restrict__ g,
                                     double* __restrict__ partial) {
  __shared__ double s[kNormThreads];
  const int64_t begin = int64_t(blockIdx.x) * kNormBlockElems;
  const int64_t end = min(n, begin + kNormBlockElems);
  double acc = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kNormThreads) {
    const double x = g[i];
    acc = __dadd_rn(acc, __dmul_rn(x, x));
  }
  s[threadIdx.x] = acc;
  tree_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

__global__ void norm_finish_kernel(int64_t blocks, const double* __restrict__ partial,
                                   double* __restrict__ out) {
  __shared__ double s[kNormThreads];
  double acc = 0;
  for (int64_t b = threadIdx.x; b < blocks; b += kNormThreads) acc = __dadd_rn(acc, partial[b]);
  s[threadIdx.x] = acc;
  tree_sum(s);
  if (threadIdx.x == 0) *out = s[0];
}

// AdamW::step's loop body, operation for operation (explicit _rn intrinsics keep nvcc from
// contracting into FMAs the host does not use).
__global__ void adamw_kernel(int64_t n, const float* __restrict__ g, float* __restrict__ p,
                             float* __restrict__ m, float* __restrict__ v, AdamWStepArgs a) {
  const double one_minus_b1 = 1.0 - a.beta1, one_minus_b2 = 1.0 - a.beta2;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float gf = g[i];
    if (a.clip) gf = __double2float_rn(__dmul_rn(double(gf), a.clip_coeff));
    const double gj = gf;
    const float mj =
        __double2float_rn(__dadd_rn(__dmul_rn(a.beta1, double(m[i])), __dmul_rn(one_minus_b1, gj)));
    const float vj = __double2float_rn(
        __dadd_rn(__dmul_rn(a.beta2, double(v[i])), __dmul_rn(__dmul_rn(one_minus_b2, gj), gj)));
    m[i] = mj;
    v[i] = vj;
    const double denom = __dadd_rn(__ddiv_rn(__dsqrt_rn(double(vj)), a.bc2_sqrt), a.eps);
    p[i] = __double2float_rn(__dsub_rn(__dmul_rn(double(p[i]), a.decay),
                                       __ddiv_rn(__dmul_rn(a.step_size, double(mj)), denom)));
  }
}

}  // namespace

AdamWStepArgs adamw_step_args(const AdamWConfig& config, double lr, int64_t step, double grad_norm,
                              bool matrix) {
  AdamWStepArgs a;
  a.beta1 = config.beta1, a.beta2 = config.beta2, a.eps = config.eps;
  a.step_size = lr / (1.0 - std::pow(config.beta1, double(step)));
  a.bc2_sqrt = std::sqrt(1.0 - std::pow(config.beta2, double(step)));
  a.decay = matrix ? 1.0 - lr * config.weight_decay : 1.0;
  if (config.clip_grad > 0) {
    a.clip_coeff = config.clip_grad / (grad_norm + 1e-6);
    a.clip = a.clip_coeff < 1.0;
  }
  return a;
}

absl::Status sum_of_squares_cuda(int64_t n, const float* g, double* scratch, double* out,
                                 cudaStream_t stream) {
  FP8RL_REQUIRE(n >= 0, "sum_of_squares_cuda: n=", n);
  const int64_t blocks = (n + kNormBlockElems - 1) / kNormBlockElems;
  if (blocks > 0) {
    norm_partials_kernel<<<unsigned(blocks), kNormThreads, 0, stream>>>(n, g, scratch);
    FP8RL_CUDA_CHECK_LAUNCH();
  }
  norm_finish_kernel<<<1, kNormThreads, 0, stream>>>(blocks, scratch, out);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status adamw_step_cuda(int64_t n, const float* g, float* p, float* m, float* v,
                             const AdamWStepArgs& args, cudaStream_t stream) {
  FP8RL_REQUIRE(n >= 0, "adamw_step_cuda: n=", n);
  if (n == 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 65535);
  adamw_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(n, g, p, m, v, args);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace fp8rl
