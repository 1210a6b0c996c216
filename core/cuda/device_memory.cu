// CUDA device memory for Storage.
#include "core/cuda/cuda_check.h"
#include "core/cuda/device_memory.h"

namespace fp8rl {

absl::Status cuda_device_alloc(void** ptr, size_t nbytes, int device) {
  *ptr = nullptr;
  if (nbytes == 0) return absl::OkStatus();
  FP8RL_CUDA_CHECK(cudaSetDevice(device));
  cudaError_t err = cudaMalloc(ptr, nbytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrCat("cudaMalloc of ", nbytes, " bytes on cuda:", device, " ran out of memory"));
  }
  return cuda_status(err, "cudaMalloc", __FILE__, __LINE__);
}

void cuda_device_free(void* ptr, int device) {
  cudaSetDevice(device);
  cudaFree(ptr);
}

absl::Status cuda_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return absl::OkStatus();
  cudaMemcpyKind kind = cudaMemcpyDefault;  // unified addressing resolves direction and devices
  if (dst_device.is_cuda()) {
    FP8RL_CUDA_CHECK(cudaSetDevice(dst_device.index));
  } else if (src_device.is_cuda()) {
    FP8RL_CUDA_CHECK(cudaSetDevice(src_device.index));
  }
  FP8RL_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, kind));
  return absl::OkStatus();
}

}  // namespace fp8rl
