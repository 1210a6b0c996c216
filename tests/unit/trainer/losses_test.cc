// slime's policy loss: each term on hand-checked inputs, reductions, micro-batch additivity,
// analytic gradients against finite differences, and bad input.
#include "trainer/losses.h"

#include <array>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "core/random.h"
#include "tests/catch.h"
#include "tests/unit/model/grad_check.h"

using namespace fp8rl;
using namespace fp8rl::test;

namespace {

// Owns the per-token vectors a PolicyLossInputs borrows.
struct LossData {
  std::vector<float> logp, entropy, old, adv, mask, rollout, ref;
  std::vector<int64_t> offsets;

  PolicyLossInputs inputs(double denominator = 0) const {
    PolicyLossInputs in;
    in.log_probs = logp;
    in.entropy = entropy;
    in.old_log_probs = old;
    in.advantages = adv;
    in.loss_mask = mask;
    in.rollout_log_probs = rollout;
    in.ref_log_probs = ref;
    in.sample_offsets = offsets;
    in.denominator = denominator;
    return in;
  }
};

// One sample of tokens with the given log-probs and old log-probs, advantage a, full mask.
LossData one_sample(std::vector<float> logp, std::vector<float> old, float a) {
  LossData d;
  const size_t n = logp.size();
  d.logp = std::move(logp);
  d.old = std::move(old);
  d.entropy.assign(n, 0.0f);
  d.adv.assign(n, a);
  d.mask.assign(n, 1.0f);
  d.offsets = {0, int64_t(n)};
  return d;
}

PolicyLossResult run(const PolicyLossConfig& c, const LossData& d, double denominator = 0) {
  auto r = policy_loss(c, d.inputs(denominator));
  REQUIRE(r.ok());
  return *std::move(r);
}

// Random inputs of `samples` samples with 1..6 tokens, some masked out, log-prob gaps within
// about ±0.6 so every clip branch is visited.
LossData random_loss_data(int samples, uint64_t seed) {
  Rng rng(seed);
  LossData d;
  d.offsets = {0};
  for (int s = 0; s < samples; ++s) {
    const int64_t len = 1 + int64_t(rng.next_u64() % 6);
    for (int64_t t = 0; t < len; ++t) {
      const float old = float(-0.2 - rng.uniform() * 3);
      d.old.push_back(old);
      d.logp.push_back(float(old + 0.6 * rng.normal()));
      d.rollout.push_back(float(old + 0.5 * rng.normal()));
      d.ref.push_back(float(old + 0.5 * rng.normal()));
      d.entropy.push_back(float(2 * rng.uniform()));
      d.adv.push_back(float(rng.normal()));
      d.mask.push_back(rng.uniform() < 0.8 ? 1.0f : 0.0f);
    }
    d.offsets.push_back(d.offsets.back() + len);
  }
  return d;
}

}  // namespace

TEST_CASE("PPO clip: clipped tokens have no gradient", "[trainer][losses]") {
  // Token 0: r = e^0.5 = 1.6487 > 1.2 with A = 1: pg = max(-1.6487, -1.2) = -1.2, clipped.
  // Token 1: r = e^-0.5 = 0.6065 < 0.8 with A = 1: pg = max(-0.6065, -0.8) = -0.6065, not clipped.
  const LossData d = one_sample({-1.0f, -2.0f}, {-1.5f, -1.5f}, 1.0f);
  const PolicyLossResult r = run(PolicyLossConfig{}, d);
  const double r1 = std::exp(-0.5);
  CHECK(r.metrics.at("pg_loss") == Approx((-1.2 - r1) / 2));
  CHECK(r.loss == Approx((-1.2 - r1) / 2));
  CHECK(r.metrics.at("pg_clipfrac") == Approx(0.5));
  CHECK(r.metrics.at("ppo_kl") == Approx((-0.5 + 0.5) / 2).margin(1e-12));
  CHECK(r.dlog_probs[0] == 0.0f);
  CHECK(r.dlog_probs[1] == Approx(-r1 / 2));
  CHECK(r.metrics.count("tis") == 0);
  CHECK(r.metrics.count("kl_loss") == 0);
  CHECK(r.metrics.count("train_rollout_logprob_abs_diff") == 0);
}

