// Paged KV cache kernels (inference/cuda/paged_kv_cuda.h).
#include <cfloat>

#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "inference/cuda/paged_kv_cuda.h"
#include "model/cuda/kernel_util.cuh"
#include "quant/block_quant.h"

namespace fp8rl {
namespace {

using model_cuda::bf16_bits_to_f32;
using model_cuda::grid_for;
using model_cuda::kThreads;
using model_cuda::warp_sum;

__global__ void kv_append_kernel(int64_t tokens, int64_t row_vecs, const int32_t* __restrict__ slot,
                                 const uint4* __restrict__ k, const uint4* __restrict__ v,
                                 uint4* __restrict__ k_pool, uint4* __restrict__ v_pool) {
  const int64_t n = tokens * row_vecs;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / row_vecs, c = i % row_vecs;
    const int64_t dst = int64_t(slot[t]) * row_vecs + c;
    k_pool[dst] = k[i];
    v_pool[dst] = v[i];
  }
}

// E consecutive bf16 of a row as floats (E = head_dim / 32 elements per lane).
template <int E>
__device__ __forceinline__ void load_bf16(const uint16_t* p, float* f) {
  if constexpr (E == 4) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    f[0] = bf16_bits_to_f32(u.x & 0xffffu), f[1] = bf16_bits_to_f32(u.x >> 16);
    f[2] = bf16_bits_to_f32(u.y & 0xffffu), f[3] = bf16_bits_to_f32(u.y >> 16);
  } else if constexpr (E == 2) {
    const uint32_t u = *reinterpret_cast<const uint32_t*>(p);
    f[0] = bf16_bits_to_f32(u & 0xffffu), f[1] = bf16_bits_to_f32(u >> 16);
  } else {
    f[0] = bf16_bits_to_f32(*p);
  }
}

constexpr int kAttnWarps = 8;

struct PagedArgs {
  const uint16_t* q;
  const uint16_t* k_pool;
  const uint16_t* v_pool;
  const int32_t* page_table;
  const int32_t* table_offset;
  const int32_t* position;
  uint16_t* out;
  int q_heads, groups, page_size, row_elems;
  float scale;
};

// Block (query t, kv head): its `groups` q heads against the sequence's keys [0, position[t]].
// Warp w takes keys w, w + 8, ...; a lane holds HD / 32 elements of q, k, v and the output; each
// warp keeps an online softmax per q head, and the warps' states are merged at the end.
template <int HD, int GMAX>
__global__ void __launch_bounds__(kAttnWarps * 32) paged_attention_kernel(PagedArgs a) {
  constexpr int E = HD / 32;
  const int t = blockIdx.x, kvh = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int pos = a.position[t];
  const int32_t* table = a.page_table + a.table_offset[t];
  const int h0 = kvh * a.groups;

  float q[GMAX][E], acc[GMAX][E], m[GMAX], l[GMAX];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    m[g] = -FLT_MAX, l[g] = 0.f;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[g][e] = 0.f, q[g][e] = 0.f;
    if (g < a.groups) load_bf16<E>(a.q + (int64_t(t) * a.q_heads + h0 + g) * HD + lane * E, q[g]);
  }
  for (int j = warp; j <= pos; j += kAttnWarps) {
    const int64_t row = int64_t(table[j / a.page_size]) * a.page_size + j % a.page_size;
    const int64_t off = row * a.row_elems + int64_t(kvh) * HD + lane * E;
    float k[E], v[E];
    load_bf16<E>(a.k_pool + off, k);
    load_bf16<E>(a.v_pool + off, v);
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      if (g >= a.groups) break;
      float s = 0.f;
#pragma unroll
      for (int e = 0; e < E; ++e) s += q[g][e] * k[e];
      s = warp_sum(s) * a.scale;
      const float nm = fmaxf(m[g], s);
      const float c = __expf(m[g] - nm), p = __expf(s - nm);
      l[g] = l[g] * c + p;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[g][e] = acc[g][e] * c + p * v[e];
      m[g] = nm;
    }
  }

  __shared__ float sm_m[kAttnWarps][GMAX], sm_l[kAttnWarps][GMAX];
  __shared__ float sm_acc[kAttnWarps][GMAX][HD];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    if (lane == 0) sm_m[warp][g] = m[g], sm_l[warp][g] = l[g];
