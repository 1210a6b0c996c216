// SGLang's logit processors that run before sampling: frequency, presence and repetition
// penalties over the generated tokens, the min_new_tokens mask of stop tokens, and logit_bias.
// They change what a token is drawn from, never the log-probs the engine reports (those are the
// model's own distribution, what the trainer computes).
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>

#include "inference/sampling.h"

namespace fp8rl {

// What the processors read about one sequence.
struct LogitContext {
  // How often each id occurs among the tokens generated so far (the prompt does not count, as
  // in SGLang's penalizers).
  const std::unordered_map<int32_t, int32_t>* output_counts = nullptr;
  int64_t num_output = 0;                  // tokens generated so far
  std::span<const int32_t> eos_token_ids;  // masked with params.stop_token_ids below min_new_tokens
};

// Whether apply_logit_processors would change anything for `params` (so callers can skip the
// copy of the logits row).
bool has_logit_processors(const SamplingParams& params);

// In this order: logit -= frequency_penalty * count, then -= presence_penalty if count > 0; a seen
// token's logit is divided by repetition_penalty when positive and multiplied when negative;
// stop_token_ids and EOS ids become -inf while num_output < min_new_tokens; logit_bias is
// added. Ids outside `logits` are ignored.
void apply_logit_processors(const SamplingParams& params, const LogitContext& ctx,
                            std::span<float> logits);

}  // namespace fp8rl