TEST_CASE("PPO clip: eps_clip_high widens the upper bound only", "[trainer][losses]") {
  PolicyLossConfig c;
  c.eps_clip_high = 0.28;
  // r = e^0.2 = 1.2214: clipped at 1.2 by eps_clip, inside 1.28 with eps_clip_high.
  const LossData d = one_sample({-1.0f}, {-1.2f}, 2.0f);
  const PolicyLossResult r = run(c, d);
  CHECK(r.loss == Approx(-2.0 * std::exp(0.2)).epsilon(1e-6));
  CHECK(r.metrics.at("pg_clipfrac") == 0.0);
  CHECK(r.dlog_probs[0] == Approx(-2.0 * std::exp(0.2)).epsilon(1e-6));
  CHECK(run(PolicyLossConfig{}, d).loss == Approx(-2.0 * 1.2));
}

TEST_CASE("dual clip bounds the loss of negative advantages", "[trainer][losses]") {
  // r = e^1.5 = 4.4817, A = -1: PPO pg = max(4.48, 1.2) = 4.48; dual clip c = 3 gives 3, no grad.
  const LossData d = one_sample({-0.5f}, {-2.0f}, -1.0f);
  PolicyLossConfig c;
  CHECK(run(c, d).loss == Approx(std::exp(1.5)).epsilon(1e-6));
  CHECK(run(c, d).dlog_probs[0] == Approx(std::exp(1.5)).epsilon(1e-6));
  c.eps_clip_c = 3.0;
  const PolicyLossResult r = run(c, d);
  CHECK(r.loss == Approx(3.0));
  CHECK(r.dlog_probs[0] == 0.0f);
  // Positive advantages are not dual-clipped.
  const LossData pos = one_sample({-2.0f}, {-0.5f}, 1.0f);
  CHECK(run(c, pos).loss == Approx(-std::exp(-1.5)).epsilon(1e-6));
}

TEST_CASE("TIS weights the policy loss by the clamped train/rollout ratio", "[trainer][losses]") {
  // old − rollout = ln 3 → weight min(3, 2) = 2 (clipped); token 1: ln 0.5 → 0.5.
  LossData d = one_sample({-1.0f, -1.0f}, {-1.0f, -1.0f}, 1.0f);
  d.rollout = {float(-1.0 - std::log(3.0)), float(-1.0 - std::log(0.5))};
  PolicyLossConfig c;
  c.use_tis = true;
  const PolicyLossResult r = run(c, d);
  CHECK(r.loss == Approx(-(2.0 + 0.5) / 2).epsilon(1e-6));
  CHECK(r.metrics.at("tis") == Approx((3.0 + 0.5) / 2).epsilon(1e-6));
  CHECK(r.metrics.at("tis_clipfrac") == Approx(0.5));
  CHECK(r.metrics.at("tis_abs") == Approx((2.0 + 0.5) / 2).epsilon(1e-6));
  CHECK(r.metrics.at("train_rollout_logprob_abs_diff") ==
        Approx((std::log(3.0) + std::log(2.0)) / 2).epsilon(1e-6));
  CHECK(r.dlog_probs[0] == Approx(-2.0 / 2).epsilon(1e-6));
  CHECK(r.dlog_probs[1] == Approx(-0.5 / 2).epsilon(1e-6));
  // The weights are bounded below by tis_clip_low.
  c.tis_clip_low = 0.8;
  CHECK(run(c, d).loss == Approx(-(2.0 + 0.8) / 2).epsilon(1e-6));
}

