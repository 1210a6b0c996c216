// SGLang's per-request sampling parameters (temperature, top-k, top-p, min-p, seed, stops) and
// the sampler that draws one token from a row of logits.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/random.h"

namespace fp8rl {

// Field names and defaults as SGLang's SamplingParams (reference/sglang.md §1.3).
struct SamplingParams {
  int64_t max_new_tokens = 128;
  double temperature = 1.0;             // [0, inf); below 1e-6 means greedy (argmax)
  double top_p = 1.0;                   // (0, 1]
  int64_t top_k = -1;                   // -1: the whole vocabulary; else >= 1
  double min_p = 0.0;                   // [0, 1]
  int64_t n = 1;                        // samples of the prompt, each its own sequence
  std::vector<int32_t> stop_token_ids;  // stop whatever ignore_eos says
  std::vector<std::string> stop;        // stop strings, checked in this order on the output text
  bool ignore_eos = false;              // do not stop at the model's EOS ids
  bool skip_special_tokens = true;      // for the output text (and stop-string matching)
  bool no_stop_trim = false;            // keep the matched stop string / token in the text
  std::optional<uint64_t> seed;         // SGLang's sampling_seed; sample i of n uses seed + i

  bool greedy() const { return temperature < 1e-6; }
  // InvalidArgument with SGLang's message naming the field ("top_p must be in (0, 1], got 0.").
  absl::Status validate() const;
  // Every field, for logs and errors.
  std::string to_string() const;
};

struct SampledToken {
  int32_t id = -1;
  // log_softmax of the raw logits at `id` (temperature 1, no top-k/p filtering): the number the
  // trainer computes for the same token (model/ops/token_stats.h), whatever the sampling knobs.
  float logprob = 0.f;
};

// log_softmax(logits)[id] in float32: max, sum of exp(z - max), z[id] - (max + log(sum)).
float token_logprob(std::span<const float> logits, int32_t id);

// Draws tokens for one sequence. Greedy: the first maximal logit. Otherwise SGLang's torch
// sampler: softmax(logits / temperature); sorted by probability (ties by id), keep the first
// top_k, those whose preceding mass is <= top_p, and those >= min_p * the largest; then one
// draw from the kept mass with this sampler's Rng. Not thread-safe (owns its Rng).
class TokenSampler {
 public:
  TokenSampler(const SamplingParams& params, uint64_t seed) : params_(params), rng_(seed) {}
  SampledToken sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  Rng rng_;
};

}  // namespace fp8rl
