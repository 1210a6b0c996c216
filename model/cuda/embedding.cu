// Embedding gather and deterministic scatter-add (model/cuda/embedding_cuda.h).
#include <algorithm>
#include <numeric>

#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "model/cuda/embedding_cuda.h"
#include "model/cuda/kernel_util.cuh"

namespace fp8rl {
namespace model_cuda {
namespace {

__global__ void embedding_forward_kernel(int64_t tokens, int64_t rows, int64_t dim,
                                         const int32_t* __restrict__ ids,
                                         const uint16_t* __restrict__ table,
                                         float* __restrict__ out) {
  const int64_t n = rows * dim;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / dim, c = i % dim;
    out[i] = t < tokens ? bf16_bits_to_f32(table[int64_t(ids[t]) * dim + c]) : 0.f;
  }
}

// Block per distinct id, threads over columns.
__global__ void embedding_backward_kernel(int64_t dim, const int32_t* __restrict__ unique_ids,
                                          const int32_t* __restrict__ seg,
                                          const int32_t* __restrict__ order,
                                          const float* __restrict__ dout,
                                          float* __restrict__ dtable) {
  const int64_t u = blockIdx.x;
  float* row = dtable + int64_t(unique_ids[u]) * dim;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    float acc = row[c];
    for (int32_t j = seg[u]; j < seg[u + 1]; ++j) acc += dout[int64_t(order[j]) * dim + c];
    row[c] = acc;
  }
}

}  // namespace
}  // namespace model_cuda

using namespace model_cuda;

EmbeddingScatterPlan EmbeddingScatterPlan::build(std::span<const int32_t> ids) {
  EmbeddingScatterPlan p;
  p.order.resize(ids.size());
  std::iota(p.order.begin(), p.order.end(), 0);
  std::stable_sort(p.order.begin(), p.order.end(),
                   [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
  for (size_t j = 0; j < p.order.size(); ++j) {
    if (j == 0 || ids[p.order[j]] != ids[p.order[j - 1]]) {
      p.unique_ids.push_back(ids[p.order[j]]);
      p.seg.push_back(int32_t(j));
    }
  }
  p.seg.push_back(int32_t(p.order.size()));
  return p;
}

absl::Status embedding_forward_cuda(int64_t tokens, int64_t rows, int64_t dim, const int32_t* ids,
                                    const uint16_t* table, float* out, cudaStream_t stream) {
  FP8RL_REQUIRE(tokens >= 0 && rows >= tokens && dim > 0, "embedding_forward_cuda: tokens=", tokens,
                " rows=", rows, " dim=", dim);
  if (rows == 0) return absl::OkStatus();
  embedding_forward_kernel<<<grid_for(rows * dim), kThreads, 0, stream>>>(tokens, rows, dim, ids,
                                                                          table, out);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status embedding_backward_cuda(int64_t unique, int64_t dim, const int32_t* unique_ids,
                                     const int32_t* seg, const int32_t* order, const float* dout,
                                     float* dtable, cudaStream_t stream) {
  FP8RL_REQUIRE(unique >= 0 && dim > 0, "embedding_backward_cuda: unique=", unique, " dim=", dim);
  if (unique == 0) return absl::OkStatus();
  embedding_backward_kernel<<<unsigned(unique), kThreads, 0, stream>>>(dim, unique_ids, seg, order,
                                                                       dout, dtable);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace fp8rl
