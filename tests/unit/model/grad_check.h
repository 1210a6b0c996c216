// Finite-difference gradient checks and small comparison helpers shared by the model tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/random.h"
#include "model/decoder.h"
#include "model/tiny_model.h"
#include "tests/catch.h"

namespace fp8rl::test {

// The tiny Qwen3 the model and trainer tests share: hidden 16, GQA 2/1 heads of 8, vocab 23, F32.
inline ModelConfig small_config() {
  ModelConfig c = tiny_qwen3_config();
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 23;
  c.max_position_embeddings = 64;
  c.rope_theta = 10000.0;
  c.dtype = DType::kF32;
  return c;
}

// Random parameters for `c`: norm weights 1 + N(0, 0.1), everything else N(0, std), drawn in
// DecoderParams::named order from Rng(seed).
inline DecoderParams random_params(const ModelConfig& c, uint64_t seed, double std) {
  DecoderParams p = DecoderParams::zeros(c);
  Rng rng(seed);
  for (auto& [name, t] : p.named(c)) {
    const bool norm = name.find("norm") != std::string::npos;
    for (int64_t i = 0; i < t->numel(); ++i)
      t->data<float>()[i] = float(norm ? 1 + 0.1 * rng.normal() : std * rng.normal());
  }
  return p;
}

inline std::vector<float> random_vector(int64_t n, Rng& rng, double std = 1.0) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = float(std * rng.normal());
  return v;
}

// Central differences of `loss` w.r.t. x[0, n), perturbing x in place by ±eps (restored after).
inline std::vector<double> numeric_grad(float* x, int64_t n, const std::function<double()>& loss,
                                        float eps) {
  std::vector<double> g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float keep = x[i];
    x[i] = keep + eps;
    const double up = loss();
    x[i] = keep - eps;
    const double down = loss();
    x[i] = keep;
    g[i] = (up - down) / (double(x[i] + eps) - double(x[i] - eps));
  }
  return g;
}

// max |numeric - analytic| <= tol * max(max |analytic|, floor): a tolerance relative to the
// tensor's gradient scale, so tiny entries do not need their own relative accuracy.
inline void check_grad(const std::string& what, const std::vector<double>& numeric,
                       const float* analytic, double tol, double floor = 1e-2) {
  double err = 0, scale = floor;
  int64_t worst = 0;
  for (size_t i = 0; i < numeric.size(); ++i) {
    const double e = std::abs(numeric[i] - double(analytic[i]));
    if (e > err) {
      err = e;
      worst = int64_t(i);
    }
    scale = std::max(scale, std::abs(double(analytic[i])));
  }
  INFO(what << ": worst element " << worst << " numeric " << numeric[size_t(worst)] << " analytic "
            << analytic[worst] << ", max error " << err << ", scale " << scale);
  CHECK(err <= tol * scale);
}

// ||a - b|| / ||b||.
inline double rel_norm_error(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

inline double cosine(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return ab / std::sqrt(std::max(aa * bb, 1e-60));
}

inline double dot(const std::vector<float>& a, const float* b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

}  // namespace fp8rl::test
