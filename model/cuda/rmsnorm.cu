// RMSNorm forward / backward kernels (model/cuda/rmsnorm_cuda.h): one warp per row, two elements
// per lane per step; the weight gradient through the deterministic column reduction.
#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "model/cuda/kernel_util.cuh"
#include "model/cuda/rmsnorm_cuda.h"

namespace fp8rl {
namespace model_cuda {
namespace {

constexpr int kWarpsPerBlock = kThreads / 32;

// pass 1: s = x (+ residual), written to sum when fused, sum of squares; pass 2: y from s (re-read
// from sum or x: the row is still in L1/L2).
template <typename XT, bool kResidual>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_forward_kernel(int64_t rows, int64_t dim, float eps, const XT* x, const float* residual,
                           float* sum, const float* __restrict__ w, uint16_t* __restrict__ y,
                           float* __restrict__ rstd) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t base = row * dim;
  float ss = 0.f;
  for (int64_t i = 2 * lane; i < dim; i += 64) {
    float2 v = load2(x + base + i);
    if constexpr (kResidual) {
      const float2 r = load2(residual + base + i);
      v.x += r.x, v.y += r.y;
      store2(sum + base + i, v.x, v.y);
    }
    ss += v.x * v.x + v.y * v.y;
  }
  ss = warp_sum(ss);
  const float rs = 1.f / sqrtf(ss / float(dim) + eps);
  if (lane == 0) rstd[row] = rs;
  for (int64_t i = 2 * lane; i < dim; i += 64) {
    float2 v;
    if constexpr (kResidual)
      v = load2(sum + base + i);
    else
      v = load2(x + base + i);
    store_bf16x2(y + base + i, w[i] * (v.x * rs), w[i + 1] * (v.y * rs));
  }
}

template <typename XT, typename GT, bool kAccumulate>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_backward_kernel(int64_t rows, int64_t dim, const XT* __restrict__ x,
                            const float* __restrict__ w, const float* __restrict__ rstd,
                            const GT* dy, GT* dx) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t base = row * dim;
  const float rs = rstd[row];
  float dot = 0.f;
  for (int64_t i = 2 * lane; i < dim; i += 64) {
    const float2 g = load2(dy + base + i), v = load2(x + base + i);
    dot += g.x * w[i] * (v.x * rs) + g.y * w[i + 1] * (v.y * rs);
  }
  const float mean = warp_sum(dot) / float(dim);
  for (int64_t i = 2 * lane; i < dim; i += 64) {
    const float2 g = load2(dy + base + i), v = load2(x + base + i);
    float a = rs * (g.x * w[i] - v.x * rs * mean);
    float b = rs * (g.y * w[i + 1] - v.y * rs * mean);
    if constexpr (kAccumulate) {
      const float2 old = load2(dx + base + i);
      a += old.x, b += old.y;
    }
    store2(dx + base + i, a, b);
  }
}

template <typename XT, typename GT>
struct NormWeightTerm {
  const XT* x;
  const GT* dy;
  const float* rstd;
  int64_t dim;
  __device__ float operator()(int64_t r, int64_t c) const {
    return to_f32(dy[r * dim + c]) * (to_f32(x[r * dim + c]) * rstd[r]);
  }
};

template <typename XT, typename GT>
cudaError_t backward(const RmsNormDesc& d, const void* x, const float* w, const float* rstd,
                     const void* dy, void* dx, float* dw, float* partial, cudaStream_t stream) {
  const XT* xt = static_cast<const XT*>(x);
  const GT* g = static_cast<const GT*>(dy);
  // The weight gradient first: dx may overwrite dy.
  cudaError_t e =
      column_reduce(d.rows, d.dim, NormWeightTerm<XT, GT>{xt, g, rstd, d.dim}, partial, dw, stream);
  if (e != cudaSuccess) return e;
  const unsigned grid = grid_for(d.rows, kWarpsPerBlock);
  if (d.accumulate_dx)
    rmsnorm_backward_kernel<XT, GT, true>
        <<<grid, kThreads, 0, stream>>>(d.rows, d.dim, xt, w, rstd, g, static_cast<GT*>(dx));
  else
    rmsnorm_backward_kernel<XT, GT, false>
        <<<grid, kThreads, 0, stream>>>(d.rows, d.dim, xt, w, rstd, g, static_cast<GT*>(dx));
  return cudaGetLastError();
}

}  // namespace
}  // namespace model_cuda