#pragma unroll
    for (int e = 0; e < E; ++e) sm_acc[warp][g][lane * E + e] = acc[g][e];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < a.groups * HD; i += blockDim.x) {
    const int g = i / HD, e = i % HD;
    float mx = -FLT_MAX;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) mx = fmaxf(mx, sm_m[w][g]);
    float sum = 0.f, o = 0.f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) {
      const float c = __expf(sm_m[w][g] - mx);  // 0 for warps that saw no key
      sum += sm_l[w][g] * c;
      o += sm_acc[w][g][e] * c;
    }
    a.out[(int64_t(t) * a.q_heads + h0 + g) * HD + e] =
        uint16_t(cuda_detail::f32_to_bf16_bits(o / sum));
  }
}

template <int HD>
cudaError_t launch_paged(const PagedArgs& a, dim3 grid, cudaStream_t stream) {
  const dim3 block(kAttnWarps * 32);
  if (a.groups <= 1) {
    paged_attention_kernel<HD, 1><<<grid, block, 0, stream>>>(a);
  } else if (a.groups <= 2) {
    paged_attention_kernel<HD, 2><<<grid, block, 0, stream>>>(a);
  } else if (a.groups <= 4) {
    paged_attention_kernel<HD, 4><<<grid, block, 0, stream>>>(a);
  } else {
    paged_attention_kernel<HD, 8><<<grid, block, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

__global__ void gather_rows_kernel(int64_t n, int64_t pairs, const int32_t* __restrict__ rows,
                                   const uint32_t* __restrict__ src, uint32_t* __restrict__ dst) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n * pairs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / pairs, c = i % pairs;
    dst[i] = src[int64_t(rows[r]) * pairs + c];
  }
}

// Block (row r, chunk c) folds columns [c * per, (c + 1) * per) of row r: its first maximal
// column and the sum of exp(z - its max), into scratch [r][c] (max, index, sum).
__global__ void __launch_bounds__(kThreads)
    greedy_partial_kernel(int64_t vocab, int64_t per, const float* __restrict__ logits,
                          float* __restrict__ part) {
  const float* z = logits + int64_t(blockIdx.x) * vocab;
  const int64_t lo = int64_t(blockIdx.y) * per, hi = min(vocab, lo + per);
  float best = -INFINITY;
  int64_t bi = lo;
  for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
    if (z[i] > best) best = z[i], bi = i;
  __shared__ float sv[kThreads / 32];
  __shared__ int64_t si[kThreads / 32];
  __shared__ float ss[kThreads / 32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) best = ov, bi = oi;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sv[warp] = best, si[warp] = bi;
  __syncthreads();
  float mx = sv[0];
  int64_t mi = si[0];
  for (int w = 1; w < kThreads / 32; ++w)
    if (sv[w] > mx || (sv[w] == mx && si[w] < mi)) mx = sv[w], mi = si[w];
  float sum = 0.f;
  for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) sum += expf(z[i] - mx);
  sum = warp_sum(sum);
  if (lane == 0) ss[warp] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.f;
    for (int w = 0; w < kThreads / 32; ++w) total += ss[w];
    float* out = part + (int64_t(blockIdx.x) * gridDim.y + blockIdx.y) * 3;
    out[0] = mx, out[1] = __int_as_float(int32_t(mi)), out[2] = total;
  }
}

// One thread per row: merges the row's chunks in order (ties keep the earlier chunk, whose
// indices are smaller).
__global__ void greedy_finish_kernel(int64_t rows, int chunks, const float* __restrict__ part,
                                     int32_t* __restrict__ argmax, float* __restrict__ logprob) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const float* p = part + r * chunks * 3;
  float mx = p[0];
  int32_t mi = __float_as_int(p[1]);
  for (int c = 1; c < chunks; ++c)
    if (p[c * 3] > mx) mx = p[c * 3], mi = __float_as_int(p[c * 3 + 1]);
  float sum = 0.f;
  for (int c = 0; c < chunks; ++c) sum += p[c * 3 + 2] * expf(p[c * 3] - mx);
  argmax[r] = mi;
  logprob[r] = -logf(sum);  // z[argmax] - (max + log(sum)) with z[argmax] = max
}

}  // namespace

