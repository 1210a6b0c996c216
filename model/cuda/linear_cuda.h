// The decoder's linear layers on the GPU in the two precisions the trainer runs: BF16 (cuBLASLt,
// fp32 accumulation) and TransformerEngine's FP8 blockwise recipe (fprop X 1x128 . W 128x128;
// dgrad dY 1x128 . W^T 128x128; wgrad dY^T . X with 1x128 tiles along tokens), weight gradients
// accumulated in float32. The CUDA counterpart of model/ops/linear.h.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "core/cuda/device_runtime.h"
#include "model/cuda/device_arena.h"
#include "model/ops/linear.h"
#include "quant/cuda/block_quant_cuda.h"
#include "quant/cuda/block_scaled_gemm.h"
#include "quant/scale.h"

namespace fp8rl {

// Rows of the token dimension are padded to a multiple of this (zero rows): the FP8 GEMMs need
// k = tokens % 16 in wgrad, and a few distinct padded sizes keep the GEMM plan cache small.
inline constexpr int64_t kTokenPad = 128;

// A weight W [out, in] (HF layout) on the device in the form its precision multiplies. Pointers
// into storage owned elsewhere (DeviceParams).
struct DeviceLinear {
  int64_t out = 0, in = 0;
  uint16_t* w16 = nullptr;     // BF16: W [out, in]
  uint8_t* w8 = nullptr;       // FP8: W 128x128-quantized [out, in] ...
  float* w8_scale = nullptr;   // ... scales [ceil(out/128), round_up(ceil(in/128), 4)]
  uint8_t* w8t = nullptr;      // FP8: W^T [in, out] (the dgrad operand) ...
  float* w8t_scale = nullptr;  // ... scales [ceil(in/128), round_up(ceil(out/128), 4)]
  float* grad = nullptr;       // dW [out, in] float32, accumulated
};

// Takes w's storage for `precision` (grad excluded) from `arena`.
void carve_device_linear(LinearPrecision precision, int64_t out, int64_t in, ArenaCarver& arena,
                         DeviceLinear* w);

// An activation or gradient [tokens, cols] as the precision consumes it: bf16 rows (BF16), or the
// FP8 1x128 copies: rowwise q [tokens, cols] + scales [ceil(cols/128), tokens] (fprop, dgrad),
// columnwise q_t [cols, tokens] + scales [ceil(tokens/128), cols] (wgrad).
struct LinearOperand {
  const uint16_t* bf16 = nullptr;
  const uint8_t* q = nullptr;
  const float* scale = nullptr;
  const uint8_t* q_t = nullptr;
  const float* scale_t = nullptr;
};

// Stateless besides the runtime; enqueues on the stream it is given. Not synchronised.
class LinearCuda {
 public:
  // InvalidArgument for kF32 (the CUDA backend runs bf16 or fp8 linears).
  static absl::StatusOr<LinearCuda> create(DeviceRuntime* rt, const LinearOptions& options);

  const LinearOptions& options() const { return options_; }
  bool fp8() const { return options_.precision == LinearPrecision::kFP8; }

  // Builds w's storage from W [out, in] float32 on the device (INT4 fake-quant first when the
  // options ask). `tmp`: device scratch of set_weight_scratch_floats(out, in) floats.
  absl::Status set_weight(const float* w_f32, float* tmp, const DeviceLinear& w,
                          cudaStream_t stream);
  static int64_t set_weight_scratch_floats(int64_t out, int64_t in);

  // FP8 copies of x [tokens, cols] (kF32 or kBF16) for `role`: rowwise into (q, scale) and/or
  // columnwise into (q_t, scale_t), whichever pointers are non-null, in one pass.
  absl::Status quantize(QuantRole role, int64_t tokens, int64_t cols, DType src, const void* x,
                        uint8_t* q, float* scale, uint8_t* q_t, float* scale_t,
                        cudaStream_t stream) const;

  // quantize() of the SwiGLU product silu(gate) * up of bf16 gate and up [tokens, cols], formed
  // on the way in (quantize_swiglu_1x128_cuda).
  absl::Status quantize_swiglu(QuantRole role, int64_t tokens, int64_t cols, const uint16_t* gate,
                               const uint16_t* up, uint8_t* q, float* scale, uint8_t* q_t,
                               float* scale_t, cudaStream_t stream) const;

  // The SwiGLU's backward into the rowwise and columnwise FP8 copies of dgate and dup (the
  // kBwdGrad role), from bf16 gate, up and dact [tokens, cols]
  // (quantize_swiglu_backward_1x128_cuda).
  absl::Status quantize_swiglu_backward(int64_t tokens, int64_t cols, const uint16_t* gate,
                                        const uint16_t* up, const uint16_t* dact,
                                        const Fp8Copies& dgate, const Fp8Copies& dup,
                                        cudaStream_t stream) const;

  // y [tokens, out] (+)= x . W^T, y of y_dtype (kBF16 or kF32).
  absl::Status forward(int64_t tokens, const LinearOperand& x, const DeviceLinear& w, void* y,
                       DType y_dtype, bool accumulate, cudaStream_t stream);
  // Times the GEMM algorithms forward() can use at this shape on these buffers (y is
  // overwritten) and keeps the fastest for every later forward() of the shape. Synchronises.
  absl::Status autotune_forward(int64_t tokens, const LinearOperand& x, const DeviceLinear& w,
                                void* y, DType y_dtype, cudaStream_t stream);
  // dx [tokens, in] (+)= dy . W.
  absl::Status dgrad(int64_t tokens, const LinearOperand& dy, const DeviceLinear& w, void* dx,
                     DType dx_dtype, bool accumulate, cudaStream_t stream);
  // w.grad += dy^T . x (bf16 rows, or the columnwise FP8 copies).
  absl::Status wgrad(int64_t tokens, const LinearOperand& dy, const LinearOperand& x,
                     const DeviceLinear& w, cudaStream_t stream);

 private:
  LinearCuda(DeviceRuntime* rt, const LinearOptions& o) : options_(o), bf16_(rt), fp8_(rt) {}

  LinearOptions options_;
  Bf16Gemm bf16_;
  BlockScaledGemm fp8_;
};

}  // namespace fp8rl
