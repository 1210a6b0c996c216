// Sampling parameter validation and the token sampler (inference/sampling.h).
#include "inference/sampling.h"

#include <algorithm>
#include <cmath>
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
  if (max_new_tokens < 0)
    return bad("max_new_tokens must be at least 0, got ", max_new_tokens, ".");
  if (n < 1) return bad("n must be at least 1, got ", n, ".");
  for (const std::string& s : stop) {
    if (s.empty()) return bad("stop strings must not be empty.");
  }
  return absl::OkStatus();
}

std::string SamplingParams::to_string() const {
  return absl::StrCat("SamplingParams{max_new_tokens=", max_new_tokens,
                      " temperature=", temperature, " top_p=", top_p, " top_k=", top_k,
                      " min_p=", min_p, " n=", n, " stop_token_ids=[",
                      absl::StrJoin(stop_token_ids, ","), "] stop=[\"",
                      absl::StrJoin(stop, "\",\""), "\"] ignore_eos=", ignore_eos,
                      " skip_special_tokens=", skip_special_tokens, " no_stop_trim=", no_stop_trim,
                      " seed=", seed ? absl::StrCat(*seed) : std::string("none"), "}");
}

float token_logprob(std::span<const float> logits, int32_t id) {
  const float m = *std::max_element(logits.begin(), logits.end());
  float sum = 0.f;
  for (float z : logits) sum += std::exp(z - m);
  return logits[size_t(id)] - (m + std::log(sum));
}

SampledToken TokenSampler::sample(std::span<const float> logits) {
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
  return {id, token_logprob(logits, id)};
}

}  // namespace fp8rl