using namespace model_cuda;

absl::Status RmsNormDesc::validate() const {
  FP8RL_REQUIRE(rows >= 0, "RmsNormDesc.rows=", rows, " must be non-negative");
  FP8RL_REQUIRE(dim > 0 && dim % 2 == 0, "RmsNormDesc.dim=", dim, " must be positive and even");
  FP8RL_REQUIRE(eps >= 0.f, "RmsNormDesc.eps=", eps, " must be non-negative");
  FP8RL_REQUIRE(x_dtype == DType::kF32 || x_dtype == DType::kBF16,
                "RmsNormDesc.x_dtype must be float32 or bfloat16");
  FP8RL_REQUIRE(grad_dtype == DType::kF32 || grad_dtype == DType::kBF16,
                "RmsNormDesc.grad_dtype must be float32 or bfloat16");
  FP8RL_REQUIRE(!accumulate_dx || grad_dtype == DType::kF32,
                "RmsNormDesc.accumulate_dx needs float32 gradients");
  return absl::OkStatus();
}

std::string RmsNormDesc::to_string() const {
  return absl::StrCat("RmsNormDesc{rows=", rows, ", dim=", dim, ", eps=", eps,
                      ", x=", std::string(dtype_name(x_dtype)),
                      ", grad=", std::string(dtype_name(grad_dtype)),
                      ", accumulate_dx=", accumulate_dx ? 1 : 0, "}");
}

absl::Status rmsnorm_forward_cuda(const RmsNormDesc& d, const void* x, const float* residual,
                                  float* sum, const float* w, uint16_t* y, float* rstd,
                                  cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  FP8RL_REQUIRE(!residual || (d.x_dtype == DType::kF32 && sum),
                "rmsnorm_forward_cuda: the fused residual add needs float32 x and a sum buffer");
  if (d.rows == 0) return absl::OkStatus();
  const unsigned grid = grid_for(d.rows, kWarpsPerBlock);
  if (d.x_dtype == DType::kBF16)
    rmsnorm_forward_kernel<uint16_t, false><<<grid, kThreads, 0, stream>>>(
        d.rows, d.dim, d.eps, static_cast<const uint16_t*>(x), nullptr, nullptr, w, y, rstd);
  else if (residual)
    rmsnorm_forward_kernel<float, true><<<grid, kThreads, 0, stream>>>(
        d.rows, d.dim, d.eps, static_cast<const float*>(x), residual, sum, w, y, rstd);
  else
    rmsnorm_forward_kernel<float, false><<<grid, kThreads, 0, stream>>>(
        d.rows, d.dim, d.eps, static_cast<const float*>(x), nullptr, nullptr, w, y, rstd);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status rmsnorm_backward_cuda(const RmsNormDesc& d, const void* x, const float* w,
                                   const float* rstd, const void* dy, void* dx, float* dw,
                                   float* partial, cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  if (d.rows == 0) return absl::OkStatus();
  const bool xf = d.x_dtype == DType::kF32, gf = d.grad_dtype == DType::kF32;
  cudaError_t e;
  if (xf && gf)
    e = backward<float, float>(d, x, w, rstd, dy, dx, dw, partial, stream);
  else if (xf)
    e = backward<float, uint16_t>(d, x, w, rstd, dy, dx, dw, partial, stream);
  else if (gf)
    e = backward<uint16_t, float>(d, x, w, rstd, dy, dx, dw, partial, stream);
  else
    e = backward<uint16_t, uint16_t>(d, x, w, rstd, dy, dx, dw, partial, stream);
  FP8RL_CUDA_CHECK(e);
  return absl::OkStatus();
}

}  // namespace fp8rl
