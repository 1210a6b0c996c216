// Every device buffer one forward + backward of a packed batch needs, carved from one arena: the
// batch itself, what the forward saves per layer for the backward, and the scratch both passes
// reuse from layer to layer. Sizes follow from (config, padded tokens, sequences, precision).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/hf_config.h"
#include "model/cuda/device_arena.h"
#include "model/cuda/token_stats_cuda.h"

namespace fp8rl {

// What an arena is planned from.
struct PlanShape {
  int64_t tokens = 0;  // real tokens
  int64_t padded = 0;  // rows of every activation: tokens rounded up to kTokenPad
  int64_t seqs = 0;    // non-empty sequences
  int64_t hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, inter = 0, layers = 0, vocab = 0;
  int64_t vocab_chunk = 0;
  bool fp8 = false;
  bool qk_norm = false;
  size_t attention_workspace = 0;  // bytes

  static PlanShape of(const ModelConfig& c, int64_t tokens, int64_t padded, int64_t seqs, bool fp8,
                      int64_t vocab_chunk);
  int64_t q() const { return heads * head_dim; }
  int64_t kv() const { return kv_heads * head_dim; }
};

// An FP8 1x128-quantized tensor: payload and scales (rowwise or columnwise layout).
struct Fp8Buffer {
  uint8_t* q = nullptr;
  float* scale = nullptr;
};

// Saved by the forward of one layer (null where the precision does not need it).
struct LayerActivations {
  float* x = nullptr;         // [padded, hidden] residual stream entering the layer
  float* rstd1 = nullptr;     // [padded] input_layernorm's 1/rms
  uint16_t* xn1 = nullptr;    // BF16: input_layernorm output (q/k/v input)
  Fp8Buffer xn1_t;            // FP8: its columnwise copy [hidden, padded]
  uint16_t* q_raw = nullptr;  // [padded, q] projections (+ bias); q, k before QK-norm
  uint16_t* k_raw = nullptr;  // [padded, kv]
  uint16_t* v = nullptr;      // [padded, kv]
  float* q_rstd = nullptr;    // [padded, heads] QK-norm statistics
  float* k_rstd = nullptr;    // [padded, kv_heads]
  uint16_t* q = nullptr;      // [padded, q] after QK-norm + RoPE (attention's inputs)
  uint16_t* k = nullptr;      // [padded, kv]
  uint16_t* attn = nullptr;   // [padded, q] attention output (o_proj input)
  float* lse = nullptr;       // [tokens, heads]
  Fp8Buffer attn_t;           // FP8: columnwise copy of attn
  float* h = nullptr;         // [padded, hidden] residual after attention
  float* rstd2 = nullptr;
  uint16_t* xn2 = nullptr;  // BF16: post_attention_layernorm output
  Fp8Buffer xn2_t;
  uint16_t* gate = nullptr;  // [padded, inter]
  uint16_t* up = nullptr;
  Fp8Buffer act_t;  // FP8: columnwise copy of the SwiGLU output (down_proj input)
};

struct ActivationPlan {
  PlanShape shape;
  // The batch, uploaded by the forward. Padding rows: token 0, position 0, target -1.
  int32_t* tokens = nullptr;      // [padded]
  int32_t* positions = nullptr;   // [padded]
  int32_t* cu_seqlens = nullptr;  // [seqs + 1]
  int32_t* targets = nullptr;     // [padded]
  int32_t* emb_unique = nullptr;  // EmbeddingScatterPlan: [tokens], [tokens + 1], [tokens]
  int32_t* emb_seg = nullptr;
  int32_t* emb_order = nullptr;
  float* dlogprob = nullptr;  // [padded], uploaded by the backward
  float* dentropy = nullptr;
  int64_t max_seqlen = 0;        // longest sequence (the attention kernels' bound)
  int64_t emb_unique_count = 0;  // distinct token ids (EmbeddingScatterPlan)

  std::vector<LayerActivations> layers;
  float* x_final = nullptr;     // [padded, hidden] last residual
  float* rstd_final = nullptr;  // [padded]
  uint16_t* hidden = nullptr;   // [padded, hidden] final norm output (LM-head input)
  float *logprob = nullptr, *entropy = nullptr, *lse = nullptr, *mean_logit = nullptr;  // [padded]

  // Forward scratch.
  uint16_t* xn = nullptr;   // FP8: a norm output before quantization [padded, hidden]
  uint16_t* act = nullptr;  // BF16: [padded, inter] SwiGLU output (recomputed by the backward)
  float* proj = nullptr;    // [padded, hidden] o_proj / down_proj output
  Fp8Buffer in_rows;        // FP8: rowwise copy of the current linear input [padded, max in]

  // Backward scratch.
  float* dx = nullptr;           // [padded, hidden] gradient of the residual stream
  float* dn = nullptr;           // [padded, hidden] gradient of a norm output (dgrad accumulator)
  uint16_t* dy16 = nullptr;      // BF16: dx as a bf16 operand (written by the norm backward)
  Fp8Buffer dy_rows, dy_cols;    // FP8: the current dY, rowwise and columnwise
  Fp8Buffer dy2_rows, dy2_cols;  // FP8: dup's copies while dgate's are in dy_rows / dy_cols
  uint16_t* dact = nullptr;      // [padded, inter]
  uint16_t *dgate = nullptr, *dup = nullptr;  // BF16: [padded, inter]
  uint16_t* dattn = nullptr;                  // [padded, q]
  uint16_t *dq = nullptr, *dk = nullptr, *dv = nullptr;
  float* reduce = nullptr;  // column reductions (norm weight and bias gradients)
  void* attention_workspace = nullptr;
  TokenStatsScratch head;

  // The layout of `s` in `arena` (measure with a null-based ArenaCarver first).
  static ActivationPlan carve(const PlanShape& s, ArenaCarver& arena);
};

}  // namespace fp8rl
