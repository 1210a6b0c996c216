// Qwen3's fused QK-norm + RoPE kernels (model/cuda/rope_cuda.h): one warp per (token, head) row;
// lane l owns the rotated pairs (i, i + head_dim/2) for i = l and i = l + 32. The normalised
// values stay in float32 between the norm and the rotation (one bf16 rounding, at the output).
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "model/cuda/kernel_util.cuh"
#include "model/cuda/rope_cuda.h"

namespace fp8rl {
namespace model_cuda {
namespace {

constexpr int kWarps = kThreads / 32;
// The backward's weight gradient: block b reduces a fixed, contiguous run of rows into
// partial[b][head_dim], so the sum's order does not depend on the device.
constexpr int64_t kQkBackwardBlocks = 512;
constexpr int kMaxPairs = 2;  // pairs a lane owns: head_dim / 2 <= 64

struct RowGeometry {
  int64_t row, half;
  int lane;
  __device__ bool owns(int j) const { return lane + 32 * j < half; }
  __device__ int64_t at(int j) const { return row * 2 * half + lane + 32 * j; }
};

__device__ __forceinline__ float2 angle(const float* cos, const float* sin,
                                        const int32_t* positions, int64_t token, int64_t half,
                                        int64_t i) {
  const int64_t tab = int64_t(positions[token]) * half + i;
  return make_float2(cos[tab], sin[tab]);
}

template <bool kNorm>
__global__ void __launch_bounds__(kThreads)
    qk_norm_rope_kernel(int64_t rows, int64_t heads, int64_t half, float eps,
                        const uint16_t* __restrict__ raw, const float* __restrict__ w,
                        float* __restrict__ rstd, const float* __restrict__ cos,
                        const float* __restrict__ sin, const int32_t* __restrict__ positions,
                        uint16_t* __restrict__ out) {
  const RowGeometry g{int64_t(blockIdx.x) * kWarps + threadIdx.x / 32, half, int(threadIdx.x % 32)};
  if (g.row >= rows) return;
  float a[kMaxPairs] = {}, b[kMaxPairs] = {}, ss = 0.f;
#pragma unroll
  for (int j = 0; j < kMaxPairs; ++j) {
    if (!g.owns(j)) continue;
    a[j] = bf16_bits_to_f32(raw[g.at(j)]), b[j] = bf16_bits_to_f32(raw[g.at(j) + half]);
    ss += a[j] * a[j] + b[j] * b[j];
  }
  if constexpr (kNorm) {
    const float rs = 1.f / sqrtf(warp_sum(ss) / float(2 * half) + eps);
    if (g.lane == 0) rstd[g.row] = rs;
#pragma unroll
    for (int j = 0; j < kMaxPairs; ++j) {
      const int64_t i = g.lane + 32 * j;
      if (g.owns(j)) a[j] = w[i] * (a[j] * rs), b[j] = w[i + half] * (b[j] * rs);
    }
  }
#pragma unroll
  for (int j = 0; j < kMaxPairs; ++j) {
    if (!g.owns(j)) continue;
    const float2 cs = angle(cos, sin, positions, g.row / heads, half, g.lane + 32 * j);
    out[g.at(j)] = uint16_t(cuda_detail::f32_to_bf16_bits(a[j] * cs.x - b[j] * cs.y));
    out[g.at(j) + half] = uint16_t(cuda_detail::f32_to_bf16_bits(b[j] * cs.x + a[j] * cs.y));
  }
}

// d (in: dL/d out, out: dL/d raw) per row: the inverse rotation, then the norm's backward in
// float32; the weight term dy * xhat of the rows a warp visits accumulates in its lanes.
template <bool kNorm>
__global__ void __launch_bounds__(kThreads)
    qk_norm_rope_backward_kernel(int64_t rows, int64_t heads, int64_t half,
                                 const uint16_t* __restrict__ raw, const float* __restrict__ w,
                                 const float* __restrict__ rstd, const float* __restrict__ cos,
                                 const float* __restrict__ sin,
                                 const int32_t* __restrict__ positions, uint16_t* d,
                                 float* __restrict__ partial) {
  __shared__ float red[kWarps][2 * 64];
  const int warp = threadIdx.x / 32;
  const int64_t per = (rows + gridDim.x - 1) / gridDim.x;
  const int64_t r0 = int64_t(blockIdx.x) * per, r1 = min(rows, r0 + per);
  float wa[kMaxPairs] = {}, wb[kMaxPairs] = {};  // weight-gradient terms of (i, i + half)
  for (int64_t row = r0 + warp; row < r1; row += kWarps) {
    const RowGeometry g{row, half, int(threadIdx.x % 32)};
    float ga[kMaxPairs] = {}, gb[kMaxPairs] = {}, xa[kMaxPairs] = {}, xb[kMaxPairs] = {};
    float dot = 0.f, rs = 0.f;
    if constexpr (kNorm) rs = rstd[row];
#pragma unroll
    for (int j = 0; j < kMaxPairs; ++j) {
      if (!g.owns(j)) continue;
      const int64_t i = g.lane + 32 * j;
      const float2 cs = angle(cos, sin, positions, row / heads, half, i);
      const float da = bf16_bits_to_f32(d[g.at(j)]), db = bf16_bits_to_f32(d[g.at(j) + half]);
      ga[j] = da * cs.x + db * cs.y, gb[j] = db * cs.x - da * cs.y;
      if constexpr (kNorm) {
        xa[j] = bf16_bits_to_f32(raw[g.at(j)]) * rs,
        xb[j] = bf16_bits_to_f32(raw[g.at(j) + half]) * rs;
        dot += ga[j] * w[i] * xa[j] + gb[j] * w[i + half] * xb[j];
      }
    }
    const float mean = kNorm ? warp_sum(dot) / float(2 * half) : 0.f;
#pragma unroll
    for (int j = 0; j < kMaxPairs; ++j) {
      if (!g.owns(j)) continue;
      float oa = ga[j], ob = gb[j];
      if constexpr (kNorm) {
        const int64_t i = g.lane + 32 * j;
        oa = rs * (ga[j] * w[i] - xa[j] * mean), ob = rs * (gb[j] * w[i + half] - xb[j] * mean);
        wa[j] += ga[j] * xa[j], wb[j] += gb[j] * xb[j];
      }
      d[g.at(j)] = uint16_t(cuda_detail::f32_to_bf16_bits(oa));
      d[g.at(j) + half] = uint16_t(cuda_detail::f32_to_bf16_bits(ob));
    }
  }
  if constexpr (kNorm) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int j = 0; j < kMaxPairs; ++j) {
      if (lane + 32 * j >= half) continue;
      red[warp][lane + 32 * j] = wa[j], red[warp][lane + 32 * j + half] = wb[j];
    }
    __syncthreads();
    if (threadIdx.x < 2 * half) {
      float s = 0.f;
#pragma unroll
      for (int k = 0; k < kWarps; ++k) s += red[k][threadIdx.x];
      partial[threadIdx.x * int64_t(gridDim.x) + blockIdx.x] = s;  // [head_dim][blocks]
    }
  }
}

absl::Status check_shape(const char* what, int64_t tokens, int64_t heads, int64_t head_dim) {
  FP8RL_REQUIRE(tokens >= 0 && heads > 0 && head_dim > 0 && head_dim % 2 == 0 &&
                    head_dim <= 2 * 32 * kMaxPairs,
                what, ": tokens=", tokens, " heads=", heads, " head_dim=", head_dim,
                " (head_dim must be even and at most ", 2 * 32 * kMaxPairs, ")");
  return absl::OkStatus();
}

}  // namespace
}  // namespace model_cuda

