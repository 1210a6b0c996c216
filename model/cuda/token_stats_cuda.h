// CUDA twin of model/ops/token_stats.h: the LM head fused with per-token log-probabilities and
// entropies, over vocabulary chunks. Per chunk a BF16 GEMM (fp32 output) writes logits [tokens,
// chunk] and one kernel folds them into an online log-sum-exp, E[z] and the target logit; the
// backward recomputes each chunk's logits, turns them into dL/dz (bf16) and runs the two GEMMs
// that give dh and dW. Full [tokens, vocab] logits never exist.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "model/cuda/device_arena.h"
#include "model/ops/token_stats.h"
#include "quant/cuda/block_scaled_gemm.h"

namespace fp8rl {

// Device scratch of one call, taken from an arena.
struct TokenStatsScratch {
  float* logits = nullptr;      // [tokens, chunk] fp32
  uint16_t* dlogits = nullptr;  // [tokens, chunk] bf16 (backward)
  float* run_max = nullptr;     // [tokens] online state
  float* run_sum = nullptr;
  float* run_zsum = nullptr;
  float* target_logit = nullptr;

  static TokenStatsScratch carve(const TokenStatsShape& s, ArenaCarver& arena);
};

// h [tokens, hidden] bf16, w [vocab, hidden] bf16, targets [tokens] int32 (negative: none),
// all device. Writes logprob, entropy, lse and mean_logit [tokens] as token_stats_forward does.
// Enqueued on `stream`, not synchronised.
absl::Status token_stats_forward_cuda(Bf16Gemm& gemm, const TokenStatsShape& s, const uint16_t* h,
                                      const uint16_t* w, const int32_t* targets, float* logprob,
                                      float* entropy, float* lse, float* mean_logit,
                                      const TokenStatsScratch& scratch, cudaStream_t stream);

// Backward for dlogprob, dentropy [tokens] (device): dh [tokens, hidden] float32 overwritten,
// dw [vocab, hidden] float32 accumulated into.
absl::Status token_stats_backward_cuda(Bf16Gemm& gemm, const TokenStatsShape& s, const uint16_t* h,
                                       const uint16_t* w, const int32_t* targets,
                                       const float* dlogprob, const float* dentropy,
                                       const float* lse, const float* mean_logit, float* dh,
                                       float* dw, const TokenStatsScratch& scratch,
                                       cudaStream_t stream);

}  // namespace fp8rl
