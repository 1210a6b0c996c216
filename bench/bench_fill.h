// Random device data for the benchmarks.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fp8rl::bench {

// n elements of ~N(0, scale^2), as bf16 (bf16 = true) or f32, enqueued on `stream`.
cudaError_t fill_random(void* p, uint64_t n, bool bf16, uint64_t seed, float scale,
                        cudaStream_t stream);

}  // namespace fp8rl::bench
