// Block-scaled FP8 GEMM on Hopper through cuBLASLt (>= 12.9: VEC128 / BLK128x128 scale modes),
// and a BF16 GEMM through the same runtime (non-FP8 paths and the benchmark baseline).
//
// Problem: GemmDesc (quant/gemm_ref.h), D[m][n] (+)= A[m,k] . B[n,k]^T, everything row-major,
// the CUDA twin of gemm_blockscaled_cpu. cuBLASLt is column-major, so the row-major D is handed
// over as its transpose D^T[n,m] = B . A^T: cuBLAS's A is our B (TRANSA=T, lda=k), cuBLAS's B is
// our A (TRANSB=N, ldb=k), cuBLAS's m,n are our n,m. Scales follow:
//   1x128   s[kb * rows + row]            == cuBLAS VEC128_32F (outer dim contiguous)
//   128x128 s[(row / 128) * ld + kb]      == cuBLAS BLK128x128_32F when ld == roundup(L, 4),
//                                            L = ceil(k/128); any other ld is repacked into a
//                                            padded copy (stream-ordered allocation) first.
// Plans (descriptors, layouts, heuristic result) are cached by shape in the DeviceRuntime.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/cuda/device_runtime.h"
#include "quant/gemm_ref.h"

namespace fp8rl {

// A BF16 GEMM problem, same orientation as GemmDesc: D[m][n] (+)= A[m,k] . B[n,k]^T row-major.
// The `*_kmajor` flags take an operand stored the other way round, [k, rows] row-major (a linear
// layer's weight in dgrad, activations and gradients in wgrad), with no transposed copy.
struct Bf16GemmDesc {
  int64_t m = 0, n = 0, k = 0;
  DType out_dtype = DType::kBF16;  // kBF16 or kF32
  bool accumulate = false;
  bool a_kmajor = false;  // A stored as [k, m]
  bool b_kmajor = false;  // B stored as [k, n]

  absl::Status validate() const;
  std::string to_string() const;
};

// Which cuBLASLt algorithm a plan uses, for logs and benchmark JSON.
struct GemmAlgoInfo {
  int index = 0;       // in the heuristic's list (0 = its first choice)
  int candidates = 0;  // list length
  bool tuned = false;  // chosen by autotune()
  size_t workspace_bytes = 0;
  float tuned_ms = 0.f;  // autotune(): median time of the chosen algorithm
  std::string to_string() const;
};

// Thread-safe (plans lock while they are used); holds no state besides the runtime pointer.
class BlockScaledGemm {
 public:
  explicit BlockScaledGemm(DeviceRuntime* rt) : rt_(rt) {}

  // Everything the cuBLASLt path needs, checked without touching the device:
  //   FailedPrecondition: not sm_90, or cuBLASLt < 12.9;
  //   InvalidArgument naming the constraint: GemmDesc::validate(), k % 16 (FP8 lda/ldb), m and n
  //   multiples of 4 (scale layouts) and n * sizeof(out) % 16 (D's leading dimension),
  //   16-byte aligned a, b, d and scale pointers, null buffers.
  absl::Status check(const GemmDesc& desc, const void* a, const float* a_scale_inv, const void* b,
                     const float* b_scale_inv, const void* d) const;

  // Enqueues D (+)= A . B^T on `stream` (nullptr: the runtime's stream). Not synchronised.
  absl::Status run(const GemmDesc& desc, const uint8_t* a, const float* a_scale_inv,
                   const uint8_t* b, const float* b_scale_inv, void* d,
                   cudaStream_t stream = nullptr);

  // Times every candidate of the heuristic on these buffers (D is overwritten: `accumulate` is
  // ignored while timing), keeps the fastest for this shape and returns it. Synchronises. A shape
  // already tuned keeps its choice (returned without timing).
  absl::StatusOr<GemmAlgoInfo> autotune(const GemmDesc& desc, const uint8_t* a,
                                        const float* a_scale_inv, const uint8_t* b,
                                        const float* b_scale_inv, void* d,
                                        cudaStream_t stream = nullptr);

  // The plan this shape uses now (creating it if needed).
  absl::StatusOr<GemmAlgoInfo> algo(const GemmDesc& desc, const uint8_t* a,
                                    const float* a_scale_inv, const uint8_t* b,
                                    const float* b_scale_inv, void* d);

 private:
  DeviceRuntime* rt_;
};

class Bf16Gemm {
 public:
  explicit Bf16Gemm(DeviceRuntime* rt) : rt_(rt) {}
  // a [m,k], b [n,k] bf16 bits; d [m,n] of desc.out_dtype. Any alignment (the plan is chosen
  // for the pointers' alignment). Enqueued on `stream` (nullptr: the runtime's stream).
  absl::Status run(const Bf16GemmDesc& desc, const uint16_t* a, const uint16_t* b, void* d,
                   cudaStream_t stream = nullptr);
  absl::StatusOr<GemmAlgoInfo> autotune(const Bf16GemmDesc& desc, const uint16_t* a,
                                        const uint16_t* b, void* d, cudaStream_t stream = nullptr);

 private:
  DeviceRuntime* rt_;
};

}  // namespace fp8rl
