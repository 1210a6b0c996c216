// CUDA twin of model/ops/embedding.h: bf16 table rows gathered into the float32 residual stream,
// and the scatter-add backward in the CPU's order (no atomics: run-to-run identical).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace fp8rl {

// out [rows, dim] float32: row t < tokens is table[ids[t]] (bf16 [vocab, dim]), rows past
// `tokens` (padding) are zero. ids on the device, already checked against the vocabulary.
absl::Status embedding_forward_cuda(int64_t tokens, int64_t rows, int64_t dim, const int32_t* ids,
                                    const uint16_t* table, float* out, cudaStream_t stream);

// The backward's work list, built on the host from the token ids: the distinct ids, and for each
// the positions holding it in ascending order (order[seg[u] .. seg[u+1])).
struct EmbeddingScatterPlan {
  std::vector<int32_t> unique_ids;  // [unique]
  std::vector<int32_t> seg;         // [unique + 1]
  std::vector<int32_t> order;       // [tokens]

  static EmbeddingScatterPlan build(std::span<const int32_t> ids);
};

// dtable [vocab, dim] += dout [tokens, dim] rows scattered to their ids: each row of dtable adds
// its tokens' gradients in ascending token order, as embedding_backward does. unique_ids, seg and
// order are the plan's arrays copied to the device.
absl::Status embedding_backward_cuda(int64_t unique, int64_t dim, const int32_t* unique_ids,
                                     const int32_t* seg, const int32_t* order, const float* dout,
                                     float* dtable, cudaStream_t stream);

}  // namespace fp8rl
