// AdamW against a hand-computed two-step trace, weight-decay exemptions, gradient clipping,
// skipped steps, state round trips, and Megatron's learning-rate schedules.
#include "trainer/optimizer.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "tests/catch.h"

using namespace fp8rl;

namespace {

Tensor tensor_of(std::vector<float> v, Shape shape) {
  Tensor t = Tensor::empty(DType::kF32, std::move(shape));
  std::memcpy(t.raw(), v.data(), v.size() * sizeof(float));
  return t;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

}  // namespace

TEST_CASE("AdamW follows a hand-computed two-step trace", "[trainer][optimizer]") {
  // lr 0.1, wd 0.1, betas (0.9, 0.999), eps 1e-8, no clipping. The matrix decays, the vector
  // (1-D: a norm or bias) does not. Step 1 for w = 1, g = 0.5: w = 0.99 after decay;
  // m = 0.05, v = 2.5e-4; m̂ = 0.5, v̂ = 0.25; w = 0.99 − 0.1·0.5/0.5 = 0.89.
  // Step 2 (g = 0.1): w = 0.89·0.99; m = 0.055, v = 2.5975e-4; m̂ = 0.055/0.19,
  // v̂ = 2.5975e-4/(1 − 0.999²); w −= 0.1·m̂/sqrt(v̂) → 0.8007959.
  Tensor w = tensor_of({1.0f, -2.0f}, {1, 2});
  Tensor b = tensor_of({0.5f}, {1});
  AdamWConfig c;
  c.weight_decay = 0.1;
  c.clip_grad = 0;
  auto opt = AdamW::create({{"w", w}, {"b", b}}, c);
  REQUIRE(opt.ok());
  Tensor gw = tensor_of({0.5f, -1.0f}, {1, 2});
  Tensor gb = tensor_of({0.5f}, {1});
  auto s1 = opt->step({&gw, &gb}, 0.1);
  REQUIRE(s1.ok());
  CHECK(!s1->skipped);
  CHECK(s1->grad_norm == Approx(std::sqrt(0.25 + 1.0 + 0.25)));
  CHECK(w.data<float>()[0] == Approx(0.89).epsilon(1e-6));
  CHECK(w.data<float>()[1] == Approx(-1.88).epsilon(1e-6));
  CHECK(b.data<float>()[0] == Approx(0.4).epsilon(1e-6));
  gw = tensor_of({0.1f, 0.2f}, {1, 2});
  gb = tensor_of({0.1f}, {1});
  REQUIRE(opt->step({&gw, &gb}, 0.1).ok());
  CHECK(w.data<float>()[0] == Approx(0.8007959063646517).epsilon(1e-6));
  CHECK(w.data<float>()[1] == Approx(-1.8100973939804945).epsilon(1e-6));
  CHECK(b.data<float>()[0] == Approx(0.3196959063846518).epsilon(1e-6));
  CHECK(opt->steps() == 2);

  const auto state = opt->named_state();
  REQUIRE(state.size() == 6);
  CHECK(state[0].first == "w.master");
  CHECK(state[1].first == "w.exp_avg");
  CHECK(state[2].first == "w.exp_avg_sq");
  CHECK(state[1].second.data<float>()[0] == Approx(0.055));
  CHECK(state[2].second.data<float>()[0] == Approx(2.5975e-4));
  CHECK(bitwise_equal(state[0].second, w));
}

TEST_CASE("restored optimizer state continues exactly", "[trainer][optimizer]") {
  AdamWConfig c;
  Tensor w1 = tensor_of({0.3f, -0.7f, 1.1f, 0.2f}, {2, 2});
  auto a = AdamW::create({{"w", w1}}, c);
  REQUIRE(a.ok());
  Tensor g = tensor_of({0.4f, -0.1f, 0.3f, 0.9f}, {2, 2});
  Tensor g_copy = g.clone();
  REQUIRE(a->step({&g}, 0.01).ok());

  // A second optimizer on other weights receives a's state, then both take the same step.
  Tensor w2 = tensor_of({9.0f, 9.0f, 9.0f, 9.0f}, {2, 2});
  auto b = AdamW::create({{"w", w2}}, c);
  REQUIRE(b.ok());
  const auto from = a->named_state();
  const auto to = b->named_state();
  for (size_t i = 0; i < from.size(); ++i)
    std::memcpy(to[i].second.raw(), from[i].second.raw(), from[i].second.nbytes());
  b->set_steps(a->steps());
  b->sync_params();
  CHECK(bitwise_equal(w1, w2));
  g = g_copy.clone();
  Tensor g2 = g_copy.clone();
  REQUIRE(a->step({&g}, 0.01).ok());
  REQUIRE(b->step({&g2}, 0.01).ok());
  CHECK(bitwise_equal(w1, w2));
  for (size_t i = 0; i < from.size(); ++i) CHECK(bitwise_equal(from[i].second, to[i].second));
}

TEST_CASE("global-norm clipping scales gradients as Megatron does", "[trainer][optimizer]") {
  Tensor g1 = tensor_of({3.0f}, {1});
  Tensor g2 = tensor_of({0.0f, 4.0f}, {2});
  const double norm = clip_grad_norm({&g1, &g2}, 1.0);
  CHECK(norm == Approx(5.0));
  const double coeff = 1.0 / (5.0 + 1e-6);
  CHECK(g1.data<float>()[0] == Approx(3.0 * coeff));
  CHECK(g2.data<float>()[1] == Approx(4.0 * coeff));
  // Below the threshold nothing changes; clip_grad 0 disables clipping.
  CHECK(clip_grad_norm({&g1, &g2}, 2.0) == Approx(1.0).epsilon(1e-5));
  CHECK(g1.data<float>()[0] == Approx(3.0 * coeff));
  Tensor big = tensor_of({30.0f, 40.0f}, {2});
  CHECK(clip_grad_norm({&big}, 0.0) == Approx(50.0));
  CHECK(big.data<float>()[0] == 30.0f);
  // A large tensor spans several norm blocks; the norm is still exact.
  Tensor ones = Tensor::empty(DType::kF32, {100000});
  for (int64_t i = 0; i < ones.numel(); ++i) ones.data<float>()[i] = 1.0f;
  CHECK(clip_grad_norm({&ones}, 0.0) == Approx(std::sqrt(100000.0)));
}

TEST_CASE("a non-finite gradient norm skips the step", "[trainer][optimizer]") {
  Tensor w = tensor_of({1.0f, 2.0f}, {1, 2});
  const Tensor before = w.clone();
  auto opt = AdamW::create({{"w", w}}, AdamWConfig{});
  REQUIRE(opt.ok());
  const std::vector<Tensor> state_before = [&] {
    std::vector<Tensor> v;
    for (const auto& [name, t] : opt->named_state()) v.push_back(t.clone());
    return v;
  }();
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    Tensor g = tensor_of({0.1f, bad}, {1, 2});
    auto r = opt->step({&g}, 0.1);
    REQUIRE(r.ok());
    CHECK(r->skipped);
    CHECK(!std::isfinite(r->grad_norm));
    CHECK(opt->steps() == 0);
    CHECK(bitwise_equal(w, before));
    const auto state = opt->named_state();
    for (size_t i = 0; i < state.size(); ++i)
      CHECK(bitwise_equal(state[i].second, state_before[i]));
  }
  Tensor wrong = tensor_of({0.1f}, {1});
  CHECK(opt->step({&wrong}, 0.1).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(AdamW::create({{"w", w}}, AdamWConfig{.beta1 = 1.0}).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("learning-rate schedules follow Megatron", "[trainer][optimizer]") {
  LrSchedule s;
  s.lr = 1.0;
  s.min_lr = 0.1;
  s.warmup_iters = 4;
  s.decay_iters = 14;
  CHECK(s.validate().ok());
  // Warmup from 0: step 0 runs at 0, step 4 reaches the peak.
  CHECK(s.lr_at(0) == 0.0);
  CHECK(s.lr_at(1) == Approx(0.25));
  CHECK(s.lr_at(4) == Approx(1.0));
  CHECK(s.lr_at(100) == 1.0);  // constant after warmup
  s.style = LrDecayStyle::kLinear;
  CHECK(s.lr_at(9) == Approx(0.1 + 0.5 * 0.9));
  CHECK(s.lr_at(14) == Approx(0.1));
  CHECK(s.lr_at(15) == 0.1);
  s.style = LrDecayStyle::kCosine;
  CHECK(s.lr_at(4) == Approx(1.0));
  CHECK(s.lr_at(9) == Approx(0.1 + 0.5 * 0.9));  // cos(π/2) = 0
  CHECK(s.lr_at(6) == Approx(0.1 + 0.5 * (std::cos(M_PI * 0.2) + 1) * 0.9));
  CHECK(s.lr_at(14) == Approx(0.1));
  CHECK(s.lr_at(20) == 0.1);
  LrSchedule flat;  // no warmup, constant: every step at lr
  flat.lr = 3e-6;
  CHECK(flat.lr_at(0) == 3e-6);
  CHECK(flat.lr_at(1000) == 3e-6);

  s.decay_iters = 4;
  CHECK(s.validate().code() == absl::StatusCode::kInvalidArgument);
  s.decay_iters = 14;
  s.min_lr = 2.0;
  CHECK(s.validate().code() == absl::StatusCode::kInvalidArgument);
  CHECK(parse_lr_decay_style("cosine").value() == LrDecayStyle::kCosine);
  CHECK(!parse_lr_decay_style("wsd").ok());
}
