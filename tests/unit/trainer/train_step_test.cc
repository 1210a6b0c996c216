// The train step on a tiny decoder: the loss goes down, runs are bitwise deterministic, bad input
// and NaN losses leave the weights untouched, log-probs, KL to a reference, micro-batching, FP8
// parameters.
#include "trainer/train_step.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "core/random.h"
#include "core/status.h"
#include "model/tiny_model.h"
#include "quant/block_quant.h"
#include "tests/catch.h"
#include "tests/unit/model/grad_check.h"

using namespace fp8rl;

namespace {

// The shared tiny model with a 32-token context (the bad-input cases send 40 tokens).
ModelConfig small_config() {
  ModelConfig c = test::small_config();
  c.max_position_embeddings = 32;
  return c;
}

Decoder random_decoder(uint64_t seed) {
  const ModelConfig c = small_config();
  DecoderParams p = test::random_params(c, seed, 0.1);
  auto d = Decoder::create(c, std::move(p));
  FP8RL_CHECK_OK(d.status());
  return *std::move(d);
}

Trainer make_trainer(bool with_reference = false, double lr = 1e-2) {
  TrainerOptions o;
  o.lr.lr = lr;
  o.adam.weight_decay = 0.0;
  std::optional<Decoder> ref;
  if (with_reference) ref = random_decoder(7);
  auto t = Trainer::create(random_decoder(7), std::move(ref), o);
  FP8RL_CHECK_OK(t.status());
  return *std::move(t);
}

// Four samples of 5..8 tokens with responses of 3..5 tokens; advantages +1 on samples 0 and 2,
// −1 on sample 1, 0 on sample 3; the last response token of sample 2 is masked out.
std::vector<Sample> fixed_batch() {
  Rng rng(5);
  std::vector<Sample> batch;
  for (int i = 0; i < 4; ++i) {
    Sample s;
    const int prompt = 2 + i % 3, response = 3 + i % 3;
    for (int t = 0; t < prompt + response; ++t) s.tokens.push_back(int32_t(rng.next_u64() % 23));
    s.response_length = response;
    s.loss_mask.assign(size_t(response), 1.0f);
    s.advantages.assign(size_t(response), i == 3 ? 0.0f : (i == 1 ? -1.0f : 1.0f));
    s.rollout_log_probs.assign(size_t(response), -3.0f);
    batch.push_back(std::move(s));
  }
  batch[2].loss_mask.back() = 0.0f;
  return batch;
}

// Every parameter's bytes, in order.
std::vector<std::vector<char>> snapshot(Trainer& t) {
  std::vector<std::vector<char>> out;
  for (auto& [name, p] : t.policy().params().named(t.policy().config())) {
    const char* b = static_cast<const char*>(p->raw());
    out.emplace_back(b, b + p->nbytes());
  }
  return out;
}

// slime's PPO loss (per-sample token mean) of the current policy against the batch's rollout
// log-probs, computed here from compute_log_probs.
double pg_loss_vs_rollout(const Trainer& t, const std::vector<Sample>& batch, double eps) {
  auto logp = t.compute_log_probs(batch, LogProbModel::kPolicy, 4);
  FP8RL_CHECK_OK(logp.status());
  double total = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    double sum = 0, n = 0;
    for (size_t j = 0; j < (*logp)[i].size(); ++j) {
      const double r = std::exp((*logp)[i][j] - batch[i].rollout_log_probs[j]);
      const double a = batch[i].advantages[j];
      sum += batch[i].loss_mask[j] * std::max(-a * r, -a * std::clamp(r, 1 - eps, 1 + eps));
      n += batch[i].loss_mask[j];
    }
    total += sum / std::max(n, 1.0);
  }
  return total / double(batch.size());
}

}  // namespace