int64_t qk_norm_rope_backward_scratch_floats(int64_t head_dim) {
  return model_cuda::kQkBackwardBlocks * head_dim;
}

absl::Status qk_norm_rope_cuda(int64_t tokens, int64_t heads, int64_t head_dim, double eps,
                               const uint16_t* raw, const float* norm, float* rstd,
                               const float* cos, const float* sin, const int32_t* positions,
                               uint16_t* out, cudaStream_t stream) {
  using namespace model_cuda;
  FP8RL_RETURN_IF_ERROR(check_shape("qk_norm_rope_cuda", tokens, heads, head_dim));
  const int64_t rows = tokens * heads;
  if (rows == 0) return absl::OkStatus();
  const unsigned grid = grid_for(rows, kWarps);
  if (norm != nullptr)
    qk_norm_rope_kernel<true><<<grid, kThreads, 0, stream>>>(
        rows, heads, head_dim / 2, float(eps), raw, norm, rstd, cos, sin, positions, out);
  else
    qk_norm_rope_kernel<false><<<grid, kThreads, 0, stream>>>(
        rows, heads, head_dim / 2, float(eps), raw, nullptr, nullptr, cos, sin, positions, out);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status qk_norm_rope_backward_cuda(int64_t tokens, int64_t heads, int64_t head_dim,
                                        const uint16_t* raw, const float* norm, const float* rstd,
                                        const float* cos, const float* sin,
                                        const int32_t* positions, uint16_t* d, float* dnorm,
                                        float* partial, cudaStream_t stream) {
  using namespace model_cuda;
  FP8RL_RETURN_IF_ERROR(check_shape("qk_norm_rope_backward_cuda", tokens, heads, head_dim));
  const int64_t rows = tokens * heads;
  if (rows == 0) return absl::OkStatus();
  if (norm == nullptr) {
    qk_norm_rope_backward_kernel<false><<<grid_for(rows, kWarps), kThreads, 0, stream>>>(
        rows, heads, head_dim / 2, nullptr, nullptr, nullptr, cos, sin, positions, d, nullptr);
    FP8RL_CUDA_CHECK_LAUNCH();
    return absl::OkStatus();
  }
  qk_norm_rope_backward_kernel<true><<<unsigned(kQkBackwardBlocks), kThreads, 0, stream>>>(
      rows, heads, head_dim / 2, raw, norm, rstd, cos, sin, positions, d, partial);
  FP8RL_CUDA_CHECK_LAUNCH();
  sum_partials<<<unsigned(head_dim), kThreads, 0, stream>>>(kQkBackwardBlocks, partial, dnorm);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace fp8rl