TEST_CASE("KL loss: k1, k2, k3 and low_var_kl", "[trainer][losses]") {
  // x = logp − ref = 0.5; A = 0 so only the KL term remains.
  LossData d = one_sample({-1.0f}, {-1.0f}, 0.0f);
  d.ref = {-1.5f};
  PolicyLossConfig c;
  c.use_kl_loss = true;
  c.kl_loss_coef = 0.1;
  struct Case {
    KlLossType type;
    double value, grad;
  };
  const double k3 = std::exp(-0.5) + 0.5 - 1.0;
  for (const Case& k : {Case{KlLossType::kK1, 0.5, 1.0}, Case{KlLossType::kK2, 0.125, 0.5},
                        Case{KlLossType::kK3, k3, 1.0 - std::exp(-0.5)},
                        Case{KlLossType::kLowVarKl, k3, 1.0 - std::exp(-0.5)}}) {
    c.kl_loss_type = k.type;
    const PolicyLossResult r = run(c, d);
    INFO("kl type " << int(k.type));
    CHECK(r.metrics.at("kl_loss") == Approx(k.value).epsilon(1e-6));
    CHECK(r.loss == Approx(0.1 * k.value).epsilon(1e-6));
    CHECK(r.dlog_probs[0] == Approx(0.1 * k.grad).epsilon(1e-6));
  }
  // low_var_kl clamps at 10 (x = -12: k3 = e^12 − 13) and its gradient vanishes there.
  d.ref = {11.0f};
  c.kl_loss_type = KlLossType::kLowVarKl;
  CHECK(run(c, d).metrics.at("kl_loss") == Approx(10.0));
  CHECK(run(c, d).dlog_probs[0] == 0.0f);
  c.kl_loss_type = KlLossType::kK3;
  CHECK(run(c, d).metrics.at("kl_loss") == Approx(std::exp(12.0) - 13.0));
  CHECK(parse_kl_loss_type("low_var_kl").value() == KlLossType::kLowVarKl);
  CHECK(!parse_kl_loss_type("kl3").ok());
}

TEST_CASE("entropy bonus lowers the loss", "[trainer][losses]") {
  LossData d = one_sample({-1.0f, -1.0f}, {-1.0f, -1.0f}, 0.0f);
  d.entropy = {1.0f, 2.0f};
  PolicyLossConfig c;
  c.entropy_coef = 0.1;
  const PolicyLossResult r = run(c, d);
  CHECK(r.metrics.at("entropy_loss") == Approx(1.5));
  CHECK(r.loss == Approx(-0.15));
  CHECK(r.dentropy[0] == Approx(-0.05));
  CHECK(r.dentropy[1] == Approx(-0.05));
}

TEST_CASE("per-sample token mean and token mean", "[trainer][losses]") {
  // Sample 0: one token, A = 2. Sample 1: three tokens, A = 1, 1, (masked) 100. Sample 2: all
  // masked (counts as a sample, contributes 0). Ratios are 1 so pg = −A.
  LossData d;
  d.logp = d.old = d.entropy = std::vector<float>(6, -1.0f);
  d.adv = {2, 1, 1, 100, 5, 5};
  d.mask = {1, 1, 1, 0, 0, 0};
  d.offsets = {0, 1, 4, 6};
  PolicyLossConfig c;
  const PolicyLossResult per_sample = run(c, d);
  CHECK(per_sample.loss == Approx((-2.0 - 1.0 + 0.0) / 3));
  CHECK(per_sample.dlog_probs[0] == Approx(-2.0 / 3));
  CHECK(per_sample.dlog_probs[1] == Approx(-1.0 / 2 / 3));
  CHECK(per_sample.dlog_probs[3] == 0.0f);
  CHECK(per_sample.dlog_probs[4] == 0.0f);
  c.aggregation = LossAggregation::kTokenMean;
  const PolicyLossResult token_mean = run(c, d);
  CHECK(token_mean.loss == Approx((-2.0 - 1.0 - 1.0) / 3));
  CHECK(token_mean.dlog_probs[1] == Approx(-1.0 / 3));
}

