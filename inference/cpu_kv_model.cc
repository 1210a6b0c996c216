// The CPU decoder over per-sequence KV caches (inference/cpu_kv_model.h).
#include "inference/cpu_kv_model.h"

#include <algorithm>
#include <cmath>

#include "core/status.h"
#include "inference/cached_attention.h"
#include "inference/sampling.h"
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

// Per layer, rows [len, kv_heads * head_dim] of K and of V.
struct CpuKvCache final : KvCacheData {
  std::vector<std::vector<float>> k, v;
};

CpuKvCache& cpu_cache(KvCache* cache, size_t layers) {
  if (!cache->data) {
    auto d = std::make_unique<CpuKvCache>();
    d->k.resize(layers);
    d->v.resize(layers);
    cache->data = std::move(d);
  }
  return static_cast<CpuKvCache&>(*cache->data);
}

}  // namespace

absl::Status CpuKvModel::run(std::span<const KvStep> steps, KvOutput* out) {
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
    cpu_cache(s.cache, params.layers.size());
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
      CpuKvCache& data = static_cast<CpuKvCache&>(*cache.data);
      const int64_t n = int64_t(steps[s].tokens.size());
      std::vector<float>&ck = data.k[l], &cv = data.v[l];
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
  out->logits.resize(size_t(b * c.vocab_size));
  lm_logits({b, hidden, c.vocab_size, model_->options().vocab_chunk}, normed.data(), f32(head),
            out->logits.data());
  out->argmax.resize(size_t(b));
  out->argmax_logprob.resize(size_t(b));
  for (int64_t i = 0; i < b; ++i) {
    if (steps[size_t(i)].need_logits) continue;  // the engine works from the row itself
    const SampledToken g = greedy_token(
        std::span<const float>(out->logits).subspan(size_t(i * c.vocab_size), size_t(c.vocab_size)),
        vocab_chunk());
    out->argmax[size_t(i)] = g.id;
    out->argmax_logprob[size_t(i)] = g.logprob;
  }
  return absl::OkStatus();
}

absl::Status CpuKvModel::fork(const KvCache& from, KvCache* to) {
  to->len = from.len;
  to->data = from.data ? std::make_unique<CpuKvCache>(static_cast<const CpuKvCache&>(*from.data))
                       : nullptr;
  return absl::OkStatus();
}

absl::StatusOr<PromptScores> CpuKvModel::score(std::span<const int32_t> tokens, bool with_logits) {
  const ScoringBatch in = scoring_batch(tokens);
  FP8RL_ASSIGN_OR_RETURN(const DecoderForward fwd, model_->forward(in.batch, in.targets));
  PromptScores scores;
  scores.logprob.assign(fwd.logprob.begin(), fwd.logprob.end() - 1);
  if (with_logits) scores.logits = model_->logits(fwd);
  return scores;
}

}  // namespace fp8rl
