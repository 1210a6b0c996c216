// FP8RL_CUDA_CHECK and friends: turn a CUDA runtime error into an absl::Status naming the
// expression, file, line and CUDA's own message.
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fp8rl {

inline absl::Status cuda_status(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(expr, " failed at ", file, ":", line, ": ",
                                          cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
}

}  // namespace fp8rl

// Returns an error status from the enclosing function when a CUDA runtime call fails.
#define FP8RL_CUDA_CHECK(expr)                                                          \
  do {                                                                                  \
    ::absl::Status fp8rl_cuda_st_ = ::fp8rl::cuda_status((expr), #expr, __FILE__, __LINE__); \
    if (!fp8rl_cuda_st_.ok()) return fp8rl_cuda_st_;                                    \
  } while (0)

// After a kernel launch: reports launch-configuration errors.
#define FP8RL_CUDA_CHECK_LAUNCH() FP8RL_CUDA_CHECK(cudaGetLastError())
