// CUDA twins of quant/block_quant.h: blockwise FP8 quantize, dequantize and transpose on the
// device. Same QuantDesc, same layouts, same bytes as the *_cpu functions.
//
// Every launcher validates the desc (InvalidArgument naming the field), enqueues on `stream` and
// returns without synchronising; launch errors come back as Internal. Pointers are device
// pointers; any alignment works (16-byte aligned buffers with cols % 16 == 0 take the vectorised
// path, other shapes a per-element path with the same results).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "quant/block_quant.h"

namespace fp8rl {

// 1x128 tiles: rowwise (q, scale_inv) and/or columnwise (q_t, scale_inv_t) copies, as asked by
// desc.rowwise / desc.columnwise, from one read of x. Buffers of copies not asked may be null.
absl::Status quantize_1x128_cuda(const QuantDesc& desc, const void* x, uint8_t* q, float* scale_inv,
                                 uint8_t* q_t, float* scale_inv_t, cudaStream_t stream);

// The 1x128 FP8 copies of one tensor (those desc does not ask for may be null).
struct Fp8Copies {
  uint8_t* q = nullptr;          // rowwise payload [rows, cols]
  float* scale_inv = nullptr;    // [ceil(cols/128), rows]
  uint8_t* q_t = nullptr;        // columnwise payload [cols, rows]
  float* scale_inv_t = nullptr;  // [ceil(rows/128), cols]
};

// quantize_1x128_cuda of act = bf16(silu(gate) * up) for bf16 gate and up [rows, cols] (the
// SwiGLU of the MLP, quant/cuda/swiglu_math.cuh), formed tile by tile on the way in: the same
// bytes as writing act and quantizing it, without act's round trip through device memory.
// desc.src_dtype must be kBF16.
absl::Status quantize_swiglu_1x128_cuda(const QuantDesc& desc, const void* gate, const void* up,
                                        uint8_t* q, float* scale_inv, uint8_t* q_t,
                                        float* scale_inv_t, cudaStream_t stream);

// The backward of the SwiGLU, quantized: dgate and dup, the gradients of silu(gate) * up given
// dact (bf16, [rows, cols] each), rounded to bf16 and quantized into their 1x128 copies as
// quantize_1x128_cuda would quantize them (swiglu_backward_cuda's values), without their round
// trip through device memory. desc.src_dtype must be kBF16.
absl::Status quantize_swiglu_backward_1x128_cuda(const QuantDesc& desc, const void* gate,
                                                 const void* up, const void* dact,
                                                 const Fp8Copies& dgate, const Fp8Copies& dup,
                                                 cudaStream_t stream);

// 128x128 blocks; scale_inv rows are desc.block_scale_ld() floats apart (padding left untouched).
absl::Status quantize_128x128_cuda(const QuantDesc& desc, const void* x, uint8_t* q,
                                   float* scale_inv, cudaStream_t stream);

// out = e4m3(q) * scale_inv as out_dtype (kF32 or kBF16). dequantize_1x128 reads the rowwise
// layout.
absl::Status dequantize_1x128_cuda(const QuantDesc& desc, const uint8_t* q, const float* scale_inv,
                                   void* out, DType out_dtype, cudaStream_t stream);
absl::Status dequantize_128x128_cuda(const QuantDesc& desc, const uint8_t* q,
                                     const float* scale_inv, void* out, DType out_dtype,
                                     cudaStream_t stream);

// Columnwise copy of a 128x128-quantized matrix: q_t [cols, rows], scale_inv_t
// [ceil(cols/128), ceil(rows/128)] compact (the dgrad operand).
absl::Status transpose_128x128_cuda(const QuantDesc& desc, const uint8_t* q, const float* scale_inv,
                                    uint8_t* q_t, float* scale_inv_t, cudaStream_t stream);

}  // namespace fp8rl
