// Penalties, the min_new_tokens mask and logit_bias (inference/logit_processors.h).
#include "inference/logit_processors.h"

#include <limits>

namespace fp8rl {

bool has_logit_processors(const SamplingParams& p) {
  return p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 || p.repetition_penalty != 1.0 ||
         p.min_new_tokens > 0 || !p.logit_bias.empty();
}

void apply_logit_processors(const SamplingParams& p, const LogitContext& ctx,
                            std::span<float> logits) {
  const auto at = [&](int32_t id) -> float* {
    return id >= 0 && size_t(id) < logits.size() ? &logits[size_t(id)] : nullptr;
  };
  if (ctx.output_counts != nullptr) {
    const float freq = float(p.frequency_penalty), pres = float(p.presence_penalty);
    const float rep = float(p.repetition_penalty);
    for (const auto& [id, count] : *ctx.output_counts) {
      float* z = at(id);
      if (z == nullptr || count <= 0) continue;
      *z -= freq * float(count);
      *z -= pres;
      if (rep != 1.f) *z = *z < 0.f ? *z * rep : *z / rep;
    }
  }
  if (ctx.num_output < p.min_new_tokens) {
    constexpr float kMasked = -std::numeric_limits<float>::infinity();
    for (int32_t id : p.stop_token_ids)
      if (float* z = at(id)) *z = kMasked;
    for (int32_t id : ctx.eos_token_ids)
      if (float* z = at(id)) *z = kMasked;
  }
  for (const auto& [id, bias] : p.logit_bias)
    if (float* z = at(id)) *z += bias;
}

}  // namespace fp8rl
