// Sampling parameter validation and the token sampler (inference/sampling.h).
#include "inference/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fp8rl {

absl::Status SamplingParams::validate() const {
  const auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (!(temperature >= 0.0)) return bad("temperature must be non-negative, got ", temperature, ".");
  if (!(top_p > 0.0 && top_p <= 1.0)) return bad("top_p must be in (0, 1], got ", top_p, ".");
  if (!(min_p >= 0.0 && min_p <= 1.0)) return bad("min_p must be in [0, 1], got ", min_p, ".");
  if (top_k != -1 && top_k < 1)
    return bad("top_k must be -1 (disable) or at least 1, got ", top_k, ".");
  if (!(frequency_penalty >= -2.0 && frequency_penalty <= 2.0))
    return bad("frequency_penalty must be in [-2, 2], got ", frequency_penalty, ".");
  if (!(presence_penalty >= -2.0 && presence_penalty <= 2.0))
    return bad("presence_penalty must be in [-2, 2], got ", presence_penalty, ".");
  if (!(repetition_penalty > 0.0 && repetition_penalty <= 2.0))
    return bad("repetition_penalty must be in (0, 2] (1.0 = no penalty), got ", repetition_penalty,
               ".");
  if (min_new_tokens < 0)
    return bad("min_new_tokens must be in [0, max_new_tokens], got ", min_new_tokens, ".");
  if (max_new_tokens < 0)
    return bad("max_new_tokens must be at least 0, got ", max_new_tokens, ".");
  if (min_new_tokens > max_new_tokens)
    return bad("min_new_tokens must be in [0, max_new_tokens(", max_new_tokens, ")], got ",
               min_new_tokens, ".");
  for (const auto& [id, bias] : logit_bias) {
    if (!std::isfinite(bias))
      return bad("logit_bias values must be finite, got ", bias, " for token ", id, ".");
  }
  if (n < 1) return bad("n must be at least 1, got ", n, ".");
  for (const std::string& s : stop) {
    if (s.empty()) return bad("stop strings must not be empty.");
  }
  return absl::OkStatus();
}

std::string SamplingParams::to_string() const {
  return absl::StrCat("SamplingParams{max_new_tokens=", max_new_tokens,
                      " temperature=", temperature, " top_p=", top_p, " top_k=", top_k,
                      " min_p=", min_p, " frequency_penalty=", frequency_penalty,
                      " presence_penalty=", presence_penalty,
                      " repetition_penalty=", repetition_penalty,
                      " min_new_tokens=", min_new_tokens, " logit_bias=", logit_bias.size(),
                      " n=", n, " stop_token_ids=[", absl::StrJoin(stop_token_ids, ","),
                      "] stop=[\"", absl::StrJoin(stop, "\",\""), "\"] ignore_eos=", ignore_eos,
                      " skip_special_tokens=", skip_special_tokens, " no_stop_trim=", no_stop_trim,
                      " seed=", seed ? absl::StrCat(*seed) : std::string("none"), "}");
}

float log_sum_exp(std::span<const float> logits, int64_t vocab_chunk) {
  const size_t vocab = logits.size();
  const size_t chunk = vocab_chunk > 0 ? std::min(vocab, size_t(vocab_chunk)) : vocab;
  // Running max and sum of exp(z - max), rescaled at every chunk as token_stats_forward does.
  float m = -std::numeric_limits<float>::infinity(), sum = 0.f;
  for (size_t v0 = 0; v0 < vocab; v0 += chunk) {
    const std::span<const float> z = logits.subspan(v0, std::min(chunk, vocab - v0));
    const float nm = std::max(m, *std::max_element(z.begin(), z.end()));
    const float rescale = std::exp(m - nm);  // 0 on the first chunk
    float cs = 0.f;
    for (float x : z) cs += std::exp(x - nm);
    sum = sum * rescale + cs;
    m = nm;
  }
  return m + std::log(sum);
}

SampledToken greedy_token(std::span<const float> logits, int64_t vocab_chunk) {
  const auto best = std::max_element(logits.begin(), logits.end());
  return {int32_t(best - logits.begin()), *best - log_sum_exp(logits, vocab_chunk)};
}

float token_logprob(std::span<const float> logits, int32_t id) {
  return logits[size_t(id)] - log_sum_exp(logits);
}

std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, float lse, int64_t k) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  const size_t kept = size_t(std::clamp<int64_t>(k, 0, int64_t(ids.size())));
  std::partial_sort(ids.begin(), ids.begin() + ptrdiff_t(kept), ids.end(),
                    [&](int32_t a, int32_t b) {
                      return logits[size_t(a)] > logits[size_t(b)] ||
                             (logits[size_t(a)] == logits[size_t(b)] && a < b);
                    });
  std::vector<TokenLogprob> out(kept);
  for (size_t i = 0; i < kept; ++i) out[i] = {ids[i], logits[size_t(ids[i])] - lse};
  return out;
}

SampledToken TokenSampler::sample(std::span<const float> logits) {
  const int32_t id = draw(logits);
  return {id, token_logprob(logits, id)};
}

int32_t TokenSampler::draw(std::span<const float> logits) {
  const int64_t vocab = int64_t(logits.size());
  int32_t id;
  if (params_.greedy() || params_.top_k == 1) {
    id = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  } else {
    const double inv_t = 1.0 / params_.temperature;
    const float m = *std::max_element(logits.begin(), logits.end());
    std::vector<double> p(static_cast<size_t>(vocab));
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += (p[size_t(i)] = std::exp((logits[i] - m) * inv_t));
    for (double& x : p) x /= sum;
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    int64_t kept = vocab;
    double kept_mass = 1.0;
    if (params_.top_k > 0 || params_.top_p < 1.0 || params_.min_p > 0.0) {
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return p[size_t(a)] > p[size_t(b)]; });
      const double floor = params_.min_p * p[size_t(order[0])];
      if (params_.top_k > 0) kept = std::min(kept, params_.top_k);
      double before = 0;
      kept_mass = 0;
      for (int64_t r = 0; r < kept; ++r) {
        const double pr = p[size_t(order[size_t(r)])];
        if (before > params_.top_p || pr < floor) {
          kept = r;  // probabilities fall along the order, so nothing after passes either
          break;
        }
        before += pr;
        kept_mass += pr;
      }
    }
    double u = rng_.uniform() * kept_mass;
    id = order[size_t(kept - 1)];  // rounding can leave u past the last cumulative sum
    for (int64_t r = 0; r < kept; ++r) {
      u -= p[size_t(order[size_t(r)])];
      if (u <= 0) {
        id = order[size_t(r)];
        break;
      }
    }
  }
  return id;
}

}  // namespace fp8rl
