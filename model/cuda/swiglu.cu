// SwiGLU kernels (model/cuda/swiglu_cuda.h): two elements per thread, grid-stride.
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "model/cuda/kernel_util.cuh"
#include "model/cuda/swiglu_cuda.h"
#include "quant/cuda/swiglu_math.cuh"

namespace fp8rl {
namespace model_cuda {
namespace {

using cuda_detail::swiglu_grads;
using cuda_detail::swiglu_value;

__global__ void swiglu_forward_kernel(int64_t pairs, const uint16_t* __restrict__ gate,
                                      const uint16_t* __restrict__ up, uint16_t* __restrict__ act) {
  for (int64_t i = 2 * (int64_t(blockIdx.x) * blockDim.x + threadIdx.x); i < 2 * pairs;
       i += 2 * int64_t(gridDim.x) * blockDim.x) {
    const float2 g = load_bf16x2(gate + i), u = load_bf16x2(up + i);
    store_bf16x2(act + i, swiglu_value(g.x, u.x), swiglu_value(g.y, u.y));
  }
}

__global__ void swiglu_backward_kernel(int64_t pairs, const uint16_t* __restrict__ gate,
                                       const uint16_t* __restrict__ up, const uint16_t* dact,
                                       uint16_t* dgate, uint16_t* dup) {
  for (int64_t i = 2 * (int64_t(blockIdx.x) * blockDim.x + threadIdx.x); i < 2 * pairs;
       i += 2 * int64_t(gridDim.x) * blockDim.x) {
    const float2 g = load_bf16x2(gate + i), u = load_bf16x2(up + i), da = load_bf16x2(dact + i);
    const float2 x = swiglu_grads(g.x, u.x, da.x), y = swiglu_grads(g.y, u.y, da.y);
    store_bf16x2(dup + i, x.y, y.y);
    store_bf16x2(dgate + i, x.x, y.x);
  }
}

}  // namespace
}  // namespace model_cuda

using namespace model_cuda;

absl::Status swiglu_forward_cuda(int64_t n, const uint16_t* gate, const uint16_t* up, uint16_t* act,
                                 cudaStream_t stream) {
  FP8RL_REQUIRE(n >= 0 && n % 2 == 0, "swiglu_forward_cuda: n=", n, " must be even");
  if (n == 0) return absl::OkStatus();
  swiglu_forward_kernel<<<grid_for(n / 2), kThreads, 0, stream>>>(n / 2, gate, up, act);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status swiglu_backward_cuda(int64_t n, const uint16_t* gate, const uint16_t* up,
                                  const uint16_t* dact, uint16_t* dgate, uint16_t* dup,
                                  cudaStream_t stream) {
  FP8RL_REQUIRE(n >= 0 && n % 2 == 0, "swiglu_backward_cuda: n=", n, " must be even");
  if (n == 0) return absl::OkStatus();
  swiglu_backward_kernel<<<grid_for(n / 2), kThreads, 0, stream>>>(n / 2, gate, up, dact, dgate,
                                                                   dup);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace fp8rl
