// Sampling parameters (SGLang's validation messages) and the token sampler's filters, seeds and
// distribution.
#include "inference/sampling.h"

#include <cmath>
#include <vector>

#include "absl/strings/match.h"
#include "tests/catch.h"

using namespace fp8rl;

TEST_CASE("sampling: bad params name the field") {
  const auto message = [](auto edit) {
    SamplingParams p;
    edit(p);
    const absl::Status s = p.validate();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  CHECK(SamplingParams().validate().ok());
  CHECK(message([](SamplingParams& p) { p.top_p = 0; }) == "top_p must be in (0, 1], got 0.");
  CHECK(absl::StrContains(message([](SamplingParams& p) { p.top_p = 1.5; }), "top_p"));
  CHECK(absl::StrContains(message([](SamplingParams& p) { p.temperature = -1; }), "temperature"));
  CHECK(absl::StrContains(message([](SamplingParams& p) { p.top_k = 0; }), "top_k"));
  CHECK(absl::StrContains(message([](SamplingParams& p) { p.min_p = 2; }), "min_p"));
  CHECK(absl::StrContains(message([](SamplingParams& p) { p.max_new_tokens = -1; }),
                          "max_new_tokens"));
  CHECK(absl::StrContains(message([](SamplingParams& p) { p.n = 0; }), "n must"));
  CHECK(absl::StrContains(message([](SamplingParams& p) { p.stop = {""}; }), "stop"));
  CHECK(absl::StrContains(message([](SamplingParams& p) { p.top_p = NAN; }), "top_p"));
  CHECK(absl::StrContains(SamplingParams().to_string(), "top_p=1"));
}

TEST_CASE("sampling: token_logprob is log_softmax of the raw logits") {
  const std::vector<float> z{1.f, 2.f, 3.f, -1.f};
  double sum = 0;
  for (float v : z) sum += std::exp(double(v));
  for (int i = 0; i < 4; ++i)
    CHECK(token_logprob(z, i) == Approx(z[i] - std::log(sum)).epsilon(1e-6));
}

TEST_CASE("sampling: greedy and top-k/top-p/min-p filters and seeds and the distribution") {
  const std::vector<float> z{0.5f, 2.0f, 1.0f, 1.9f, -3.f};
  const auto draw = [&](SamplingParams p, uint64_t seed, int n) {
    TokenSampler s(p, seed);
    std::vector<int32_t> ids;
    for (int i = 0; i < n; ++i) ids.push_back(s.sample(z).id);
    return ids;
  };
  SamplingParams greedy;
  greedy.temperature = 0;
  CHECK(draw(greedy, 1, 50) == std::vector<int32_t>(50, 1));
  SamplingParams k1;
  k1.top_k = 1;
  CHECK(draw(k1, 1, 50) == std::vector<int32_t>(50, 1));
  SamplingParams tiny_p;
  tiny_p.top_p = 1e-3;
  CHECK(draw(tiny_p, 2, 50) == std::vector<int32_t>(50, 1));
  SamplingParams top2;
  top2.top_k = 2;
  for (int32_t id : draw(top2, 3, 500)) CHECK((id == 1 || id == 3));
  SamplingParams minp;
  minp.min_p = 0.5;  // keeps p >= 0.5 * p(1): tokens 1, 3 and 2 (e^-1 = 0.37 < 0.5 drops 2)
  for (int32_t id : draw(minp, 4, 500)) CHECK((id == 1 || id == 3));
  SamplingParams plain;
  CHECK(draw(plain, 9, 100) == draw(plain, 9, 100));
  CHECK(draw(plain, 9, 100) != draw(plain, 10, 100));
  // Frequencies follow softmax(z / T).
  plain.temperature = 0.7;
  const int n = 40000;
  std::vector<int> count(z.size());
  for (int32_t id : draw(plain, 5, n)) ++count[size_t(id)];
  double sum = 0;
  for (float v : z) sum += std::exp(v / 0.7);
  for (size_t i = 0; i < z.size(); ++i) {
    const double p = std::exp(z[i] / 0.7) / sum;
    CHECK(std::abs(count[i] / double(n) - p) < 5 * std::sqrt(p * (1 - p) / n) + 1e-4);
  }
  // The reported log-prob ignores temperature and filters.
  TokenSampler s(top2, 7);
  const SampledToken t = s.sample(z);
  CHECK(t.logprob == token_logprob(z, t.id));
}
