// CUDA twins of quant/int4.h: INT4 group fake-quant (QAT forward) and compressed-tensors
// pack-quantized packing / unpacking on the device. Same Int4Desc, same bytes as the *_cpu
// functions.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "quant/int4.h"

namespace fp8rl {

// y = level * scale in desc.src_dtype. Enqueued on `stream`, not synchronised.
absl::Status int4_fake_quant_cuda(const Int4Desc& desc, const void* x, void* y,
                                  cudaStream_t stream);

// packed [rows, ceil(cols/8)] int32, scale [rows, groups] bf16 bits. Synchronises `stream` to
// report a non-finite input as InvalidArgument naming its row and column, as int4_pack_cpu does.
absl::Status int4_pack_cuda(const Int4Desc& desc, const void* x, int32_t* packed, uint16_t* scale,
                            cudaStream_t stream);
// The same, not synchronised: *first_bad (device memory, set to ~0ull by the caller) becomes the
// smallest flat index (row * cols + col) of a non-finite input, if any; the caller reads it when
// it synchronises anyway (once per bucket of tensors, say). The outputs are meaningless then.
absl::Status int4_pack_cuda_async(const Int4Desc& desc, const void* x, int32_t* packed,
                                  uint16_t* scale, unsigned long long* first_bad,
                                  cudaStream_t stream);

// out [rows, cols] = (nibble - 8) * bf16 scale as out_dtype (kF32 or kBF16). Not synchronised.
absl::Status int4_unpack_cuda(const Int4Desc& desc, const int32_t* packed, const uint16_t* scale,
                              void* out, DType out_dtype, cudaStream_t stream);

}  // namespace fp8rl
