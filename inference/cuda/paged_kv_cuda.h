// Kernels of the paged KV cache on the GPU: appending new K/V rows to their pages, causal GQA
// attention of new tokens over their sequence's pages (the decode path; prefill of a fresh
// sequence runs the flash kernel of model/cuda/attention.h), and the small pieces around the LM
// head of a generation step (gathering each sequence's last row, greedy choice with its log-prob).
//
// A pool holds, per layer, K and V as [pages * page_size, kv_heads * head_dim] bf16: the row of
// position p of a sequence is page_table[p / page_size] * page_size + p % page_size.
// Launchers enqueue on `stream` and return without synchronising; device pointers throughout.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace fp8rl {

// k_pool[slot[t]] = k[t] and v_pool[slot[t]] = v[t] for t < tokens, rows of `row_elems` bf16
// (a multiple of 8).
absl::Status kv_append_cuda(int64_t tokens, int64_t row_elems, const int32_t* slot,
                            const uint16_t* k, const uint16_t* v, uint16_t* k_pool,
                            uint16_t* v_pool, cudaStream_t stream);

struct PagedAttentionShape {
  int64_t tokens = 0;  // queries
  int64_t q_heads = 0, kv_heads = 0;
  int64_t head_dim = 0;  // 32, 64 or 128
  int64_t page_size = 0;
  float scale = 0.f;  // softmax scale
};

// For each query t: out[t] = softmax(scale q[t] K^T) V over positions [0, position[t]] of its
// sequence, whose page list starts at page_table + table_offset[t]. q, out [tokens, q_heads,
// head_dim] bf16; fp32 softmax and accumulation. q_heads / kv_heads must be at most 8.
// InvalidArgument naming the field for other shapes.
absl::Status paged_attention_cuda(const PagedAttentionShape& s, const uint16_t* q,
                                  const uint16_t* k_pool, const uint16_t* v_pool,
                                  const int32_t* page_table, const int32_t* table_offset,
                                  const int32_t* position, uint16_t* out, cudaStream_t stream);

// dst[i] = src[rows[i]] for i < n, rows of `cols` bf16 (cols even).
absl::Status gather_rows_cuda(int64_t n, int64_t cols, const int32_t* rows, const uint16_t* src,
                              uint16_t* dst, cudaStream_t stream);

// Per row of logits [rows, vocab] float32: argmax[r] = the first maximal column, logprob[r] =
// its log_softmax (max − log-sum-exp). Each row is split over kGreedyChunks blocks (a decode
// batch has few rows); `scratch` holds greedy_scratch_floats(rows) floats.
inline constexpr int64_t kGreedyChunks = 64;
inline constexpr int64_t greedy_scratch_floats(int64_t rows) { return rows * kGreedyChunks * 3; }
absl::Status greedy_rows_cuda(int64_t rows, int64_t vocab, const float* logits, int32_t* argmax,
                              float* logprob, float* scratch, cudaStream_t stream);

}  // namespace fp8rl
