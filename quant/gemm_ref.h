// Block-scaled FP8 GEMM reference: D[m][n] (+)= sum over 128-wide K blocks kb of
//   sA(m, kb) * sB(n, kb) * sum_{k in kb} A[m][k] * B[n][k]
// with fp32 accumulation inside a block and the scales applied once per block (DeepSeek-V3's
// promotion). A [m, k] and B [n, k] are row-major e4m3 ("TN": both K-contiguous, as cuBLASLt
// requires on Hopper). The three TransformerEngine GEMMs map onto it as:
//   fprop  Y[M,N]  = X[M,K] . W[N,K]^T         A = X (1x128), B = W (128x128)
//   dgrad  dX[M,K] = dY[M,N] . W[N,K]           A = dY (1x128), B = W^T [K,N] (128x128, transposed)
//   wgrad  dW[N,K] = dY^T[N,M] . X^T[K,M]^T     A = dY columnwise, B = X columnwise (1x128 each)
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "core/dtype.h"

namespace fp8rl {

enum class ScaleTile { k1x128, k128x128 };

struct GemmDesc {
  int64_t m = 0, n = 0, k = 0;
  ScaleTile a_tile = ScaleTile::k1x128;
  ScaleTile b_tile = ScaleTile::k128x128;
  // Scale layouts follow quant/block_quant.h: 1x128 scales s[kb * rows + row];
  // 128x128 scales s[(row / 128) * ld + kb] with ld = *_scale_ld (0: ceil(k/128)).
  int64_t a_scale_ld = 0;
  int64_t b_scale_ld = 0;
  DType out_dtype = DType::kBF16;  // kBF16 or kF32
  bool accumulate = false;         // D += result (gradient accumulation) instead of D = result

  // InvalidArgument naming the field: negative dims, 128x128 x 128x128 (not allowed by cuBLASLt
  // nor TE: DeepSeek-V3 saw divergence with 2D gradients), bad out_dtype, small scale_ld.
  absl::Status validate() const;
  std::string to_string() const;
};

absl::Status gemm_blockscaled_cpu(const GemmDesc& desc, const uint8_t* a, const float* a_scale_inv,
                                  const uint8_t* b, const float* b_scale_inv, void* d);

}  // namespace fp8rl
