// TransformerEngine's scale rule (quant/scale.h) and the environment knobs that configure it.
#include "quant/scale.h"

#include <cmath>
#include <cstdlib>
#include <limits>

#include "core/dtype.h"
#include "core/env.h"
#include "tests/catch.h"

using namespace fp8rl;

namespace {
const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

float scale_of(float amax, bool pow2, float eps = 0.f, float vfi = kF32MaxFinite) {
  return compute_scale_from_amax(amax, kE4M3Max, pow2, eps, vfi);
}

const char* const kKnobs[] = {"NVTE_FP8_BLOCK_SCALING_FP32_SCALES",
                              "NVTE_FP8_BLOCK_SCALING_FWD_INP_POWER2",
                              "NVTE_FP8_BLOCK_SCALING_FWD_WEIGHT_POWER2",
                              "NVTE_FP8_BLOCK_SCALING_BWD_GRAD_POWER2",
                              "FP8_QUANT_FWD_INP_AMAX_EPS",
                              "FP8_QUANT_FWD_WEIGHT_AMAX_EPS",
                              "FP8_QUANT_BWD_GRAD_AMAX_EPS"};

void clear_knobs() {
  for (const char* k : kKnobs) ::unsetenv(k);
  env_reset_cache_for_testing();
}
}  // namespace

TEST_CASE("amax of 0, inf or NaN gives scale 1", "[scale]") {
  for (bool pow2 : {false, true}) {
    CHECK(scale_of(0.f, pow2) == 1.f);
    CHECK(scale_of(-0.f, pow2) == 1.f);
    CHECK(scale_of(kInf, pow2) == 1.f);
    CHECK(scale_of(kNaN, pow2) == 1.f);
    CHECK(scale_of(-kNaN, pow2) == 1.f);
    CHECK(scale_of(kNaN, pow2, 1e-12f) == 1.f);  // NaN passes the eps clamp (compare is false)
  }
}

TEST_CASE("scale is 448/amax, power-of-2 mode rounds it down", "[scale]") {
  CHECK(scale_of(448.f, false) == 1.f);
  CHECK(scale_of(3.f, false) == 448.f / 3.f);
  CHECK(scale_of(1.f, false) == 448.f);
  CHECK(scale_of(1.f, true) == 256.f);
  CHECK(scale_of(100.f, true) == 4.f);
  CHECK(scale_of(448.f, true) == 1.f);
  CHECK(scale_of(449.f, true) == 0.5f);
  CHECK(scale_of(1e6f, true) == std::ldexp(1.f, -12));  // 4.48e-4 -> 2^-12
  // Power-of-2 scales are the exponent of the FP32 scale (E8M0-representable).
  for (float amax : {1e-3f, 0.37f, 5.f, 1234.5f, 3e20f}) {
    const float s = scale_of(amax, true);
    CHECK((f32_bits(s) & 0x007fffffu) == 0u);
    CHECK(s <= scale_of(amax, false));
    CHECK(2 * s > scale_of(amax, false));
    CHECK(e8m0_to_f32(f32_to_e8m0(s)) == s);
  }
}

TEST_CASE("amax below eps is clamped to eps", "[scale]") {
  CHECK(scale_of(0.f, false, 1e-12f) == 448.f / 1e-12f);
  CHECK(scale_of(1e-20f, false, 1e-12f) == 448.f / 1e-12f);
  CHECK(scale_of(1e-20f, true, 1e-12f) == scale_of(1e-12f, true));
  CHECK(scale_of(2.f, false, 1e-12f) == 224.f);  // above eps: untouched
}

TEST_CASE("an infinite scale becomes value_for_inf", "[scale]") {
  const float tiny = 1e-40f;  // subnormal: 448/tiny overflows
  CHECK(std::isinf(448.f / tiny));
  CHECK(scale_of(tiny, false, 0.f, kF32MaxFinite) == kF32MaxFinite);
  CHECK(scale_of(tiny, false, 0.f, kBF16MaxFinite) == kBF16MaxFinite);
  CHECK(scale_of(tiny, true, 0.f, kF32MaxFinite) == std::ldexp(1.f, 127));
  CHECK(kBF16MaxFinite == bf16_to_f32(0x7f7f));
  CHECK(kF32MaxFinite == std::numeric_limits<float>::max());
}

TEST_CASE("scale params come from the TE and LoongForge knobs", "[scale][env]") {
  clear_knobs();
  for (QuantRole role : {QuantRole::kFwdInput, QuantRole::kFwdWeight, QuantRole::kBwdGrad}) {
    const ScaleParams p = scale_params_from_env(role);
    CHECK(p.power_2);  // TE's default recipe: power-of-2 scales, eps 0
    CHECK(p.amax_eps == 0.f);
  }

  ::setenv("NVTE_FP8_BLOCK_SCALING_FP32_SCALES", "1", 1);
  ::setenv("NVTE_FP8_BLOCK_SCALING_BWD_GRAD_POWER2", "1", 1);
  ::setenv("FP8_QUANT_FWD_WEIGHT_AMAX_EPS", "1e-12", 1);
  env_reset_cache_for_testing();
  CHECK(!scale_params_from_env(QuantRole::kFwdInput).power_2);
  CHECK(!scale_params_from_env(QuantRole::kFwdWeight).power_2);
  CHECK(scale_params_from_env(QuantRole::kBwdGrad).power_2);  // per-role override wins
  CHECK(scale_params_from_env(QuantRole::kFwdWeight).amax_eps == 1e-12f);
  CHECK(scale_params_from_env(QuantRole::kFwdInput).amax_eps == 0.f);

  ::setenv("NVTE_FP8_BLOCK_SCALING_FP32_SCALES", "0", 1);
  ::setenv("NVTE_FP8_BLOCK_SCALING_FWD_INP_POWER2", "0", 1);
  CHECK(!scale_params_from_env(QuantRole::kFwdWeight).power_2);  // cached until reset
  env_reset_cache_for_testing();
  CHECK(scale_params_from_env(QuantRole::kFwdWeight).power_2);
  CHECK(!scale_params_from_env(QuantRole::kFwdInput).power_2);
  CHECK(scale_params_from_env(QuantRole::kFwdInput).to_string() == "pow2=0 eps=0");
  clear_knobs();
}
