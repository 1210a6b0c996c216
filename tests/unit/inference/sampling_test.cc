// Sampling parameters (SGLang's validation messages) and the token sampler's filters, seeds and
// distribution.
#include "inference/sampling.h"

#include <cmath>
#include <vector>

#include "absl/strings/match.h"
#include "core/random.h"
#include "model/ops/token_stats.h"
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

TEST_CASE("sampling: log_sum_exp is bitwise the trainer's log-sum-exp, chunked or not") {
  // token_stats_forward on h = one-hot rows reads the logits straight out of w's columns.
  const int64_t vocab = 5000, hidden = 8, tokens = 3;
  std::vector<float> w(size_t(vocab * hidden)), h(size_t(tokens * hidden), 0.f);
  Rng rng(3);
  for (float& x : w) x = float(4.0 * rng.normal());
  for (int64_t t = 0; t < tokens; ++t) h[size_t(t * hidden + t)] = 1.f;
  for (int64_t chunk : {int64_t(2048), int64_t(777), vocab}) {
    CAPTURE(chunk);
    std::vector<float> logits(size_t(tokens * vocab));
    lm_logits({tokens, hidden, vocab, chunk}, h.data(), w.data(), logits.data());
    const std::vector<int32_t> targets{17, 4999, 2048};
    std::vector<float> logprob(3), entropy(3), lse(3), mean(3);
    token_stats_forward({tokens, hidden, vocab, chunk}, h.data(), w.data(), targets.data(),
                        logprob.data(), entropy.data(), lse.data(), mean.data());
    for (int64_t t = 0; t < tokens; ++t) {
      const std::span<const float> row(logits.data() + t * vocab, size_t(vocab));
      CHECK(log_sum_exp(row, chunk) == lse[size_t(t)]);
      CHECK(row[size_t(targets[size_t(t)])] - log_sum_exp(row, chunk) == logprob[size_t(t)]);
    }
  }
  // One chunk is token_logprob's arithmetic.
  const std::vector<float> z{1.f, 2.f, 3.f, -1.f};
  CHECK(z[2] - log_sum_exp(z) == token_logprob(z, 2));
}

TEST_CASE("sampling: top_logprobs are the k largest by log-prob, ties by id") {
  const std::vector<float> z{1.f, 3.f, 2.f, 3.f, -1.f};
  const float lse = log_sum_exp(z);
  const std::vector<TokenLogprob> top = top_logprobs(z, lse, 3);
  REQUIRE(top.size() == 3);
  CHECK(top[0] == TokenLogprob{1, 3.f - lse});
  CHECK(top[1] == TokenLogprob{3, 3.f - lse});
  CHECK(top[2] == TokenLogprob{2, 2.f - lse});
  CHECK(top_logprobs(z, lse, 99).size() == 5);
  CHECK(top_logprobs(z, lse, 0).empty());
}

TEST_CASE("sampling: draw is sample's id") {
  const std::vector<float> z{0.5f, 2.0f, 1.0f, 1.9f, -3.f};
  SamplingParams p;
  p.temperature = 0.9;
  TokenSampler a(p, 42), b(p, 42);
  for (int i = 0; i < 20; ++i) CHECK(a.draw(z) == b.sample(z).id);
}
