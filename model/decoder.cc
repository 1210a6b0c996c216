// Decoder forward and backward over packed sequences (model/decoder.h).
#include "model/decoder.h"

#include <algorithm>
#include <cmath>

#include "core/status.h"
#include "model/ops/attention.h"
#include "model/ops/embedding.h"
#include "model/ops/rmsnorm.h"
#include "model/ops/swiglu.h"
#include "model/ops/token_stats.h"

namespace fp8rl {
namespace {

const float* f32(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }
float* f32(Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

void add_into(std::vector<float>& acc, const std::vector<float>& x) {
  for (size_t i = 0; i < acc.size(); ++i) acc[i] += x[i];
}

// The model's dimensions, read once from the config.
struct Dims {
  int64_t t, hidden, heads, kv_heads, head_dim, inter, q, kv;
  explicit Dims(const ModelConfig& c, int64_t tokens)
      : t(tokens),
        hidden(c.hidden_size),
        heads(c.num_attention_heads),
        kv_heads(c.num_key_value_heads),
        head_dim(c.head_dim),
        inter(c.intermediate_size),
        q(c.num_attention_heads * c.head_dim),
        kv(c.num_key_value_heads * c.head_dim) {}
};

AttentionShape attention_shape(const Dims& d, const PackedBatch& b) {
  AttentionShape s;
  s.tokens = d.t;
  s.q_heads = d.heads;
  s.kv_heads = d.kv_heads;
  s.head_dim = d.head_dim;
  s.seqs = b.num_seqs();
  s.cu_seqlens = b.cu_seqlens.data();
  s.scale = float(1.0 / std::sqrt(double(d.head_dim)));
  return s;
}

}  // namespace

absl::StatusOr<DecoderForward> Decoder::forward(const PackedBatch& batch,
                                                std::span<const int32_t> targets) const {
  FP8RL_RETURN_IF_ERROR(validate(batch, targets));
  const ModelConfig& c = config_;
  const Dims d(c, batch.num_tokens());
  const float eps = float(c.rms_norm_eps);
  const LinearOptions& lin = options_.linear;
  DecoderForward f;
  f.batch = batch;
  f.positions = batch.positions();
  f.targets.assign(targets.begin(), targets.end());
  int64_t max_len = 1;
  for (int64_t s = 0; s < batch.num_seqs(); ++s)
    max_len = std::max<int64_t>(max_len, batch.cu_seqlens[s + 1] - batch.cu_seqlens[s]);
  f.rope = RopeTable::build(max_len, d.head_dim, c.rope_theta);
  const AttentionShape attn = attention_shape(d, f.batch);

  std::vector<float> x(size_t(d.t * d.hidden)), tmp(size_t(d.t * d.hidden));
  embedding_forward(d.t, d.hidden, batch.tokens.data(), f32(params_.embed_tokens), x.data());
  f.layers.resize(params_.layers.size());
  for (size_t l = 0; l < params_.layers.size(); ++l) {
    const DecoderLayerParams& p = params_.layers[l];
    DecoderForward::Layer& a = f.layers[l];
    a.x = x;
    a.xn1.resize(x.size());
    a.rstd1.resize(size_t(d.t));
    rmsnorm_forward(d.t, d.hidden, eps, x.data(), f32(p.input_layernorm), a.xn1.data(),
                    a.rstd1.data());
    a.q_raw.resize(size_t(d.t * d.q));
    a.k_raw.resize(size_t(d.t * d.kv));
    a.v.resize(size_t(d.t * d.kv));
    FP8RL_RETURN_IF_ERROR(linear_forward(lin, {d.t, d.hidden, d.q}, a.xn1.data(), f32(p.q_proj),
                                         f32(p.q_bias), a.q_raw.data()));
    FP8RL_RETURN_IF_ERROR(linear_forward(lin, {d.t, d.hidden, d.kv}, a.xn1.data(), f32(p.k_proj),
                                         f32(p.k_bias), a.k_raw.data()));
    FP8RL_RETURN_IF_ERROR(linear_forward(lin, {d.t, d.hidden, d.kv}, a.xn1.data(), f32(p.v_proj),
                                         f32(p.v_bias), a.v.data()));
    if (!c.qk_norm) {
      a.q = a.q_raw;
      a.k = a.k_raw;
    } else {
      a.q.resize(a.q_raw.size());
      a.k.resize(a.k_raw.size());
      a.q_rstd.resize(size_t(d.t * d.heads));
      a.k_rstd.resize(size_t(d.t * d.kv_heads));
      rmsnorm_forward(d.t * d.heads, d.head_dim, eps, a.q_raw.data(), f32(p.q_norm), a.q.data(),
                      a.q_rstd.data());
      rmsnorm_forward(d.t * d.kv_heads, d.head_dim, eps, a.k_raw.data(), f32(p.k_norm), a.k.data(),
                      a.k_rstd.data());
    }
    rope_apply(f.rope, d.t, d.heads, f.positions.data(), false, a.q.data());
    rope_apply(f.rope, d.t, d.kv_heads, f.positions.data(), false, a.k.data());
    a.attn.resize(size_t(d.t * d.q));
    a.lse.resize(size_t(d.t * d.heads));
    attention_forward(attn, a.q.data(), a.k.data(), a.v.data(), a.attn.data(), a.lse.data());
    FP8RL_RETURN_IF_ERROR(linear_forward(lin, {d.t, d.q, d.hidden}, a.attn.data(), f32(p.o_proj),
                                         nullptr, tmp.data()));
    add_into(x, tmp);

    a.h = x;
    a.xn2.resize(x.size());
    a.rstd2.resize(size_t(d.t));
    rmsnorm_forward(d.t, d.hidden, eps, x.data(), f32(p.post_attention_layernorm), a.xn2.data(),
                    a.rstd2.data());
    a.gate.resize(size_t(d.t * d.inter));
    a.up.resize(size_t(d.t * d.inter));
    a.act.resize(size_t(d.t * d.inter));
    FP8RL_RETURN_IF_ERROR(linear_forward(lin, {d.t, d.hidden, d.inter}, a.xn2.data(),
                                         f32(p.gate_proj), nullptr, a.gate.data()));
    FP8RL_RETURN_IF_ERROR(linear_forward(lin, {d.t, d.hidden, d.inter}, a.xn2.data(),
                                         f32(p.up_proj), nullptr, a.up.data()));
    swiglu_forward(d.t * d.inter, a.gate.data(), a.up.data(), a.act.data());
    FP8RL_RETURN_IF_ERROR(linear_forward(lin, {d.t, d.inter, d.hidden}, a.act.data(),
                                         f32(p.down_proj), nullptr, tmp.data()));
    add_into(x, tmp);
  }
  f.x_final = std::move(x);
  f.hidden.resize(f.x_final.size());
  f.rstd_final.resize(size_t(d.t));
  rmsnorm_forward(d.t, d.hidden, eps, f.x_final.data(), f32(params_.norm), f.hidden.data(),
                  f.rstd_final.data());
  f.logprob.resize(size_t(d.t));
  f.entropy.resize(size_t(d.t));
  f.lse.resize(size_t(d.t));
  f.mean_logit.resize(size_t(d.t));
  token_stats_forward({d.t, d.hidden, c.vocab_size, options_.vocab_chunk}, f.hidden.data(),
                      f32(head()), f.targets.data(), f.logprob.data(), f.entropy.data(),
                      f.lse.data(), f.mean_logit.data());
  return f;
}

std::vector<float> Decoder::logits(const DecoderForward& f) const {
  const int64_t t = f.batch.num_tokens();
  std::vector<float> out(size_t(t * config_.vocab_size));
  lm_logits({t, config_.hidden_size, config_.vocab_size, options_.vocab_chunk}, f.hidden.data(),
            f32(head()), out.data());
  return out;
}

absl::Status Decoder::backward(const DecoderForward& f, std::span<const float> dlogprob,
                               std::span<const float> dentropy, DecoderParams* g) const {
  const ModelConfig& c = config_;
  const Dims d(c, f.batch.num_tokens());
  FP8RL_REQUIRE(int64_t(dlogprob.size()) == d.t && int64_t(dentropy.size()) == d.t,
                "decoder backward: ", dlogprob.size(), " logprob and ", dentropy.size(),
                " entropy gradients for ", d.t, " tokens");
  FP8RL_REQUIRE(g != nullptr && g->layers.size() == params_.layers.size(),
                "decoder backward: gradients must be shaped like the parameters");
  const LinearOptions& lin = options_.linear;
  const AttentionShape attn = attention_shape(d, f.batch);

  std::vector<float> dhid(size_t(d.t * d.hidden)), dx(dhid.size()), tmp(dhid.size());
  Tensor& dhead = c.tie_word_embeddings ? g->embed_tokens : g->lm_head;
  token_stats_backward({d.t, d.hidden, c.vocab_size, options_.vocab_chunk}, f.hidden.data(),
                       f32(head()), f.targets.data(), dlogprob.data(), dentropy.data(),
                       f.lse.data(), f.mean_logit.data(), dhid.data(), f32(dhead));
  rmsnorm_backward(d.t, d.hidden, f.x_final.data(), f32(params_.norm), f.rstd_final.data(),
                   dhid.data(), dx.data(), f32(g->norm));

  std::vector<float> dinter_a(size_t(d.t * d.inter)), dinter_b(dinter_a.size());
  std::vector<float> dinter_c(dinter_a.size());
  std::vector<float> dq(size_t(d.t * d.q)), dattn(dq.size());
  std::vector<float> dk(size_t(d.t * d.kv)), dv(dk.size());
  for (size_t l = params_.layers.size(); l-- > 0;) {
    const DecoderLayerParams& p = params_.layers[l];
    DecoderLayerParams& gp = g->layers[l];
    const DecoderForward::Layer& a = f.layers[l];
    // MLP: x_out = h + down(silu(gate(xn2)) * up(xn2)), xn2 = norm(h).
    FP8RL_RETURN_IF_ERROR(linear_backward(lin, {d.t, d.inter, d.hidden}, a.act.data(),
                                          f32(p.down_proj), dx.data(), dinter_a.data(),
                                          f32(gp.down_proj), nullptr));
    swiglu_backward(d.t * d.inter, a.gate.data(), a.up.data(), dinter_a.data(), dinter_b.data(),
                    dinter_c.data());
    FP8RL_RETURN_IF_ERROR(linear_backward(lin, {d.t, d.hidden, d.inter}, a.xn2.data(),
                                          f32(p.gate_proj), dinter_b.data(), dhid.data(),
                                          f32(gp.gate_proj), nullptr));
    FP8RL_RETURN_IF_ERROR(linear_backward(lin, {d.t, d.hidden, d.inter}, a.xn2.data(),
                                          f32(p.up_proj), dinter_c.data(), tmp.data(),
                                          f32(gp.up_proj), nullptr));
    add_into(dhid, tmp);
    rmsnorm_backward(d.t, d.hidden, a.h.data(), f32(p.post_attention_layernorm), a.rstd2.data(),
                     dhid.data(), tmp.data(), f32(gp.post_attention_layernorm));
    add_into(dx, tmp);

    // Attention: h = x + o(attention(rope(norm(q(xn1))), rope(norm(k(xn1))), v(xn1))).
    FP8RL_RETURN_IF_ERROR(linear_backward(lin, {d.t, d.q, d.hidden}, a.attn.data(), f32(p.o_proj),
                                          dx.data(), dattn.data(), f32(gp.o_proj), nullptr));
    attention_backward(attn, a.q.data(), a.k.data(), a.v.data(), a.attn.data(), a.lse.data(),
                       dattn.data(), dq.data(), dk.data(), dv.data());
    rope_apply(f.rope, d.t, d.heads, f.positions.data(), true, dq.data());
    rope_apply(f.rope, d.t, d.kv_heads, f.positions.data(), true, dk.data());
    if (c.qk_norm) {
      rmsnorm_backward(d.t * d.heads, d.head_dim, a.q_raw.data(), f32(p.q_norm), a.q_rstd.data(),
                       dq.data(), dq.data(), f32(gp.q_norm));
      rmsnorm_backward(d.t * d.kv_heads, d.head_dim, a.k_raw.data(), f32(p.k_norm), a.k_rstd.data(),
                       dk.data(), dk.data(), f32(gp.k_norm));
    }
    FP8RL_RETURN_IF_ERROR(linear_backward(lin, {d.t, d.hidden, d.q}, a.xn1.data(), f32(p.q_proj),
                                          dq.data(), dhid.data(), f32(gp.q_proj), f32(gp.q_bias)));
    FP8RL_RETURN_IF_ERROR(linear_backward(lin, {d.t, d.hidden, d.kv}, a.xn1.data(), f32(p.k_proj),
                                          dk.data(), tmp.data(), f32(gp.k_proj), f32(gp.k_bias)));
    add_into(dhid, tmp);
    FP8RL_RETURN_IF_ERROR(linear_backward(lin, {d.t, d.hidden, d.kv}, a.xn1.data(), f32(p.v_proj),
                                          dv.data(), tmp.data(), f32(gp.v_proj), f32(gp.v_bias)));
    add_into(dhid, tmp);
    rmsnorm_backward(d.t, d.hidden, a.x.data(), f32(p.input_layernorm), a.rstd1.data(), dhid.data(),
                     tmp.data(), f32(gp.input_layernorm));
    add_into(dx, tmp);
  }
  embedding_backward(d.t, d.hidden, c.vocab_size, f.batch.tokens.data(), dx.data(),
                     f32(g->embed_tokens));
  return absl::OkStatus();
}

}  // namespace fp8rl
