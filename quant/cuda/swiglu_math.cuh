// SwiGLU's element function, shared by the model's SwiGLU kernels (model/cuda/swiglu.cu) and the
// fused SwiGLU -> FP8 quantization (quant/cuda/block_quant.cu), so that both compute the same bits.
#pragma once

namespace fp8rl::cuda_detail {

__device__ __forceinline__ float sigmoid(float g) { return 1.f / (1.f + expf(-g)); }
// silu(g) * u.
__device__ __forceinline__ float swiglu_value(float g, float u) { return g * sigmoid(g) * u; }
// The gradients of silu(g) * u given da = dL/d(silu(g) * u).
__device__ __forceinline__ float2 swiglu_grads(float g, float u, float da) {
  const float s = sigmoid(g);
  return make_float2(da * u * s * (1.f + g * (1.f - s)), da * g * s);  // (dgate, dup)
}

}  // namespace fp8rl::cuda_detail
