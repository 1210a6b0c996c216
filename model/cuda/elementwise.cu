// Casts, bias add / gradient and random fill (model/cuda/elementwise_cuda.h).
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "model/cuda/elementwise_cuda.h"
#include "model/cuda/kernel_util.cuh"

namespace fp8rl {
namespace model_cuda {

__global__ void column_reduce_finish(int64_t cols, const float* __restrict__ partial,
                                     float* __restrict__ out) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float s = out[c];
  for (int64_t k = 0; k < kColumnReduceChunks; ++k) s += partial[k * cols + c];
  out[c] = s;
}

__global__ void __launch_bounds__(kThreads)
    sum_partials(int64_t n, const float* __restrict__ partial, float* __restrict__ out) {
  __shared__ float acc[kThreads];
  const float* row = partial + int64_t(blockIdx.x) * n;
  float s = 0.f;
  for (int64_t k = threadIdx.x; k < n; k += kThreads) s += row[k];
  acc[threadIdx.x] = s;
  __syncthreads();
#pragma unroll
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) acc[threadIdx.x] += acc[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] += acc[0];
}

namespace {

__global__ void cast_kernel(int64_t n, const float* __restrict__ x, uint16_t* __restrict__ y) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = uint16_t(cuda_detail::f32_to_bf16_bits(x[i]));
}

__global__ void bias_add_kernel(int64_t rows, int64_t half_cols, const float* __restrict__ b,
                                uint16_t* __restrict__ y) {
  const int64_t n = rows * half_cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = 2 * (i % half_cols);
    const float2 v = load_bf16x2(y + 2 * i);
    store_bf16x2(y + 2 * i, v.x + b[c], v.y + b[c + 1]);
  }
}

struct BiasTerm {
  const uint16_t* dy;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const {
    return bf16_bits_to_f32(dy[r * cols + c]);
  }
};

// splitmix64 of (seed, i), two uniforms in (0, 1), Box-Muller.
__global__ void fill_normal_kernel(int64_t n, float* __restrict__ p, uint64_t seed, float mean,
                                   float std) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = seed + uint64_t(i) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u1 = (float(uint32_t(z >> 40)) + 0.5f) * 0x1p-24f;
    const float u2 = (float(uint32_t(z & 0xffffffu)) + 0.5f) * 0x1p-24f;
    p[i] = mean + std * sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
  }
}

}  // namespace
}  // namespace model_cuda

using namespace model_cuda;

absl::Status cast_f32_to_bf16_cuda(int64_t n, const float* x, uint16_t* y, cudaStream_t stream) {
  FP8RL_REQUIRE(n >= 0, "cast_f32_to_bf16_cuda: n=", n);
  if (n == 0) return absl::OkStatus();
  cast_kernel<<<grid_for(n), kThreads, 0, stream>>>(n, x, y);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status bias_add_cuda(int64_t rows, int64_t cols, const float* b, uint16_t* y,
                           cudaStream_t stream) {
  FP8RL_REQUIRE(rows >= 0 && cols >= 0 && cols % 2 == 0, "bias_add_cuda: rows=", rows,
                " cols=", cols, " (cols must be even)");
  if (rows * cols == 0) return absl::OkStatus();
  bias_add_kernel<<<grid_for(rows * cols / 2), kThreads, 0, stream>>>(rows, cols / 2, b, y);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status bias_grad_cuda(int64_t rows, int64_t cols, const uint16_t* dy, float* db,
                            float* partial, cudaStream_t stream) {
  FP8RL_REQUIRE(rows >= 0 && cols >= 0, "bias_grad_cuda: rows=", rows, " cols=", cols);
  FP8RL_CUDA_CHECK(column_reduce(rows, cols, BiasTerm{dy, cols}, partial, db, stream));
  return absl::OkStatus();
}

absl::Status fill_normal_cuda(int64_t n, float* p, uint64_t seed, float mean, float std,
                              cudaStream_t stream) {
  FP8RL_REQUIRE(n >= 0, "fill_normal_cuda: n=", n);
  if (n == 0) return absl::OkStatus();
  fill_normal_kernel<<<grid_for(n), kThreads, 0, stream>>>(n, p, seed, mean, std);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace fp8rl
