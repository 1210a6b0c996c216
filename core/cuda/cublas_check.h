// FP8RL_CUBLAS_CHECK: turns a cuBLAS/cuBLASLt error into an absl::Status naming the expression,
// file, line and cuBLAS's own status name and message (the same shape as FP8RL_CUDA_CHECK).
#pragma once

#include <cublasLt.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fp8rl {

inline absl::Status cublas_status(cublasStatus_t st, const char* expr, const char* file, int line) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  std::string msg = absl::StrCat(expr, " failed at ", file, ":", line, ": ",
                                 cublasLtGetStatusName(st), ": ", cublasLtGetStatusString(st));
  // NOT_SUPPORTED / INVALID_VALUE come from a problem cuBLASLt cannot run: the caller's input.
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE)
    return absl::InvalidArgumentError(msg);
  if (st == CUBLAS_STATUS_ARCH_MISMATCH) return absl::FailedPreconditionError(msg);
  if (st == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

}  // namespace fp8rl

// Returns an error status from the enclosing function when a cuBLAS(Lt) call fails.
#define FP8RL_CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                           \
    ::absl::Status fp8rl_cublas_st_ = ::fp8rl::cublas_status((expr), #expr, __FILE__, __LINE__); \
    if (!fp8rl_cublas_st_.ok()) return fp8rl_cublas_st_;                                         \
  } while (0)
