// FP8 scale selection: TransformerEngine's compute_scale_from_amax and the environment knobs that
// choose power-of-2 or FP32 scales and the amax epsilon per tensor role.
#pragma once

#include <string>

#include "core/float8.h"

namespace fp8rl {

// The three tensor roles of TransformerEngine's Float8BlockScaling recipe.
enum class QuantRole { kFwdInput, kFwdWeight, kBwdGrad };

struct ScaleParams {
  bool power_2 = true;   // keep only the exponent of the scale (E8M0-representable)
  float amax_eps = 0.f;  // amax is clamped below by this before the scale is computed

  std::string to_string() const;
};

// Reads, once per process (core/env.h):
//   NVTE_FP8_BLOCK_SCALING_FP32_SCALES=1            -> power_2 = false for every role (default 0),
//   NVTE_FP8_BLOCK_SCALING_{FWD_INP,FWD_WEIGHT,BWD_GRAD}_POWER2 -> overrides power_2 per role,
//   FP8_QUANT_{FWD_INP,FWD_WEIGHT,BWD_GRAD}_AMAX_EPS             -> amax_eps per role (default 0).
ScaleParams scale_params_from_env(QuantRole role);

// TransformerEngine's compute_scale_from_amax (recipe_common.cuh), bit for bit:
//   amax < eps -> eps; amax of 0, inf or NaN -> 1; scale = max_fp8 / amax (IEEE round to nearest);
//   an infinite scale becomes `value_for_inf` (the largest finite value of the source dtype);
//   power_2 keeps sign and exponent only (rounds the scale down to a power of two).
// The quantized value is e4m3(x * scale); what is stored is scale_inv = 1.0f / scale.
FP8RL_HD float compute_scale_from_amax(float amax, float max_fp8, bool power_2, float eps,
                                       float value_for_inf) {
  if (amax < eps) amax = eps;
  const uint32_t abits = fp8_f32_bits_(amax) & 0x7fffffffu;
  if (abits >= 0x7f800000u || amax == 0.f) return 1.f;  // inf or NaN or zero
#if defined(__CUDA_ARCH__)
  float scale = __fdiv_rn(max_fp8, amax);
#else
  float scale = max_fp8 / amax;
#endif
  if ((fp8_f32_bits_(scale) & 0x7fffffffu) == 0x7f800000u) scale = value_for_inf;
  if (power_2) scale = fp8_f32_from_bits_(fp8_f32_bits_(scale) & 0xFF800000u);
  return scale;
}

// Largest finite value of the dtypes fp8rl quantizes from (TE's value_for_inf).
inline constexpr float kF32MaxFinite = 3.40282346638528859812e+38f;
inline constexpr float kBF16MaxFinite = 3.38953138925153547590e+38f;

}  // namespace fp8rl
