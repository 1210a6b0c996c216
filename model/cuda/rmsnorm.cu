// RMSNorm forward / backward kernels (model/cuda/rmsnorm_cuda.h). Forward: one warp per row, two
// elements per lane per step. Backward: a CTA walks a fixed run of rows, each thread owning the
// same columns of every row, so the weight gradient accumulates in registers and leaves as one
// partial sum per CTA (then sum_partials adds them in a fixed order).
#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "model/cuda/kernel_util.cuh"
#include "model/cuda/rmsnorm_cuda.h"

namespace fp8rl {
namespace model_cuda {
namespace {

constexpr int kWarpsPerBlock = kThreads / 32;
// The backward's fixed row split: the weight gradient's summation order depends on it alone.
constexpr int64_t kBackwardBlocks = 256;

// pass 1: s = x (+ residual), written to sum when fused, sum of squares; pass 2: y from s (re-read
// from sum or x: the row is still in L1/L2).
template <bool kResidual>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_forward_kernel(int64_t rows, int64_t dim, float eps, const float* x,
                           const float* residual, float* sum, const float* __restrict__ w,
                           uint16_t* __restrict__ y, float* __restrict__ rstd) {
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

// Thread t owns the column pairs (2 (t + kThreads j), +1), j < kPairs, of every row of its CTA's
// run; the row's dot product is a CTA-wide sum (warp sums, then the warps in order).
template <bool kAccumulate, int kPairs>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_backward_kernel(int64_t rows, int64_t dim, const float* __restrict__ x,
                            const float* __restrict__ w, const float* __restrict__ rstd,
                            const float* dy, float* dx, uint16_t* __restrict__ dx16,
                            float* __restrict__ partial) {
  __shared__ float red[kWarpsPerBlock];
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  const int64_t per = (rows + gridDim.x - 1) / gridDim.x;
  const int64_t r0 = int64_t(blockIdx.x) * per, r1 = min(rows, r0 + per);
  float2 wv[kPairs], acc[kPairs];
#pragma unroll
  for (int j = 0; j < kPairs; ++j) {
    const int64_t c = 2 * (t + int64_t(kThreads) * j);
    wv[j] = c < dim ? load2(w + c) : make_float2(0.f, 0.f);
    acc[j] = make_float2(0.f, 0.f);
  }
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t base = row * dim;
    const float rs = rstd[row];
    float2 g[kPairs], v[kPairs];
    float dot = 0.f;
#pragma unroll
    for (int j = 0; j < kPairs; ++j) {
      const int64_t c = 2 * (t + int64_t(kThreads) * j);
      if (c >= dim) continue;
      g[j] = load2(dy + base + c), v[j] = load2(x + base + c);
      v[j].x *= rs, v[j].y *= rs;  // xhat
      dot += g[j].x * wv[j].x * v[j].x + g[j].y * wv[j].y * v[j].y;
    }
    dot = warp_sum(dot);
    if (lane == 0) red[warp] = dot;
    __syncthreads();
    float total = 0.f;
#pragma unroll
    for (int k = 0; k < kWarpsPerBlock; ++k) total += red[k];
    __syncthreads();  // red is rewritten by the next row
    const float mean = total / float(dim);
#pragma unroll
    for (int j = 0; j < kPairs; ++j) {
      const int64_t c = 2 * (t + int64_t(kThreads) * j);
      if (c >= dim) continue;
      float a = rs * (g[j].x * wv[j].x - v[j].x * mean);
      float b = rs * (g[j].y * wv[j].y - v[j].y * mean);
      if constexpr (kAccumulate) {
        const float2 old = load2(dx + base + c);
        a += old.x, b += old.y;
      }
      store2(dx + base + c, a, b);
      if (dx16 != nullptr) store_bf16x2(dx16 + base + c, a, b);
      acc[j].x += g[j].x * v[j].x, acc[j].y += g[j].y * v[j].y;
    }
  }
#pragma unroll
  for (int j = 0; j < kPairs; ++j) {  // partial [dim][kBackwardBlocks]
    const int64_t c = 2 * (t + int64_t(kThreads) * j);
    if (c >= dim) continue;
    partial[c * gridDim.x + blockIdx.x] = acc[j].x;
    partial[(c + 1) * gridDim.x + blockIdx.x] = acc[j].y;
  }
}

template <bool kAccumulate>
cudaError_t backward(const RmsNormDesc& d, const float* x, const float* w, const float* rstd,
                     const float* dy, float* dx, uint16_t* dx16, float* dw, float* partial,
                     cudaStream_t stream) {
  const int64_t pairs = (d.dim + 2 * kThreads - 1) / (2 * kThreads);
  const unsigned grid = unsigned(kBackwardBlocks), block = kThreads;
  if (pairs <= 1)
    rmsnorm_backward_kernel<kAccumulate, 1>
        <<<grid, block, 0, stream>>>(d.rows, d.dim, x, w, rstd, dy, dx, dx16, partial);
  else if (pairs <= 2)
    rmsnorm_backward_kernel<kAccumulate, 2>
        <<<grid, block, 0, stream>>>(d.rows, d.dim, x, w, rstd, dy, dx, dx16, partial);
  else if (pairs <= 4)
    rmsnorm_backward_kernel<kAccumulate, 4>
        <<<grid, block, 0, stream>>>(d.rows, d.dim, x, w, rstd, dy, dx, dx16, partial);
  else if (pairs <= 8)
    rmsnorm_backward_kernel<kAccumulate, 8>
        <<<grid, block, 0, stream>>>(d.rows, d.dim, x, w, rstd, dy, dx, dx16, partial);
  else
    rmsnorm_backward_kernel<kAccumulate, 16>
        <<<grid, block, 0, stream>>>(d.rows, d.dim, x, w, rstd, dy, dx, dx16, partial);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  sum_partials<<<unsigned(d.dim), kThreads, 0, stream>>>(kBackwardBlocks, partial, dw);
  return cudaGetLastError();
}

}  // namespace
}  // namespace model_cuda

using namespace model_cuda;

absl::Status RmsNormDesc::validate() const {
  FP8RL_REQUIRE(rows >= 0, "RmsNormDesc.rows=", rows, " must be non-negative");
  FP8RL_REQUIRE(dim > 0 && dim % 2 == 0 && dim <= kRmsNormMaxDim, "RmsNormDesc.dim=", dim,
                " must be positive, even and at most ", kRmsNormMaxDim);
  FP8RL_REQUIRE(eps >= 0.f, "RmsNormDesc.eps=", eps, " must be non-negative");
  return absl::OkStatus();
}

std::string RmsNormDesc::to_string() const {
  return absl::StrCat("RmsNormDesc{rows=", rows, ", dim=", dim, ", eps=", eps,
                      ", accumulate_dx=", accumulate_dx ? 1 : 0, "}");
}

int64_t rmsnorm_backward_scratch_floats(int64_t dim) { return kBackwardBlocks * dim; }

absl::Status rmsnorm_forward_cuda(const RmsNormDesc& d, const float* x, const float* residual,
                                  float* sum, const float* w, uint16_t* y, float* rstd,
                                  cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  FP8RL_REQUIRE(!residual || sum,
                "rmsnorm_forward_cuda: the fused residual add needs a sum buffer");
  if (d.rows == 0) return absl::OkStatus();
  const unsigned grid = grid_for(d.rows, kWarpsPerBlock);
  if (residual)
    rmsnorm_forward_kernel<true>
        <<<grid, kThreads, 0, stream>>>(d.rows, d.dim, d.eps, x, residual, sum, w, y, rstd);
  else
    rmsnorm_forward_kernel<false>
        <<<grid, kThreads, 0, stream>>>(d.rows, d.dim, d.eps, x, nullptr, nullptr, w, y, rstd);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status rmsnorm_backward_cuda(const RmsNormDesc& d, const float* x, const float* w,
                                   const float* rstd, const float* dy, float* dx, uint16_t* dx16,
                                   float* dw, float* partial, cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  if (d.rows == 0) return absl::OkStatus();
  FP8RL_CUDA_CHECK(d.accumulate_dx
                       ? backward<true>(d, x, w, rstd, dy, dx, dx16, dw, partial, stream)
                       : backward<false>(d, x, w, rstd, dy, dx, dx16, dw, partial, stream));
  return absl::OkStatus();
}

}  // namespace fp8rl
