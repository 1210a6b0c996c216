// Host side of the INT4 pack launches: the non-finite flag's allocation, the launch and the
// synchronised read-back that turns a flagged element into InvalidArgument (row and column).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "quant/cuda/int4_kernels.cuh"

namespace fp8rl::cuda_detail {

template <class Launch>
absl::Status run_int4_pack(Int4Args a, const std::string& desc, const char* fn, Launch launch,
                           cudaStream_t stream) {
  unsigned long long* flag = nullptr;
  FP8RL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&flag), sizeof(*flag), stream));
  a.first_bad = flag;
  unsigned long long bad = ~0ull;
  bool copy_enqueued = false;
  auto body = [&]() -> absl::Status {
    FP8RL_CUDA_CHECK(cudaMemsetAsync(flag, 0xff, sizeof(*flag), stream));
    FP8RL_CUDA_CHECK(launch(a));
    FP8RL_CUDA_CHECK(cudaMemcpyAsync(&bad, flag, sizeof(bad), cudaMemcpyDeviceToHost, stream));
    copy_enqueued = true;
    return absl::OkStatus();
  };
  absl::Status st = body();
  (void)cudaFreeAsync(flag, stream);
  // Always wait once the copy into `bad` (on this stack frame) is queued.
  const cudaError_t sync = copy_enqueued ? cudaStreamSynchronize(stream) : cudaSuccess;
  if (st.ok()) st.Update(cuda_status(sync, "cudaStreamSynchronize", __FILE__, __LINE__));
  if (!st.ok()) return annotate(st, absl::StrCat(fn, " ", desc));
  if (bad != ~0ull)
    return absl::InvalidArgumentError(absl::StrCat(fn, " ", desc, ": non-finite value at row ",
                                                   bad / a.cols, ", column ", bad % a.cols));
  return absl::OkStatus();
}

}  // namespace fp8rl::cuda_detail
