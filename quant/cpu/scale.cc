// Scale parameters from TransformerEngine's and LoongForge's environment knobs.
#include "absl/strings/str_cat.h"
#include "core/env.h"
#include "quant/scale.h"

namespace fp8rl {

std::string ScaleParams::to_string() const {
  return absl::StrCat("pow2=", power_2 ? 1 : 0, " eps=", amax_eps);
}

ScaleParams scale_params_from_env(QuantRole role) {
  const char* suffix = role == QuantRole::kFwdInput    ? "FWD_INP"
                       : role == QuantRole::kFwdWeight ? "FWD_WEIGHT"
                                                       : "BWD_GRAD";
  const bool fp32_scales = env_bool("NVTE_FP8_BLOCK_SCALING_FP32_SCALES", false);
  ScaleParams p;
  p.power_2 = env_bool(absl::StrCat("NVTE_FP8_BLOCK_SCALING_", suffix, "_POWER2"), !fp32_scales);
  p.amax_eps = float(env_double(absl::StrCat("FP8_QUANT_", suffix, "_AMAX_EPS"), 0.0));
  return p;
}

}  // namespace fp8rl