TEST_CASE("micro-batches with the global denominator add up to the whole batch",
          "[trainer][losses]") {
  const LossData d = random_loss_data(5, 3);
  PolicyLossConfig c;
  c.use_tis = true;
  c.use_kl_loss = true;
  c.kl_loss_coef = 0.05;
  c.entropy_coef = 0.01;
  for (LossAggregation agg : {LossAggregation::kPerSampleTokenMean, LossAggregation::kTokenMean}) {
    c.aggregation = agg;
    const PolicyLossResult whole = run(c, d);
    double denominator = 5;
    if (agg == LossAggregation::kTokenMean) {
      denominator = 0;
      for (float m : d.mask) denominator += m;
    }
    // Split after sample 2.
    const int64_t cut = d.offsets[2];
    auto slice = [&](int64_t b, int64_t e, const std::vector<float>& v) {
      return std::vector<float>(v.begin() + b, v.begin() + e);
    };
    std::map<std::string, double> sum;
    std::vector<float> grads;
    for (auto [b, e, s0, s1] : {std::array<int64_t, 4>{0, cut, 0, 2},
                                std::array<int64_t, 4>{cut, int64_t(d.logp.size()), 2, 5}}) {
      LossData part;
      part.logp = slice(b, e, d.logp);
      part.entropy = slice(b, e, d.entropy);
      part.old = slice(b, e, d.old);
      part.adv = slice(b, e, d.adv);
      part.mask = slice(b, e, d.mask);
      part.rollout = slice(b, e, d.rollout);
      part.ref = slice(b, e, d.ref);
      for (int64_t s = s0; s <= s1; ++s) part.offsets.push_back(d.offsets[s] - b);
      const PolicyLossResult r = run(c, part, denominator);
      accumulate_metrics(r.metrics, &sum);
      grads.insert(grads.end(), r.dlog_probs.begin(), r.dlog_probs.end());
    }
    for (const auto& [name, value] : whole.metrics) {
      INFO(name);
      CHECK(sum.at(name) == Approx(value).margin(1e-12));
    }
    for (size_t t = 0; t < grads.size(); ++t) CHECK(grads[t] == whole.dlog_probs[t]);
  }
}

TEST_CASE("loss gradients match finite differences", "[trainer][losses]") {
  struct Variant {
    const char* name;
    PolicyLossConfig config;
  };
  std::vector<Variant> variants(7);
  variants[0].name = "ppo clip";
  variants[1].name = "asymmetric + dual clip";
  variants[1].config.eps_clip_high = 0.28;
  variants[1].config.eps_clip_c = 1.5;
  variants[2].name = "tis";
  variants[2].config.use_tis = true;
  variants[3].name = "entropy";
  variants[3].config.entropy_coef = 0.3;
  variants[4].name = "token mean + k2";
  variants[4].config.aggregation = LossAggregation::kTokenMean;
  variants[4].config.use_kl_loss = true;
  variants[4].config.kl_loss_coef = 0.4;
  variants[4].config.kl_loss_type = KlLossType::kK2;
  variants[5].name = "low_var_kl";
  variants[5].config.use_kl_loss = true;
  variants[5].config.kl_loss_coef = 0.4;
  variants[5].config.kl_loss_type = KlLossType::kLowVarKl;
  variants[6].name = "k1 + tis + entropy";
  variants[6].config.use_kl_loss = true;
  variants[6].config.kl_loss_coef = 0.2;
  variants[6].config.use_tis = true;
  variants[6].config.entropy_coef = 0.1;
  for (const Variant& v : variants) {
    LossData d = random_loss_data(6, 11);
    const PolicyLossResult r = run(v.config, d);
    auto loss = [&] { return run(v.config, d).loss; };
    check_grad(std::string(v.name) + " d/dlogp",
               numeric_grad(d.logp.data(), d.logp.size(), loss, 1e-3f), r.dlog_probs.data(), 2e-3);
    check_grad(std::string(v.name) + " d/dentropy",
               numeric_grad(d.entropy.data(), d.entropy.size(), loss, 1e-3f), r.dentropy.data(),
               2e-3);
  }
}

TEST_CASE("bad loss inputs are rejected", "[trainer][losses]") {
  LossData d = random_loss_data(2, 5);
  PolicyLossConfig c;
  auto code = [&](const LossData& x) { return policy_loss(c, x.inputs()).status().code(); };
  CHECK(code(d) == absl::StatusCode::kOk);
  LossData short_adv = d;
  short_adv.adv.pop_back();
  CHECK(code(short_adv) == absl::StatusCode::kInvalidArgument);
  LossData bad_offsets = d;
  bad_offsets.offsets.back() += 1;
  CHECK(code(bad_offsets) == absl::StatusCode::kInvalidArgument);
  LossData no_rollout = d;
  no_rollout.rollout.clear();
  c.use_tis = true;
  const absl::Status s = policy_loss(c, no_rollout.inputs()).status();
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()).find("rollout_log_probs") != std::string::npos);
  c.use_tis = false;
  c.eps_clip_c = 0.5;
  CHECK(code(d) == absl::StatusCode::kInvalidArgument);
  c.eps_clip_c.reset();
  c.use_kl_loss = true;
  LossData no_ref = d;
  no_ref.ref.clear();
  CHECK(code(no_ref) == absl::StatusCode::kInvalidArgument);
}
