// CUDA device memory for Storage: allocation on a given device and copies across devices.
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "core/tensor.h"

namespace fp8rl {

absl::Status cuda_device_alloc(void** ptr, size_t nbytes, int device);
void cuda_device_free(void* ptr, int device);
// Synchronous copy of `nbytes` between any two of host and CUDA devices.
absl::Status cuda_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

}  // namespace fp8rl
