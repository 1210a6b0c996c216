// The activation arena's layout (model/cuda/activation_plan.h).
#include "model/cuda/activation_plan.h"

#include <algorithm>

#include "model/cuda/elementwise_cuda.h"
#include "model/cuda/rmsnorm_cuda.h"
#include "model/cuda/rope_cuda.h"
#include "quant/block_quant.h"

namespace fp8rl {
namespace {

// Rowwise 1x128 copy of [rows, cols]: payload + scales [ceil(cols/128), rows].
Fp8Buffer rows_fp8(ArenaCarver& a, int64_t rows, int64_t cols) {
  return {a.take<uint8_t>(rows * cols), a.take<float>(ceil_div(cols, kQuantBlock) * rows)};
}
// Columnwise copy of [rows, cols]: payload [cols, rows] + scales [ceil(rows/128), cols].
Fp8Buffer cols_fp8(ArenaCarver& a, int64_t rows, int64_t cols) {
  return {a.take<uint8_t>(rows * cols), a.take<float>(ceil_div(rows, kQuantBlock) * cols)};
}

}  // namespace

PlanShape PlanShape::of(const ModelConfig& c, int64_t tokens, int64_t padded, int64_t seqs,
                        bool fp8, int64_t vocab_chunk) {
  PlanShape s;
  s.tokens = tokens, s.padded = padded, s.seqs = seqs;
  s.hidden = c.hidden_size, s.heads = c.num_attention_heads, s.kv_heads = c.num_key_value_heads;
  s.head_dim = c.head_dim, s.inter = c.intermediate_size, s.layers = c.num_hidden_layers;
  s.vocab = c.vocab_size, s.vocab_chunk = vocab_chunk;
  s.fp8 = fp8, s.qk_norm = c.qk_norm;
  return s;
}

ActivationPlan ActivationPlan::carve(const PlanShape& s, ArenaCarver& a) {
  const int64_t T = s.padded, H = s.hidden, Q = s.q(), KV = s.kv(), I = s.inter;
  ActivationPlan p;
  p.shape = s;
  p.tokens = a.take<int32_t>(T);
  p.positions = a.take<int32_t>(T);
  p.cu_seqlens = a.take<int32_t>(s.seqs + 1);
  p.targets = a.take<int32_t>(T);
  p.emb_unique = a.take<int32_t>(s.tokens);
  p.emb_seg = a.take<int32_t>(s.tokens + 1);
  p.emb_order = a.take<int32_t>(s.tokens);
  p.dlogprob = a.take<float>(T);
  p.dentropy = a.take<float>(T);

  p.layers.resize(size_t(s.layers));
  for (LayerActivations& l : p.layers) {
    l.x = a.take<float>(T * H);
    l.rstd1 = a.take<float>(T);
    l.q_raw = a.take<uint16_t>(T * Q);
    l.k_raw = a.take<uint16_t>(T * KV);
    l.v = a.take<uint16_t>(T * KV);
    if (s.qk_norm) {
      l.q_rstd = a.take<float>(T * s.heads);
      l.k_rstd = a.take<float>(T * s.kv_heads);
    }
    l.q = a.take<uint16_t>(T * Q);
    l.k = a.take<uint16_t>(T * KV);
    l.attn = a.take<uint16_t>(T * Q);
    l.lse = a.take<float>(s.tokens * s.heads);
    l.h = a.take<float>(T * H);
    l.rstd2 = a.take<float>(T);
    l.gate = a.take<uint16_t>(T * I);
    l.up = a.take<uint16_t>(T * I);
    if (s.fp8) {
      l.xn1_t = cols_fp8(a, T, H);
      l.attn_t = cols_fp8(a, T, Q);
      l.xn2_t = cols_fp8(a, T, H);
      l.act_t = cols_fp8(a, T, I);
    } else {
      l.xn1 = a.take<uint16_t>(T * H);
      l.xn2 = a.take<uint16_t>(T * H);
    }
  }
  p.x_final = a.take<float>(T * H);
  p.rstd_final = a.take<float>(T);
  p.hidden = a.take<uint16_t>(T * H);
  p.logprob = a.take<float>(T);
  p.entropy = a.take<float>(T);
  p.lse = a.take<float>(T);
  p.mean_logit = a.take<float>(T);

  const int64_t widest = std::max({H, Q, I});  // linear inputs and outputs
  if (!s.fp8) p.act = a.take<uint16_t>(T * I);
  p.proj = a.take<float>(T * H);
  p.dx = a.take<float>(T * H);
  p.dn = a.take<float>(T * H);
  if (s.fp8) {
    p.xn = a.take<uint16_t>(T * H);
    p.in_rows = rows_fp8(a, T, widest);
    p.dy_rows = rows_fp8(a, T, widest);
    p.dy_cols = cols_fp8(a, T, widest);
    p.dy2_rows = rows_fp8(a, T, I);
    p.dy2_cols = cols_fp8(a, T, I);
  } else {
    p.dy16 = a.take<uint16_t>(T * H);
  }
  p.dact = a.take<uint16_t>(T * I);
  if (!s.fp8) {
    p.dgate = a.take<uint16_t>(T * I);
    p.dup = a.take<uint16_t>(T * I);
  }
  p.dattn = a.take<uint16_t>(T * Q);
  p.dq = a.take<uint16_t>(T * Q);
  p.dk = a.take<uint16_t>(T * KV);
  p.dv = a.take<uint16_t>(T * KV);
  p.reduce = a.take<float>(std::max({column_reduce_scratch_floats(Q),  // bias gradients
                                     rmsnorm_backward_scratch_floats(H),
                                     qk_norm_rope_backward_scratch_floats(s.head_dim)}));
  p.attention_workspace = a.take_bytes(s.attention_workspace);
  p.head = TokenStatsScratch::carve({T, H, s.vocab, s.vocab_chunk}, a);
  return p;
}

}  // namespace fp8rl
