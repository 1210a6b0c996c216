// Helpers of the GPU tests: device buffers, input generators with edge values (zero tiles, inf,
// NaN, values above 448, subnormals) and bitwise comparison reporting the first differing element.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/dtype.h"
#include "core/random.h"
#include "core/status.h"

namespace fp8rl::gpu_test {

#define GT_CUDA_OK(expr)                                                                          \
  do {                                                                                            \
    cudaError_t e_ = (expr);                                                                      \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::abort();                                                                               \
    }                                                                                             \
  } while (0)

// A device allocation of `bytes` (plus `offset` bytes in front, to test misaligned pointers).
class DevBuf {
 public:
  explicit DevBuf(size_t bytes, size_t offset = 0) : bytes_(bytes), offset_(offset) {
    GT_CUDA_OK(cudaMalloc(&base_, bytes + offset + 16));
    GT_CUDA_OK(cudaMemset(base_, 0xAB, bytes + offset + 16));  // poison
    // cudaMemset and pageable cudaMemcpy may still be in flight on return, and the runtime's
    // non-blocking stream does not wait for the legacy stream: settle before any kernel runs.
    GT_CUDA_OK(cudaDeviceSynchronize());
  }
  ~DevBuf() { cudaFree(base_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;

  template <typename T = void>
  T* get() const {
    return reinterpret_cast<T*>(static_cast<uint8_t*>(base_) + offset_);
  }
  size_t bytes() const { return bytes_; }
  void upload(const void* src) {
    GT_CUDA_OK(cudaMemcpy(get(), src, bytes_, cudaMemcpyHostToDevice));
    GT_CUDA_OK(cudaDeviceSynchronize());
  }
  template <typename T>
  void upload(const std::vector<T>& v) {
    FP8RL_CHECK(v.size() * sizeof(T) == bytes_);
    upload(v.data());
  }
  template <typename T>
  std::vector<T> download() const {
    std::vector<T> v(bytes_ / sizeof(T));
    GT_CUDA_OK(cudaDeviceSynchronize());
    GT_CUDA_OK(cudaMemcpy(v.data(), get(), bytes_, cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  void* base_ = nullptr;
  size_t bytes_;
  size_t offset_;
};

// A [rows, cols] float32 matrix: mostly N(0, 1) times a per-row magnitude spread over 2^-10..2^10.
// With special_period > 0, each 1x128 row tile becomes special with probability 11/special_period:
// all zeros, all -0, all f32 subnormals, all 2^-130 (the scale overflows to value_for_inf), or one
// NaN (both signs, odd payloads, signalling), +-inf, 1e30 or -500 among normal values. A period of
// ~23 makes most row tiles special; ~3000 leaves about half of the 128x128 blocks clean.
inline std::vector<float> make_matrix(int64_t rows, int64_t cols, uint64_t seed,
                                      int special_period) {
  const bool specials = special_period > 0;
  Rng rng(seed);
  std::vector<float> x(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float mag = std::ldexp(1.0f, int(rng.next_u64() % 21) - 10);
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] = float(rng.normal()) * mag;
  }
  if (!specials || rows * cols == 0) return x;
  const int64_t ntiles = (cols + 127) / 128;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < ntiles; ++t) {
      const uint64_t pick = rng.next_u64() % uint64_t(special_period);
      const int64_t c0 = t * 128, c1 = std::min(cols, c0 + 128);
      const int64_t c = c0 + int64_t(rng.next_u64() % uint64_t(c1 - c0));
      float& v = x[r * cols + c];
      switch (pick) {
        case 0:
          for (int64_t j = c0; j < c1; ++j) x[r * cols + j] = 0.f;
          break;
        case 1:
          v = f32_from_bits(0x7fc00001u | uint32_t(rng.next_u64() & 0x3ff000u));
          break;
        case 2:
          v = f32_from_bits(0xffc00000u | uint32_t(rng.next_u64() & 0x3ff0u));
          break;
        case 3:
          v = INFINITY;
          break;
        case 4:
          v = -INFINITY;
          break;
        case 5:
          v = 1e30f;
          break;
        case 6:
          v = -500.f;
          break;
        case 7:
          for (int64_t j = c0; j < c1; ++j)
            x[r * cols + j] = f32_from_bits(uint32_t(rng.next_u64() & 0x7fffffu));
          break;  // subnormal tile
        case 8:
          for (int64_t j = c0; j < c1; ++j) x[r * cols + j] = std::ldexp(1.0f, -130);
          break;
        case 9:
          v = f32_from_bits(0x7f800001u);
          break;  // signalling NaN
        case 10:
          for (int64_t j = c0; j < c1; ++j) x[r * cols + j] = -0.f;
          break;
        default:
          break;
      }
    }
  }
  return x;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = f32_to_bf16(x[i]);
  return y;
}

// Index of the first element where a and b differ bitwise, or -1.
template <typename T>
int64_t first_diff(const std::vector<T>& a, const std::vector<T>& b) {
  FP8RL_CHECK(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return int64_t(i);
  return -1;
}

template <typename T>
uint64_t bits_of(const T& v) {
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}

// "" when equal, else "<what> differs at [row, col] (flat i): cpu=0x.. gpu=0x.. (k of n differ)".
template <typename T>
std::string bitwise_report(const char* what, const std::vector<T>& cpu, const std::vector<T>& gpu,
                           int64_t row_len) {
  const int64_t i = first_diff(cpu, gpu);
  if (i < 0) return "";
  int64_t n = 0;
  std::string more;
  for (size_t j = 0; j < cpu.size(); ++j) {
    if (std::memcmp(&cpu[j], &gpu[j], sizeof(T)) == 0) continue;
    if (++n > 1 && n <= 4)
      absl::StrAppend(&more, " [flat ", j, "] cpu=0x", absl::Hex(bits_of(cpu[j])), " gpu=0x",
                      absl::Hex(bits_of(gpu[j])));
  }
  return absl::StrCat(what, " differs at [", row_len ? i / row_len : 0, ", ",
                      row_len ? i % row_len : i, "] (flat ", i, "): cpu=0x",
                      absl::Hex(bits_of(cpu[i])), " gpu=0x", absl::Hex(bits_of(gpu[i])), " (", n,
                      " of ", cpu.size(), " differ)", more);
}

// ||a - b|| / ||b|| over float32 views (NaN anywhere gives NaN).
inline double rel_frobenius(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(num) / std::sqrt(den > 0 ? den : 1.0);
}

inline std::vector<float> bf16_to_f32(const std::vector<uint16_t>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = fp8rl::bf16_to_f32(x[i]);
  return y;
}

}  // namespace fp8rl::gpu_test
