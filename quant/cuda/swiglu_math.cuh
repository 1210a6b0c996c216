// SwiGLU's element function, shared by the model's SwiGLU kernels (model/cuda/swiglu.cu) and the
// fused SwiGLU -> FP8 quantization (quant/cuda/block_quant.cu), so that both compute the same bits.
#pragma once

namespace fp8rl::cuda_detail {

__device__ __forceinline__ float sigmoid(float g) { return 1.f / (1.f + expf(-g)); }
// silu(g) * u.
__device__ __forceinline__ float swiglu_value(float g, float u) { return g * sigmoid(g) * u; }

}  // namespace fp8rl::cuda_detail
