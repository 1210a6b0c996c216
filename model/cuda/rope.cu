// RoPE kernel (model/cuda/rope_cuda.h): one thread per rotated pair (element i and i + head_dim/2).
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "model/cuda/kernel_util.cuh"
#include "model/cuda/rmsnorm_cuda.h"
#include "model/cuda/rope_cuda.h"

namespace fp8rl {
namespace model_cuda {
namespace {

__global__ void rope_kernel(int64_t tokens, int64_t heads, int64_t half,
                            const float* __restrict__ cos, const float* __restrict__ sin,
                            const int32_t* __restrict__ positions, float sign,
                            uint16_t* __restrict__ x) {
  const int64_t n = tokens * heads * half;
  for (int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; item < n;
       item += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = item % half, th = item / half, t = th / heads;
    const int64_t tab = int64_t(positions[t]) * half + i;
    const float c = cos[tab], s = sign * sin[tab];
    uint16_t* xh = x + th * 2 * half;
    const float a = bf16_bits_to_f32(xh[i]), b = bf16_bits_to_f32(xh[i + half]);
    xh[i] = uint16_t(cuda_detail::f32_to_bf16_bits(a * c - b * s));
    xh[i + half] = uint16_t(cuda_detail::f32_to_bf16_bits(b * c + a * s));
  }
}

}  // namespace
}  // namespace model_cuda

absl::Status rope_apply_cuda(int64_t tokens, int64_t heads, int64_t head_dim, const float* cos,
                             const float* sin, const int32_t* positions, bool inverse, uint16_t* x,
                             cudaStream_t stream) {
  FP8RL_REQUIRE(tokens >= 0 && heads > 0 && head_dim > 0 && head_dim % 2 == 0,
                "rope_apply_cuda: tokens=", tokens, " heads=", heads, " head_dim=", head_dim,
                " (head_dim must be even)");
  const int64_t n = tokens * heads * (head_dim / 2);
  if (n == 0) return absl::OkStatus();
  model_cuda::rope_kernel<<<model_cuda::grid_for(n), model_cuda::kThreads, 0, stream>>>(
      tokens, heads, head_dim / 2, cos, sin, positions, inverse ? -1.f : 1.f, x);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status qk_norm_rope_cuda(int64_t tokens, int64_t heads, int64_t head_dim, double eps,
                               const uint16_t* raw, const float* norm, float* rstd,
                               const float* cos, const float* sin, const int32_t* positions,
                               uint16_t* out, cudaStream_t stream) {
  if (norm != nullptr) {
    RmsNormDesc d;
    d.rows = tokens * heads, d.dim = head_dim, d.eps = float(eps), d.x_dtype = DType::kBF16;
    FP8RL_RETURN_IF_ERROR(rmsnorm_forward_cuda(d, raw, nullptr, nullptr, norm, out, rstd, stream));
  } else {
    FP8RL_CUDA_CHECK(cudaMemcpyAsync(out, raw, size_t(tokens * heads * head_dim) * 2,
                                     cudaMemcpyDeviceToDevice, stream));
  }
  return rope_apply_cuda(tokens, heads, head_dim, cos, sin, positions, false, out, stream);
}

}  // namespace fp8rl