TEST_CASE("training on a fixed batch lowers the PPO loss", "[trainer][train_step]") {
  Trainer t = make_trainer(/*with_reference=*/false, /*lr=*/1e-3);
  std::vector<Sample> batch = fixed_batch();
  // The rollout policy is the initial policy.
  auto initial = t.compute_log_probs(batch, LogProbModel::kPolicy, 2);
  REQUIRE(initial.ok());
  for (size_t i = 0; i < batch.size(); ++i) batch[i].rollout_log_probs = (*initial)[i];
  TrainConfig config;
  config.micro_batch_size = 2;
  config.use_rollout_logprobs = true;
  config.loss.eps_clip = 5.0;  // far from the clip bounds, so each step keeps a gradient
  const double before = pg_loss_vs_rollout(t, batch, config.loss.eps_clip);
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    auto r = t.train(batch, config);
    REQUIRE(r.ok());
    REQUIRE(!r->skipped);
    if (step == 0) first = r->metrics.at("loss");
    CHECK(r->metrics.at("loss") <= last + 1e-6);
    last = r->metrics.at("loss");
    CHECK(r->metrics.at("lr") == 1e-3);
  }
  INFO("loss before " << before << ", first step " << first << ", last step " << last);
  CHECK(first == Approx(before).margin(1e-6));
  CHECK(last < first - 0.1);
  CHECK(pg_loss_vs_rollout(t, batch, config.loss.eps_clip) < last);
  CHECK(t.optimizer().steps() == 20);
}

TEST_CASE("train reports slime's metrics", "[trainer][train_step]") {
  Trainer t = make_trainer();
  TrainConfig config;
  config.loss.use_tis = true;
  config.loss.entropy_coef = 0.01;
  auto r = t.train(fixed_batch(), config);
  REQUIRE(r.ok());
  for (const char* name : {"loss", "pg_loss", "pg_clipfrac", "ppo_kl", "entropy_loss", "tis",
                           "tis_clipfrac", "train_rollout_logprob_abs_diff", "grad_norm", "lr",
                           "global_batch_size", "step_time", "tokens_per_second"}) {
    INFO(name);
    CHECK(r->metrics.count(name) == 1);
  }
  // old = the step's own log-probs: ratio 1, nothing clipped, ppo_kl 0; loss = -mean(A) - bonus.
  CHECK(r->metrics.at("ppo_kl") == 0.0);
  CHECK(r->metrics.at("pg_clipfrac") == 0.0);
  CHECK(r->metrics.at("entropy_loss") > 0);
  CHECK(r->metrics.at("global_batch_size") == 4);
  CHECK(r->metrics.at("tokens_per_second") > 0);
}

TEST_CASE("two runs with the same seeds end with bitwise equal weights", "[trainer][train_step]") {
  TrainConfig config;
  config.micro_batch_size = 3;
  config.loss.use_tis = true;
  std::vector<std::vector<std::vector<char>>> finals;
  std::vector<double> losses;
  for (int run = 0; run < 2; ++run) {
    Trainer t = make_trainer();
    for (int step = 0; step < 3; ++step) {
      auto r = t.train(fixed_batch(), config);
      REQUIRE(r.ok());
      losses.push_back(r->metrics.at("loss"));
    }
    finals.push_back(snapshot(t));
  }
  CHECK(finals[0] == finals[1]);
  for (int i = 0; i < 3; ++i) CHECK(losses[size_t(i)] == losses[size_t(i + 3)]);
}

TEST_CASE("micro-batch size does not change the step beyond rounding", "[trainer][train_step]") {
  TrainConfig config;
  std::vector<std::vector<float>> weights;
  for (int64_t mbs : {1, 4}) {
    Trainer t = make_trainer();
    config.micro_batch_size = mbs;
    auto r = t.train(fixed_batch(), config);
    REQUIRE(r.ok());
    std::vector<float> w;
    for (auto& [name, p] : t.policy().params().named(t.policy().config()))
      w.insert(w.end(), p->data<float>(), p->data<float>() + p->numel());
    weights.push_back(std::move(w));
  }
  double max_diff = 0;
  for (size_t i = 0; i < weights[0].size(); ++i)
    max_diff = std::max(max_diff, double(std::abs(weights[0][i] - weights[1][i])));
  CHECK(max_diff < 1e-5);
}

