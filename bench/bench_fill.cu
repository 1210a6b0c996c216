// Random device data for the benchmarks (never zeros: they hide wrong indexing and run faster).
#include <cstdint>

#include "bench/bench_fill.h"

namespace fp8rl::bench {
namespace {

__device__ __forceinline__ uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Approximately N(0, 1) * scale: the sum of four uniforms, centred and scaled.
__device__ __forceinline__ float gauss(uint64_t i, uint64_t seed) {
  const uint64_t h = mix(i * 0x9e3779b97f4a7c15ull + seed);
  const float u =
      float(h & 0xffff) + float((h >> 16) & 0xffff) + float((h >> 32) & 0xffff) + float(h >> 48);
  return (u * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
}

__global__ void fill_kernel(void* p, uint64_t n, uint64_t seed, float scale, bool bf16) {
  const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
  for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = gauss(i, seed) * scale;
    if (bf16)
      static_cast<uint16_t*>(p)[i] = uint16_t(__float_as_uint(v) >> 16);
    else
      static_cast<float*>(p)[i] = v;
  }
}

}  // namespace

cudaError_t fill_random(void* p, uint64_t n, bool bf16, uint64_t seed, float scale,
                        cudaStream_t stream) {
  fill_kernel<<<1024, 256, 0, stream>>>(p, n, seed, scale, bf16);
  return cudaGetLastError();
}

}  // namespace fp8rl::bench
