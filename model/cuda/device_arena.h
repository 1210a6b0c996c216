// Carving many device buffers out of one allocation: the same code first measures (null base)
// and then hands out pointers, so a layout is written once.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fp8rl {

class ArenaCarver {
 public:
  static constexpr size_t kAlign = 256;  // cuBLASLt and the vectorised kernels want >= 16

  // base: the allocation to carve from, or nullptr to measure only (take() returns nullptr).
  explicit ArenaCarver(void* base = nullptr) : base_(static_cast<uint8_t*>(base)) {}

  template <typename T>
  T* take(int64_t count) {
    return reinterpret_cast<T*>(take_bytes(size_t(count) * sizeof(T)));
  }
  uint8_t* take_bytes(size_t bytes) {
    const size_t off = (used_ + kAlign - 1) / kAlign * kAlign;
    used_ = off + bytes;
    return base_ ? base_ + off : nullptr;
  }
  size_t used() const { return used_; }

 private:
  uint8_t* base_;
  size_t used_ = 0;
};

}  // namespace fp8rl
