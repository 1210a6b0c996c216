// Tensor and Storage: allocation, views, copies between devices.
#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"
#include "core/float8.h"

#if defined(FP8RL_WITH_CUDA)
#include "core/cuda/device_memory.h"
#endif

namespace fp8rl {

std::string Device::to_string() const {
  return is_cpu() ? std::string("cpu") : absl::StrCat("cuda:", index);
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_to_string(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::shared_ptr<Storage>> Storage::allocate(size_t nbytes, Device device) {
  std::shared_ptr<Storage> s(new Storage());
  s->nbytes_ = nbytes;
  s->device_ = device;
  s->owned_ = true;
  if (device.is_cpu()) {
    size_t rounded = (nbytes + 63) / 64 * 64;
    s->data_ = rounded ? std::aligned_alloc(64, rounded) : nullptr;
    if (rounded && !s->data_)
      return absl::ResourceExhaustedError(absl::StrCat("host allocation of ", nbytes, " bytes"));
    return s;
  }
#if defined(FP8RL_WITH_CUDA)
  FP8RL_RETURN_IF_ERROR(cuda_device_alloc(&s->data_, nbytes, device.index));
  return s;
#else
  return absl::FailedPreconditionError("fp8rl was built without CUDA (FP8RL_CUDA=OFF)");
#endif
}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t nbytes, Device device,
                                       std::shared_ptr<void> keepalive) {
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = data;
  s->nbytes_ = nbytes;
  s->device_ = device;
  s->keepalive_ = std::move(keepalive);
  return s;
}

Storage::~Storage() {
  if (!owned_ || !data_) return;
  if (device_.is_cpu()) {
    std::free(data_);
    return;
  }
#if defined(FP8RL_WITH_CUDA)
  cuda_device_free(data_, device_.index);
#endif
}

Tensor Tensor::empty(DType dtype, Shape shape) {
  auto t = empty_on(dtype, std::move(shape), Device::cpu());
  FP8RL_CHECK_OK(t.status());
  return *std::move(t);
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t = empty(dtype, std::move(shape));
  if (t.nbytes()) std::memset(t.raw(), 0, t.nbytes());
  return t;
}

absl::StatusOr<Tensor> Tensor::empty_on(DType dtype, Shape shape, Device device) {
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("negative dim in ", shape_to_string(shape)));
  }
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  FP8RL_ASSIGN_OR_RETURN(t.storage_, Storage::allocate(t.nbytes(), device));
  return t;
}

Tensor Tensor::from_blob(void* data, DType dtype, Shape shape, Device device,
                         std::shared_ptr<void> keepalive) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.storage_ = Storage::wrap(data, t.nbytes(), device, std::move(keepalive));
  return t;
}

int64_t Tensor::dim(int64_t i) const {
  if (i < 0) i += ndim();
  FP8RL_CHECK(i >= 0 && i < ndim());
  return shape_[size_t(i)];
}

Device Tensor::device() const { return storage_ ? storage_->device() : Device::cpu(); }

void* Tensor::raw() const {
  return storage_ ? static_cast<char*>(storage_->data()) + offset_ : nullptr;
}

absl::StatusOr<Tensor> Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel())
    return absl::InvalidArgumentError(absl::StrCat("cannot reshape ", shape_to_string(shape_), " to ",
                                                   shape_to_string(shape)));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

absl::StatusOr<Tensor> Tensor::to(Device device) const {
  FP8RL_ASSIGN_OR_RETURN(Tensor t, empty_on(dtype_, shape_, device));
  if (nbytes() == 0) return t;
  if (this->device().is_cpu() && device.is_cpu()) {
    std::memcpy(t.raw(), raw(), nbytes());
    return t;
  }
#if defined(FP8RL_WITH_CUDA)
  FP8RL_RETURN_IF_ERROR(cuda_copy(t.raw(), device, raw(), this->device(), nbytes()));
  return t;
#else
  return absl::FailedPreconditionError("fp8rl was built without CUDA (FP8RL_CUDA=OFF)");
#endif
}

Tensor Tensor::clone() const {
  auto t = to(device());
  FP8RL_CHECK_OK(t.status());
  return *std::move(t);
}

float Tensor::item_as_float(int64_t i) const {
  FP8RL_CHECK(device().is_cpu() && i >= 0 && i < numel());
  switch (dtype_) {
    case DType::kF32: return data<float>()[i];
    case DType::kBF16: return bf16_to_f32(data<uint16_t>()[i]);
    case DType::kF16: return f16_to_f32(data<uint16_t>()[i]);
    case DType::kF8E4M3: return e4m3_to_f32(data<uint8_t>()[i]);
    case DType::kE8M0: return e8m0_to_f32(data<uint8_t>()[i]);
    case DType::kI8: return float(data<int8_t>()[i]);
    case DType::kI32: return float(data<int32_t>()[i]);
    case DType::kI64: return float(data<int64_t>()[i]);
    case DType::kU8: return float(data<uint8_t>()[i]);
  }
  return 0.f;
}

absl::StatusOr<Tensor> Tensor::to_f32() const {
  if (!device().is_cpu()) return absl::FailedPreconditionError("to_f32 needs a CPU tensor");
  Tensor out = empty(DType::kF32, shape_);
  float* o = out.data<float>();
  const int64_t n = numel();
  if (dtype_ == DType::kF32) {
    if (n) std::memcpy(o, raw(), nbytes());
  } else {
    for (int64_t i = 0; i < n; ++i) o[i] = item_as_float(i);
  }
  return out;
}

std::string Tensor::to_string() const {
  return absl::StrCat(std::string(dtype_name(dtype_)), shape_to_string(shape_), " ", device().to_string());
}

}  // namespace fp8rl