TEST_CASE("bad samples are rejected with weights and optimizer untouched",
          "[trainer][train_step]") {
  Trainer t = make_trainer();
  const auto before = snapshot(t);
  struct Case {
    const char* expect;
    void (*corrupt)(std::vector<Sample>&);
  };
  const Case cases[] = {
      {"empty", [](std::vector<Sample>& b) { b.clear(); }},
      {"sample 1: advantages", [](std::vector<Sample>& b) { b[1].advantages.pop_back(); }},
      {"sample 2: advantages[0]",
       [](std::vector<Sample>& b) {
         b[2].advantages[0] = std::numeric_limits<float>::quiet_NaN();
       }},
      {"sample 3: rollout_log_probs[1]",
       [](std::vector<Sample>& b) {
         b[3].rollout_log_probs[1] = std::numeric_limits<float>::infinity();
       }},
      {"sample 0: ref_log_probs", [](std::vector<Sample>& b) { b[0].ref_log_probs = {-1.0f}; }},
      {"sample 1: tokens[0]", [](std::vector<Sample>& b) { b[1].tokens[0] = 23; }},
      {"sample 2: tokens[1]", [](std::vector<Sample>& b) { b[2].tokens[1] = -4; }},
      {"sample 0: response_length", [](std::vector<Sample>& b) { b[0].response_length = 100; }},
      {"sample 3: loss_mask[0]", [](std::vector<Sample>& b) { b[3].loss_mask[0] = 0.5f; }},
      {"sample 1: tokens has 40", [](std::vector<Sample>& b) { b[1].tokens.resize(40, 1); }},
  };
  for (const Case& c : cases) {
    std::vector<Sample> batch = fixed_batch();
    c.corrupt(batch);
    auto r = t.train(batch, TrainConfig{});
    INFO(c.expect << " -> " << r.status().ToString());
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(r.status().message(), c.expect));
  }
  // A KL loss with neither reference log-probs nor a reference model.
  TrainConfig kl;
  kl.loss.use_kl_loss = true;
  CHECK(t.train(fixed_batch(), kl).status().code() == absl::StatusCode::kInvalidArgument);
  TrainConfig zero_mbs;
  zero_mbs.micro_batch_size = 0;
  CHECK(t.train(fixed_batch(), zero_mbs).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(snapshot(t) == before);
  CHECK(t.optimizer().steps() == 0);
}

TEST_CASE("a NaN loss skips the update", "[trainer][train_step]") {
  Trainer t = make_trainer();
  t.policy().params().norm.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  const auto before = snapshot(t);
  auto r = t.train(fixed_batch(), TrainConfig{});
  REQUIRE(r.ok());
  CHECK(r->skipped);
  CHECK(r->skip_reason == "non-finite loss");
  CHECK(std::isnan(r->metrics.at("loss")));
  CHECK(t.optimizer().steps() == 0);
  CHECK(snapshot(t) == before);
}

