// SGLang's per-request sampling parameters (temperature, top-k, top-p, min-p, penalties, seed,
// stops), the sampler that draws one token from a row of logits, and the log-probabilities the
// trainer computes for the same row.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/random.h"

namespace fp8rl {

// Field names and defaults as SGLang's SamplingParams (reference/sglang.md §1.3).
struct SamplingParams {
  int64_t max_new_tokens = 128;
  double temperature = 1.0;  // [0, inf); below 1e-6 means greedy (argmax)
  double top_p = 1.0;        // (0, 1]
  int64_t top_k = -1;        // -1: the whole vocabulary; else >= 1
  double min_p = 0.0;        // [0, 1]
  // Penalties over the tokens generated so far (inference/logit_processors.h): frequency and
  // presence are subtracted ([-2, 2]), repetition divides positive and multiplies negative
  // logits ((0, 2]).
  double frequency_penalty = 0.0;
  double presence_penalty = 0.0;
  double repetition_penalty = 1.0;
  int64_t min_new_tokens = 0;  // stop tokens and EOS are masked until this many were generated
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token id, added to its logit)
  int64_t n = 1;                        // samples of the prompt, each its own sequence
  std::vector<int32_t> stop_token_ids;  // stop whatever ignore_eos says
  std::vector<std::string> stop;        // stop strings, checked in this order on the output text
  bool ignore_eos = false;              // do not stop at the model's EOS ids
  bool skip_special_tokens = true;      // for the output text (and stop-string matching)
  bool no_stop_trim = false;            // keep the matched stop string / token in the text
  std::optional<uint64_t> seed;         // SGLang's sampling_seed; sample i of n uses seed + i

  bool greedy() const { return temperature < 1e-6; }
  // InvalidArgument with SGLang's message naming the field ("top_p must be in (0, 1], got 0.").
  // logit_bias ids are checked against the vocabulary by check_request (inference/engine.h).
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

// A vocabulary id with a log-probability (SGLang's top-k and token_ids log-prob entries).
struct TokenLogprob {
  int32_t id = -1;
  float logprob = 0.f;
  bool operator==(const TokenLogprob&) const = default;
};

// log(sum(exp(logits))) in float32 with the arithmetic of the trainer's token_stats_forward
// (model/ops/token_stats.h): an online softmax over chunks of `vocab_chunk` columns (0: one
// chunk), so `logits[id] - log_sum_exp(logits, model vocab_chunk)` is bitwise the log-prob the
// trainer computes from the same logits.
float log_sum_exp(std::span<const float> logits, int64_t vocab_chunk = 0);

// The greedy choice: the first maximal logit, with logits[id] - log_sum_exp(logits, vocab_chunk).
SampledToken greedy_token(std::span<const float> logits, int64_t vocab_chunk);

// log_softmax(logits)[id] in float32: max, sum of exp(z - max), z[id] - (max + log(sum)).
float token_logprob(std::span<const float> logits, int32_t id);

// The k most likely ids of `logits` (log-probs logits[i] - lse), by log-prob then id; k is
// clamped to the vocabulary.
std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, float lse, int64_t k);

// Draws tokens for one sequence. Greedy: the first maximal logit. Otherwise SGLang's torch
// sampler: softmax(logits / temperature); sorted by probability (ties by id), keep the first
// top_k, those whose preceding mass is <= top_p, and those >= min_p * the largest; then one
// draw from the kept mass with this sampler's Rng. Not thread-safe (owns its Rng).
class TokenSampler {
 public:
  TokenSampler(const SamplingParams& params, uint64_t seed) : params_(params), rng_(seed) {}
  // The drawn id and its token_logprob.
  SampledToken sample(std::span<const float> logits);
  // Only the drawn id (callers that compute the log-prob from other logits: penalties change
  // what is sampled from, not the model's distribution).
  int32_t draw(std::span<const float> logits);

 private:
  SamplingParams params_;
  Rng rng_;
};

}  // namespace fp8rl