absl::Status kv_append_cuda(int64_t tokens, int64_t row_elems, const int32_t* slot,
                            const uint16_t* k, const uint16_t* v, uint16_t* k_pool,
                            uint16_t* v_pool, cudaStream_t stream) {
  FP8RL_REQUIRE(row_elems % 8 == 0, "kv_append: row of ", row_elems,
                " bf16 is not a multiple of 8 (16-byte vectors)");
  if (tokens == 0) return absl::OkStatus();
  const int64_t vecs = row_elems / 8;
  kv_append_kernel<<<grid_for(tokens * vecs), kThreads, 0, stream>>>(
      tokens, vecs, slot, reinterpret_cast<const uint4*>(k), reinterpret_cast<const uint4*>(v),
      reinterpret_cast<uint4*>(k_pool), reinterpret_cast<uint4*>(v_pool));
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status paged_attention_cuda(const PagedAttentionShape& s, const uint16_t* q,
                                  const uint16_t* k_pool, const uint16_t* v_pool,
                                  const int32_t* page_table, const int32_t* table_offset,
                                  const int32_t* position, uint16_t* out, cudaStream_t stream) {
  FP8RL_REQUIRE(s.head_dim == 32 || s.head_dim == 64 || s.head_dim == 128,
                "paged attention: head_dim ", s.head_dim, " is not 32, 64 or 128");
  FP8RL_REQUIRE(s.kv_heads > 0 && s.q_heads % s.kv_heads == 0 && s.q_heads / s.kv_heads <= 8,
                "paged attention: q_heads ", s.q_heads, " must be 1 to 8 times kv_heads ",
                s.kv_heads);
  FP8RL_REQUIRE(s.page_size > 0 && s.scale > 0.f && s.tokens >= 0, "paged attention: page_size ",
                s.page_size, ", scale ", s.scale, ", tokens ", s.tokens);
  if (s.tokens == 0) return absl::OkStatus();
  const PagedArgs a{q,
                    k_pool,
                    v_pool,
                    page_table,
                    table_offset,
                    position,
                    out,
                    int(s.q_heads),
                    int(s.q_heads / s.kv_heads),
                    int(s.page_size),
                    int(s.kv_heads * s.head_dim),
                    s.scale};
  const dim3 grid(unsigned(s.tokens), unsigned(s.kv_heads));
  const cudaError_t e = s.head_dim == 32   ? launch_paged<32>(a, grid, stream)
                        : s.head_dim == 64 ? launch_paged<64>(a, grid, stream)
                                           : launch_paged<128>(a, grid, stream);
  FP8RL_CUDA_CHECK(e);
  return absl::OkStatus();
}

absl::Status gather_rows_cuda(int64_t n, int64_t cols, const int32_t* rows, const uint16_t* src,
                              uint16_t* dst, cudaStream_t stream) {
  FP8RL_REQUIRE(cols % 2 == 0, "gather_rows: cols ", cols, " is odd");
  if (n == 0) return absl::OkStatus();
  gather_rows_kernel<<<grid_for(n * cols / 2), kThreads, 0, stream>>>(
      n, cols / 2, rows, reinterpret_cast<const uint32_t*>(src), reinterpret_cast<uint32_t*>(dst));
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status greedy_rows_cuda(int64_t rows, int64_t vocab, const float* logits, int32_t* argmax,
                              float* logprob, float* scratch, cudaStream_t stream) {
  FP8RL_REQUIRE(vocab > 0 && vocab < (int64_t(1) << 31), "greedy_rows: vocabulary of ", vocab);
  if (rows == 0) return absl::OkStatus();
  const int64_t per = ceil_div(vocab, kGreedyChunks);
  greedy_partial_kernel<<<dim3(unsigned(rows), unsigned(kGreedyChunks)), kThreads, 0, stream>>>(
      vocab, per, logits, scratch);
  FP8RL_CUDA_CHECK_LAUNCH();
  greedy_finish_kernel<<<grid_for(rows), kThreads, 0, stream>>>(rows, int(kGreedyChunks), scratch,
                                                                argmax, logprob);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace fp8rl
