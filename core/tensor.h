// Tensor: dtype, shape and contiguous row-major storage on the CPU or a CUDA device.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/dtype.h"

namespace fp8rl {

enum class DeviceType : uint8_t { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {DeviceType::kCUDA, i}; }
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }
  bool operator==(const Device&) const = default;
  std::string to_string() const;
};

using Shape = std::vector<int64_t>;

// Product of dims; 1 for a scalar shape. Dims must be non-negative.
int64_t shape_numel(const Shape& shape);
std::string shape_to_string(const Shape& shape);

// A block of bytes on one device. Freed when the last Tensor referring to it goes.
class Storage {
 public:
  // Allocates `nbytes` on `device` (CPU: 64-byte aligned; CUDA: cudaMalloc).
  static absl::StatusOr<std::shared_ptr<Storage>> allocate(size_t nbytes, Device device);
  // Wraps memory owned elsewhere; `keepalive` is held until the Storage dies (e.g. an mmap).
  static std::shared_ptr<Storage> wrap(void* data, size_t nbytes, Device device,
                                       std::shared_ptr<void> keepalive);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  Storage() = default;
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  bool owned_ = false;
  std::shared_ptr<void> keepalive_;
};

// A contiguous row-major tensor. Copies of a Tensor share storage (like torch.Tensor); use clone()
// for a deep copy. Not thread-safe for concurrent writes to the same storage.
class Tensor {
 public:
  Tensor() = default;

  // Uninitialised CPU tensor; aborts on allocation failure (host OOM is not recoverable here).
  static Tensor empty(DType dtype, Shape shape);
  static Tensor zeros(DType dtype, Shape shape);
  // Allocation on any device; CUDA allocation failure is an error, not an abort.
  static absl::StatusOr<Tensor> empty_on(DType dtype, Shape shape, Device device);
  // A view of external memory kept alive by `keepalive` (may be null when the caller outlives it).
  static Tensor from_blob(void* data, DType dtype, Shape shape, Device device,
                          std::shared_ptr<void> keepalive);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t ndim() const { return int64_t(shape_.size()); }
  // Size of dimension i; negative i counts from the end.
  int64_t dim(int64_t i) const;
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  Device device() const;

  void* raw() const;
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }

  // Same storage, new shape with the same number of elements.
  absl::StatusOr<Tensor> reshape(Shape shape) const;
  // Deep copy onto `device`.
  absl::StatusOr<Tensor> to(Device device) const;
  Tensor clone() const;
  // Element i converted to float (f32/bf16/f16/fp8/e8m0/int types); CPU only.
  float item_as_float(int64_t i) const;
  // A CPU float32 copy (converting from any floating dtype).
  absl::StatusOr<Tensor> to_f32() const;

  // "bfloat16[4, 128] cpu"
  std::string to_string() const;

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  DType dtype_ = DType::kF32;
  Shape shape_;
};

}  // namespace fp8rl
