// Decoder forward over KV caches (inference/kv_forward.h).
#include "inference/kv_forward.h"

#include <algorithm>
#include <cmath>

#include "core/status.h"
#include "inference/cached_attention.h"
#include "model/ops/embedding.h"
#include "model/ops/linear.h"
#include "model/ops/rmsnorm.h"
#include "model/ops/swiglu.h"
#include "model/ops/token_stats.h"

namespace fp8rl {
namespace {

const float* f32(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

void add_into(std::vector<float>& acc, const std::vector<float>& x) {
  for (size_t i = 0; i < acc.size(); ++i) acc[i] += x[i];
}

}  // namespace

absl::Status KvForward::run(std::span<const KvStep> steps, std::vector<float>* logits) {
  const ModelConfig& c = model_->config();
  const DecoderParams& params = model_->params();
  const LinearOptions& lin = model_->options().linear;
  const int64_t hidden = c.hidden_size, heads = c.num_attention_heads;
  const int64_t kv_heads = c.num_key_value_heads, hd = c.head_dim, inter = c.intermediate_size;
  const int64_t qd = heads * hd, kvd = kv_heads * hd;
  const float eps = float(c.rms_norm_eps);

  std::vector<int32_t> tokens, positions;
  int64_t max_pos = 0;
  for (const KvStep& s : steps) {
    FP8RL_REQUIRE(s.cache != nullptr && !s.tokens.empty(), "kv forward: a step without tokens");
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      tokens.push_back(s.tokens[i]);
      positions.push_back(int32_t(s.cache->len + int64_t(i)));
    }
    max_pos = std::max<int64_t>(max_pos, s.cache->len + int64_t(s.tokens.size()));
    s.cache->k.resize(params.layers.size());
    s.cache->v.resize(params.layers.size());
  }
  const int64_t t = int64_t(tokens.size());
  const int64_t half = hd / 2, rope_positions = int64_t(rope_.cos.size()) / half;
  if (rope_positions < max_pos)
    rope_ = RopeTable::build(std::max(max_pos, 2 * rope_positions), hd, c.rope_theta);

  std::vector<float> x(size_t(t * hidden)), xn(x.size()), tmp(x.size()), rstd(size_t(t * heads));
  std::vector<float> q(size_t(t * qd)), k(size_t(t * kvd)), v(k.size()), attn(q.size());
  std::vector<float> gate(size_t(t * inter)), up(gate.size()), act(gate.size());
  std::vector<CachedAttentionSeq> seqs(steps.size());
  const CachedAttentionShape shape{heads, kv_heads, hd, float(1.0 / std::sqrt(double(hd)))};
  embedding_forward(t, hidden, tokens.data(), f32(params.embed_tokens), x.data());
  for (size_t l = 0; l < params.layers.size(); ++l) {
    const DecoderLayerParams& p = params.layers[l];
    rmsnorm_forward(t, hidden, eps, x.data(), f32(p.input_layernorm), xn.data(), rstd.data());
    FP8RL_RETURN_IF_ERROR(
        linear_forward(lin, {t, hidden, qd}, xn.data(), f32(p.q_proj), f32(p.q_bias), q.data()));
    FP8RL_RETURN_IF_ERROR(
        linear_forward(lin, {t, hidden, kvd}, xn.data(), f32(p.k_proj), f32(p.k_bias), k.data()));
    FP8RL_RETURN_IF_ERROR(
        linear_forward(lin, {t, hidden, kvd}, xn.data(), f32(p.v_proj), f32(p.v_bias), v.data()));
    if (c.qk_norm) {
      rmsnorm_forward(t * heads, hd, eps, q.data(), f32(p.q_norm), q.data(), rstd.data());
      rmsnorm_forward(t * kv_heads, hd, eps, k.data(), f32(p.k_norm), k.data(), rstd.data());
    }
    rope_apply(rope_, t, heads, positions.data(), false, q.data());
    rope_apply(rope_, t, kv_heads, positions.data(), false, k.data());
    int64_t row = 0;
    for (size_t s = 0; s < steps.size(); ++s) {
      KvCache& cache = *steps[s].cache;
      const int64_t n = int64_t(steps[s].tokens.size());
      std::vector<float>&ck = cache.k[l], &cv = cache.v[l];
      ck.insert(ck.end(), k.begin() + row * kvd, k.begin() + (row + n) * kvd);
      cv.insert(cv.end(), v.begin() + row * kvd, v.begin() + (row + n) * kvd);
      seqs[s] = {ck.data(), cv.data(), cache.len, n};
      row += n;
    }
    cached_attention_forward(shape, seqs, q.data(), attn.data());
    FP8RL_RETURN_IF_ERROR(
        linear_forward(lin, {t, qd, hidden}, attn.data(), f32(p.o_proj), nullptr, tmp.data()));
    add_into(x, tmp);
    rmsnorm_forward(t, hidden, eps, x.data(), f32(p.post_attention_layernorm), xn.data(),
                    rstd.data());
    FP8RL_RETURN_IF_ERROR(
        linear_forward(lin, {t, hidden, inter}, xn.data(), f32(p.gate_proj), nullptr, gate.data()));
    FP8RL_RETURN_IF_ERROR(
        linear_forward(lin, {t, hidden, inter}, xn.data(), f32(p.up_proj), nullptr, up.data()));
    swiglu_forward(t * inter, gate.data(), up.data(), act.data());
    FP8RL_RETURN_IF_ERROR(
        linear_forward(lin, {t, inter, hidden}, act.data(), f32(p.down_proj), nullptr, tmp.data()));
    add_into(x, tmp);
  }
  // Only each sequence's last token needs the final norm and the head.
  const int64_t b = int64_t(steps.size());
  std::vector<float> last(size_t(b * hidden)), normed(last.size());
  int64_t row = 0;
  for (size_t s = 0; s < steps.size(); ++s) {
    row += int64_t(steps[s].tokens.size());
    std::copy_n(x.begin() + (row - 1) * hidden, hidden, last.begin() + int64_t(s) * hidden);
    steps[s].cache->len += int64_t(steps[s].tokens.size());
  }
  rmsnorm_forward(b, hidden, eps, last.data(), f32(params.norm), normed.data(), rstd.data());
  const Tensor& head = c.tie_word_embeddings ? params.embed_tokens : params.lm_head;
  logits->resize(size_t(b * c.vocab_size));
  lm_logits({b, hidden, c.vocab_size, model_->options().vocab_chunk}, normed.data(), f32(head),
            logits->data());
  return absl::OkStatus();
}

}  // namespace fp8rl