TEST_CASE("log-probs of packed samples equal those of single samples", "[trainer][train_step]") {
  const Trainer t = make_trainer();
  const std::vector<Sample> batch = fixed_batch();
  auto packed = t.compute_log_probs(batch, LogProbModel::kPolicy, 4);
  REQUIRE(packed.ok());
  for (size_t i = 0; i < batch.size(); ++i) {
    auto one = t.compute_log_probs({batch[i]}, LogProbModel::kPolicy, 1);
    REQUIRE(one.ok());
    REQUIRE((*one)[0].size() == size_t(batch[i].response_length));
    for (size_t j = 0; j < (*one)[0].size(); ++j) {
      CHECK((*packed)[i][j] == Approx((*one)[0][j]).margin(1e-5));
      CHECK((*packed)[i][j] < 0);
    }
  }
  CHECK(t.compute_log_probs(batch, LogProbModel::kReference, 1).status().code() ==
        absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("KL loss against a reference model equal to the policy starts at zero",
          "[trainer][train_step]") {
  Trainer t = make_trainer(/*with_reference=*/true);
  TrainConfig config;
  config.loss.use_kl_loss = true;
  config.loss.kl_loss_coef = 0.5;
  config.loss.kl_loss_type = KlLossType::kLowVarKl;
  auto first = t.train(fixed_batch(), config);
  REQUIRE(first.ok());
  CHECK(first->metrics.at("kl_loss") == Approx(0.0).margin(1e-12));
  auto second = t.train(fixed_batch(), config);
  REQUIRE(second.ok());
  CHECK(second->metrics.at("kl_loss") > 0);
  // Given ref_log_probs take precedence over the reference model.
  std::vector<Sample> batch = fixed_batch();
  auto ref = t.compute_log_probs(batch, LogProbModel::kReference, 4);
  REQUIRE(ref.ok());
  for (size_t i = 0; i < batch.size(); ++i) batch[i].ref_log_probs = (*ref)[i];
  Trainer no_ref = make_trainer();
  auto with_given = no_ref.train(batch, config);
  REQUIRE(with_given.ok());
  CHECK(with_given->metrics.at("kl_loss") == Approx(0.0).margin(1e-12));
}

TEST_CASE("fp8 param gather keeps linear weights on the FP8 grid of the masters",
          "[trainer][train_step]") {
  DecoderOptions fp8;
  fp8.linear.precision = LinearPrecision::kFP8;
  auto make = [&](bool gather) {
    Decoder d = random_decoder(7);
    d.set_options(fp8);
    TrainerOptions o;
    o.lr.lr = 1e-2;
    o.fp8_param_gather = gather;
    auto t = Trainer::create(std::move(d), std::nullopt, o);
    FP8RL_CHECK_OK(t.status());
    return *std::move(t);
  };
  Trainer cached = make(true), per_call = make(false);
  for (int step = 0; step < 3; ++step) {
    auto a = cached.train(fixed_batch(), TrainConfig{});
    auto b = per_call.train(fixed_batch(), TrainConfig{});
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    // The cache replaces the per-call quantization of the same fp32 master: bitwise the same step.
    CHECK(a->metrics.at("loss") == b->metrics.at("loss"));
    CHECK(a->metrics.at("grad_norm") == b->metrics.at("grad_norm"));
  }
  // Linear weights are dequantize(quantize_128x128(master)); everything else is the master.
  std::map<std::string, Tensor> masters;
  for (auto& [name, t] : cached.optimizer().named_state())
    if (absl::EndsWith(name, ".master")) masters[name.substr(0, name.size() - 7)] = t;
  int linears = 0;
  for (auto& [name, p] : cached.policy().params().named(cached.policy().config())) {
    INFO(name);
    const Tensor& m = masters.at(name);
    std::vector<float> expect(m.data<float>(), m.data<float>() + m.numel());
    if (absl::EndsWith(name, "_proj.weight")) {
      QuantDesc d;
      d.rows = m.dim(0);
      d.cols = m.dim(1);
      d.src_dtype = DType::kF32;
      d.scale = scale_params_from_env(QuantRole::kFwdWeight);
      std::vector<uint8_t> q(size_t(m.numel()));
      std::vector<float> s(size_t(d.row_tiles() * d.col_tiles()));
      REQUIRE(quantize_128x128_cpu(d, m.raw(), q.data(), s.data()).ok());
      REQUIRE(dequantize_128x128_cpu(d, q.data(), s.data(), expect.data(), DType::kF32).ok());
      CHECK(expect != std::vector<float>(m.data<float>(), m.data<float>() + m.numel()));
      ++linears;
    }
    CHECK(std::memcmp(p->raw(), expect.data(), p->nbytes()) == 0);
  }
  CHECK(linears == 7 * int(small_config().num_hidden_layers));
  // A checkpoint loader's path: parameters rebuilt from the masters, through the grid again.
  const auto before = snapshot(cached);
  for (auto& [name, p] : cached.policy().params().named(cached.policy().config()))
    std::memset(p->raw(), 0, p->nbytes());
  REQUIRE(cached.sync_params_from_optimizer().ok());
  CHECK(snapshot(cached) == before);

  TrainerOptions o;
  o.fp8_param_gather = true;
  auto bf16 = Trainer::create(random_decoder(7), std::nullopt, o);
  CHECK(bf16.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(bf16.status().message(), "fp8_param_gather"));
}

TEST_CASE("cuda options are checked before a device is touched", "[trainer][train_step]") {
  TrainerOptions o;
  o.cuda = true;
  // The CUDA decoder runs bf16 or fp8 linears; this policy's are float32.
  auto f32 = Trainer::create(random_decoder(7), std::nullopt, o);
  CHECK(f32.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(f32.status().message(), "--device cuda runs bf16 or fp8 linears"));
  o.gpu = -1;
  auto negative = Trainer::create(random_decoder(7), std::nullopt, o);
  CHECK(negative.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(negative.status().message(), "gpu -1"));
}
