// Device helpers shared by the model/cuda kernels: bf16 pairs, warp sums, launch geometry and the
// deterministic column reduction (norm weight and bias gradients).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "model/cuda/elementwise_cuda.h"
#include "quant/cuda/device_numerics.cuh"

namespace fp8rl::model_cuda {

using cuda_detail::bf16_bits_to_f32;
using cuda_detail::bf16x2_bits;

inline constexpr int kThreads = 256;

// Blocks for `items` work items of `per_block` each, capped for grid-stride loops.
inline unsigned grid_for(int64_t items, int64_t per_block = kThreads) {
  return unsigned(std::clamp<int64_t>((items + per_block - 1) / per_block, 1, int64_t(1) << 20));
}

__device__ __forceinline__ float2 load_bf16x2(const uint16_t* p) {
  const uint32_t u = *reinterpret_cast<const uint32_t*>(p);
  return make_float2(bf16_bits_to_f32(u & 0xffffu), bf16_bits_to_f32(u >> 16));
}
__device__ __forceinline__ void store_bf16x2(uint16_t* p, float lo, float hi) {
  *reinterpret_cast<uint32_t*>(p) = bf16x2_bits(lo, hi);
}
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(uint16_t v) { return bf16_bits_to_f32(v); }

// Two consecutive elements of a float32 or bf16 row as floats.
__device__ __forceinline__ float2 load2(const float* p) {
  return *reinterpret_cast<const float2*>(p);
}
__device__ __forceinline__ float2 load2(const uint16_t* p) { return load_bf16x2(p); }
__device__ __forceinline__ void store2(float* p, float lo, float hi) {
  *reinterpret_cast<float2*>(p) = make_float2(lo, hi);
}
__device__ __forceinline__ void store2(uint16_t* p, float lo, float hi) { store_bf16x2(p, lo, hi); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Column sums out[c] += sum_r term(r, c) over rows [0, rows), in a fixed order (so results do
// not change from run to run): block (32, 8) covers 32 columns, grid.y = kColumnReduceChunks
// row chunks write partial[chunk][c], then column_reduce_finish adds the chunks in order.
template <typename Term>
__global__ void __launch_bounds__(256)
    column_reduce_partial(int64_t rows, int64_t cols, Term term, float* __restrict__ partial) {
  __shared__ float acc[8][33];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  const int64_t per_chunk = (rows + gridDim.y - 1) / gridDim.y;
  const int64_t r0 = int64_t(blockIdx.y) * per_chunk, r1 = min(rows, r0 + per_chunk);
  float s = 0.f;
  if (c < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) s += term(r, c);
  acc[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float t = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) t += acc[i][threadIdx.x];
    partial[int64_t(blockIdx.y) * cols + c] = t;
  }
}

__global__ void column_reduce_finish(int64_t cols, const float* __restrict__ partial,
                                     float* __restrict__ out);

// out[c] += the sum of partial[c][0..n) in a fixed order (each thread a strided share, then a tree
// over the threads): one CTA of kThreads per c. For kernels that leave one partial sum per CTA.
__global__ void sum_partials(int64_t n, const float* __restrict__ partial, float* __restrict__ out);

template <typename Term>
cudaError_t column_reduce(int64_t rows, int64_t cols, Term term, float* partial, float* out,
                          cudaStream_t stream) {
  if (cols == 0) return cudaSuccess;
  const dim3 grid(unsigned((cols + 31) / 32), unsigned(kColumnReduceChunks));
  column_reduce_partial<<<grid, dim3(32, 8), 0, stream>>>(rows, cols, term, partial);
  column_reduce_finish<<<grid_for(cols), kThreads, 0, stream>>>(cols, partial, out);
  return cudaGetLastError();
}

}  // namespace fp8rl::model_cuda
