// Helpers of the model GPU tests: device copies of host vectors, bf16-exact random data and the
// elementwise tolerance check |gpu - ref| <= rel * |ref| + abs_rms * rms(ref) that reports the
// worst element.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/dtype.h"
#include "core/random.h"
#include "model/tiny_model.h"
#include "tests/gpu/gpu_test_util.h"

namespace fp8rl::gpu_test {

// The decoder the model and inference GPU tests run: Qwen3 with QK-norm, 2 layers, hidden 128,
// 4 query heads over 2 KV heads of 32, vocabulary 300 (FP8-friendly multiples of 16).
inline ModelConfig small_qwen3_config() {
  ModelConfig c = tiny_qwen3_config();
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 32;
  c.vocab_size = 300;
  c.max_position_embeddings = 512;
  c.rope_theta = 10000.0;
  c.dtype = DType::kF32;
  return c;
}

// n values ~ N(0, scale^2) rounded to bf16 (so that a bf16 device copy holds them exactly).
inline std::vector<float> bf16_exact(int64_t n, uint64_t seed, float scale = 1.f) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = fp8rl::bf16_to_f32(f32_to_bf16(float(rng.normal()) * scale));
  return v;
}

template <typename T>
std::unique_ptr<DevBuf> to_device(const std::vector<T>& v) {
  auto b = std::make_unique<DevBuf>(v.size() * sizeof(T));
  b->upload(v);
  return b;
}

inline double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return v.empty() ? 0 : std::sqrt(s / double(v.size()));
}

// "" when every |got - ref| <= rel * |ref| + abs_rms * rms(ref) (NaN fails), else the worst
// element and the count over the bound.
inline std::string close_report(const char* what, const std::vector<float>& got,
                                const std::vector<float>& ref, double rel, double abs_rms) {
  if (got.size() != ref.size())
    return absl::StrCat(what, ": ", got.size(), " values, expected ", ref.size());
  const double floor = abs_rms * rms(ref);
  int64_t bad = 0, worst = -1;
  double worst_excess = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - double(ref[i]));
    const double bound = rel * std::fabs(double(ref[i])) + floor;
    if (!(err <= bound)) {
      ++bad;
      const double excess = std::isnan(err) ? INFINITY : err / (bound > 0 ? bound : 1e-30);
      if (worst < 0 || excess > worst_excess) worst = int64_t(i), worst_excess = excess;
    }
  }
  if (bad == 0) return "";
  return absl::StrCat(what, ": ", bad, " of ", got.size(), " outside rel ", rel, " + ", abs_rms,
                      " rms; worst [", worst, "] gpu=", got[size_t(worst)],
                      " ref=", ref[size_t(worst)]);
}

}  // namespace fp8rl::gpu_test
