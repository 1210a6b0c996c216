// CUDA whole-tensor amax: 16-byte loads, per-thread key max, warp and CTA reduction, one atomicMax
// of the key bits per CTA (keys of non-negative floats order like unsigned integers).
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "quant/cuda/amax_cuda.h"
#include "quant/cuda/device_numerics.cuh"

namespace fp8rl {
namespace {

using namespace cuda_detail;

template <bool kBF16>
__global__ void __launch_bounds__(256)
    amax_kernel(const uint8_t* __restrict__ x, int64_t n, bool vec, uint32_t* __restrict__ out) {
  constexpr int V = kBF16 ? 8 : 4;
  uint32_t key = 0;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (vec) {
    const int64_t chunks = n / V;
    for (int64_t i = tid; i < chunks; i += stride) {
      const uint4 u = ld_stream16(x + i * 16);
      const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if constexpr (kBF16) {
          key = amax_fold(key, __uint_as_float(w[j] << 16));
          key = amax_fold(key, __uint_as_float(w[j] & 0xffff0000u));
        } else {
          key = amax_fold(key, __uint_as_float(w[j]));
        }
      }
    }
  }
  for (int64_t i = (vec ? n / V * V : 0) + tid; i < n; i += stride) {
    const float v = kBF16 ? bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(x)[i])
                          : reinterpret_cast<const float*>(x)[i];
    key = amax_fold(key, v);
  }
  key = group_amax<32>(key);
  __shared__ uint32_t red[8];
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = key;
  __syncthreads();
  if (threadIdx.x == 0) {
    key = red[0];
    for (int w = 1; w < 8; ++w) key = amax_merge(key, red[w]);
    atomicMax(out, key);
  }
}

}  // namespace

absl::Status tensor_amax_cuda(DType dtype, const void* x, int64_t n, float* amax_out,
                              cudaStream_t stream) {
  FP8RL_REQUIRE(dtype == DType::kF32 || dtype == DType::kBF16,
                "tensor_amax_cuda: dtype must be float32 or bfloat16, got ",
                std::string(dtype_name(dtype)));
  FP8RL_REQUIRE(n >= 0, "tensor_amax_cuda: n=", n, " is negative");
  FP8RL_REQUIRE(amax_out != nullptr && (x != nullptr || n == 0), "tensor_amax_cuda: null buffer");
  FP8RL_REQUIRE(aligned_to_host(x, dtype_size(dtype)) && aligned_to_host(amax_out, 4),
                "tensor_amax_cuda: x and amax_out must be aligned to their element sizes");
  FP8RL_CUDA_CHECK(cudaMemsetAsync(amax_out, 0, sizeof(float), stream));
  if (n == 0) return absl::OkStatus();
  int device = 0, sms = 0;
  FP8RL_CUDA_CHECK(cudaGetDevice(&device));
  FP8RL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const bool vec = aligned16_host(x);
  const int64_t per_block = 256 * 16;
  const unsigned blocks = unsigned(
      std::max<int64_t>(1, std::min<int64_t>(int64_t(sms) * 8, (n + per_block - 1) / per_block)));
  const uint8_t* p = static_cast<const uint8_t*>(x);
  uint32_t* out = reinterpret_cast<uint32_t*>(amax_out);
  if (dtype == DType::kBF16)
    amax_kernel<true><<<blocks, 256, 0, stream>>>(p, n, vec, out);
  else
    amax_kernel<false><<<blocks, 256, 0, stream>>>(p, n, vec, out);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace fp8rl
