// Shared by the quant/ unit tests: random matrices with edge values, shape lists, and plain
// float64 helpers the tests compare against.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/float8.h"

namespace fp8rl::testing {

struct Shape2 {
  int64_t rows, cols;
};

// Edges the quantizers must handle: one row, zero rows or columns, K and N not multiples of 128,
// exactly one block, ragged blocks on both sides.
inline std::vector<Shape2> quant_shapes() {
  return {{0, 128},   {4, 0},     {1, 1},     {1, 129},   {3, 300},
          {127, 128}, {128, 128}, {130, 257}, {256, 384}, {200, 1000}};
}

// A source matrix as raw bytes of float32 or bfloat16 plus its exact float32 values.
struct Matrix {
  int64_t rows = 0, cols = 0;
  DType dtype = DType::kF32;
  std::vector<float> f32;      // exact values (bf16 sources converted exactly)
  std::vector<uint16_t> bf16;  // the bf16 bits when dtype is kBF16
  const void* data() const {
    return dtype == DType::kF32 ? static_cast<const void*>(f32.data()) : bf16.data();
  }
  float at(int64_t r, int64_t c) const { return f32[size_t(r * cols + c)]; }
};

// Normal values whose magnitude varies by up to 10^±3 between rows and by 10^±1 inside a row,
// so tiles see different scales. `edges` adds an all-zero 128x128 block, values above 448,
// a few inf and NaN, and tiny values that make 448/amax overflow.
inline Matrix random_matrix(int64_t rows, int64_t cols, DType dtype, uint64_t seed,
                            bool edges = true) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> expo(-3.f, 3.f), jitter(-1.f, 1.f);
  Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.dtype = dtype;
  m.f32.resize(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float row_mag = std::pow(10.f, expo(gen));
    for (int64_t c = 0; c < cols; ++c) {
      m.f32[size_t(r * cols + c)] = normal(gen) * row_mag * std::pow(10.f, jitter(gen));
    }
  }
  if (edges && rows * cols > 0) {
    for (int64_t r = 0; r < std::min<int64_t>(rows, 128); ++r) {
      for (int64_t c = 0; c < std::min<int64_t>(cols, 128); ++c) m.f32[size_t(r * cols + c)] = 0.f;
    }
    const int64_t n = rows * cols;
    std::uniform_int_distribution<int64_t> pick(0, n - 1);
    m.f32[size_t(pick(gen))] = 1000.f;
    m.f32[size_t(pick(gen))] = -5e4f;
    if (n > 1000) {
      m.f32[size_t(pick(gen))] = std::numeric_limits<float>::infinity();
      m.f32[size_t(pick(gen))] = -std::numeric_limits<float>::infinity();
      m.f32[size_t(pick(gen))] = std::numeric_limits<float>::quiet_NaN();
      m.f32[size_t(pick(gen))] = -std::numeric_limits<float>::quiet_NaN();
    }
    // Float32 subnormals outside the zero block: 448/amax is infinite, so value_for_inf is used.
    for (int64_t c = rows > 128 ? 0 : 128; c < cols; ++c) {
      m.f32[size_t((rows - 1) * cols + c)] = 1e-40f * float(c % 7);
    }
  }
  if (dtype == DType::kBF16) {
    m.bf16.resize(m.f32.size());
    for (size_t i = 0; i < m.f32.size(); ++i) {
      m.bf16[i] = f32_to_bf16(m.f32[i]);
      m.f32[i] = bf16_to_f32(m.bf16[i]);
    }
  }
  return m;
}

inline uint32_t bits_of(float f) { return f32_bits(f); }

// Index of the first differing byte, or -1.
inline int64_t first_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return int64_t(i);
  }
  return -1;
}
// Index of the first float whose bits differ, or -1.
inline int64_t first_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (f32_bits(a[i]) != f32_bits(b[i])) return int64_t(i);
  }
  return -1;
}

// ||a - b||_F / ||b||_F in float64.
inline double rel_frobenius(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

}  // namespace fp8rl::testing
