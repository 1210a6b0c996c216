// Flash attention forward on the tensor cores (FlashAttention-2 schedule): one CTA per (sequence,
// q head, 128-query block), 4 warps of 32 query rows each; K/V stream through shared memory in
// 64-key stages (cp.async, double-buffered) and meet an online softmax in fp32, so no [L, L]
// matrix exists. Causal: a block reads keys only up to its last query; the masked diagonal stages
// are the only ones that pay for a mask.
#include <algorithm>

#include "core/cuda/cuda_check.h"
#include "model/cuda/attention.h"
#include "model/cuda/attention_tile.cuh"

namespace fp8rl::cuda {
namespace {

using namespace attention_detail;

constexpr int kBlockM = 128;  // query rows per CTA
constexpr int kBlockN = 64;   // keys per stage
constexpr int kWarps = 4;     // 32 query rows (two m16 tiles) each
constexpr int kThreads = kWarps * 32;

struct FwdParams {
  const __nv_bfloat16 *q, *k, *v;
  __nv_bfloat16* out;
  float* lse;
  const int32_t* cu_seqlens;
  int q_heads, group;           // group = q_heads / kv_heads
  int m_blocks;                 // query blocks of the longest sequence
  int64_t q_stride, kv_stride;  // elements from one token to the next
  float scale_log2;             // scale * log2(e): the softmax runs in base 2
};

// Q tile, then two stages of (K, V).
template <int D>
constexpr int fwd_smem_bytes() {
  return (kBlockM + 4 * kBlockN) * D * 2;
}

template <int D>
__global__ void __launch_bounds__(kThreads, 2) attention_fwd_kernel(const FwdParams p) {
  extern __shared__ __align__(128) uint8_t smem[];
  constexpr int kKSteps = D / 16;       // k16 steps of Q K^T
  constexpr int kDTiles = D / 8;        // n8 tiles of O
  constexpr int kNTiles = kBlockN / 8;  // n8 tiles of S
  constexpr uint32_t kQBytes = kBlockM * D * 2, kKVBytes = kBlockN * D * 2;

  // Blocks run in (sequence, query block from the last, q head) order: the CTAs in flight read
  // the K/V of one sequence (which stays in L2), and within it the longest blocks start first so
  // that short ones fill the tail.
  const int h = int(blockIdx.x % unsigned(p.q_heads));
  const int mb = int(blockIdx.x / unsigned(p.q_heads) % unsigned(p.m_blocks));
  const int seq = int(blockIdx.x / unsigned(p.q_heads) / unsigned(p.m_blocks));
  const int m0 = (p.m_blocks - 1 - mb) * kBlockM;
  const int begin = p.cu_seqlens[seq];
  const int len = p.cu_seqlens[seq + 1] - begin;
  if (m0 >= len) return;
  const int tid = threadIdx.x, lane = tid & 31, warp_row = (tid >> 5) * 32;
  const int kvh = h / p.group;
  const __nv_bfloat16* kg = p.k + int64_t(begin) * p.kv_stride + int64_t(kvh) * D;
  const __nv_bfloat16* vg = p.v + int64_t(begin) * p.kv_stride + int64_t(kvh) * D;

  const uint32_t sQ = smem_addr(smem);
  const auto sK = [&](int stage) { return sQ + kQBytes + uint32_t(stage) * 2 * kKVBytes; };
  const auto load_kv = [&](int nb) {
    const int n0 = nb * kBlockN;
    load_tile<kBlockN, D, kThreads>(sK(nb & 1), kg + n0 * p.kv_stride, p.kv_stride, len - n0, tid);
    load_tile<kBlockN, D, kThreads>(sK(nb & 1) + kKVBytes, vg + n0 * p.kv_stride, p.kv_stride,
                                    len - n0, tid);
  };
  // Causal: keys up to the block's last valid query.
  const int n_blocks = (min(m0 + kBlockM, len) + kBlockN - 1) / kBlockN;

  load_tile<kBlockM, D, kThreads>(sQ, p.q + (int64_t(begin) + m0) * p.q_stride + int64_t(h) * D,
                                  p.q_stride, len - m0, tid);
  load_kv(0);
  cp_async_commit();

  float o[2][kDTiles][4] = {};
  // Per row this thread holds ([m tile][half: row lane/4 or lane/4 + 8]): the max the
  // exponentials use (base-2 units of scale * score; it may lag the true max, see below) and the
  // sum of exponentials.
  float row_max[2][2] = {{-INFINITY, -INFINITY}, {-INFINITY, -INFINITY}};
  float row_sum[2][2] = {};

  for (int nb = 0; nb < n_blocks; ++nb) {
    cp_async_wait_all();
    __syncthreads();  // stage nb landed; every warp is done with stage nb - 1, refill it
    if (nb + 1 < n_blocks) {
      load_kv(nb + 1);
      cp_async_commit();
    }
    const int n0 = nb * kBlockN;
    if (n0 > m0 + warp_row + 31) continue;  // every key of the stage is after this warp's queries
    const uint32_t k_tile = sK(nb & 1), v_tile = k_tile + kKVBytes;

    float s[2][kNTiles][4] = {};
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      uint32_t a[2][4];
      load_a<D>(a[0], sQ, warp_row, kk * 16, lane);
      load_a<D>(a[1], sQ, warp_row + 16, kk * 16, lane);
#pragma unroll
      for (int nt = 0; nt < kNTiles; nt += 2) {
        uint32_t b[4];
        load_b<D>(b, k_tile, nt * 8, kk * 16, lane);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_bf16(s[mt][nt], a[mt], b[0], b[1]);
          mma_bf16(s[mt][nt + 1], a[mt], b[2], b[3]);
        }
      }
    }

    if (n0 + kBlockN - 1 > m0 + warp_row) {  // the stage crosses this warp's diagonal
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = m0 + warp_row + mt * 16 + (lane >> 2) + (e >> 1) * 8;
            const int col = n0 + nt * 8 + (lane & 3) * 2 + (e & 1);
            if (col > row) s[mt][nt][e] = -INFINITY;
          }
    }

    // Online softmax with a lazy running max: a row keeps exponentiating against its old max
    // until a score exceeds it by more than kLazyMax (base 2), so P stays <= 2^8 (exact enough
    // for bf16 P and fp32 sums, and the final O / sum and lse do not depend on which max was
    // used), and the O rescale, a multiply per accumulator, runs only in the stages where some
    // row of the warp jumps. Key 0 is in stage 0 and visible to every row, so row_max is finite
    // from the first stage on and exp2(-inf - finite) = 0 handles both masking and the first
    // rescale.
    constexpr float kLazyMax = 8.f;
    float cand[2][2];
    bool jump = false;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
          mx = fmaxf(mx, fmaxf(s[mt][nt][2 * half], s[mt][nt][2 * half + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        cand[mt][half] = mx * p.scale_log2;
        jump |= cand[mt][half] > row_max[mt][half] + kLazyMax;
      }
    if (__any_sync(0xffffffffu, jump)) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const float m_new = fmaxf(row_max[mt][half], cand[mt][half]);
          const float corr = exp2_approx(row_max[mt][half] - m_new);
          row_max[mt][half] = m_new;
          row_sum[mt][half] *= corr;
#pragma unroll
          for (int dt = 0; dt < kDTiles; ++dt) {
            o[mt][dt][2 * half] *= corr;
            o[mt][dt][2 * half + 1] *= corr;
          }
        }
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float sum = row_sum[mt][half];
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int e = 2 * half; e < 2 * half + 2; ++e) {
            const float pe = exp2_approx(fmaf(s[mt][nt][e], p.scale_log2, -row_max[mt][half]));
            s[mt][nt][e] = pe;
            sum += pe;
          }
        }
        row_sum[mt][half] = sum;
      }
    }

    // O += P V: the S accumulators of two neighbouring n8 tiles are the A fragment of one k16
    // step, so P never leaves the registers.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      uint32_t a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        a[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        a[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        a[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        a[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dt = 0; dt < kDTiles; dt += 2) {
        uint32_t b[4];
        load_b_trans<D>(b, v_tile, dt * 8, kk * 16, lane);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_bf16(o[mt][dt], a[mt], b[0], b[1]);
          mma_bf16(o[mt][dt + 1], a[mt], b[2], b[3]);
        }
      }
    }
  }

  // Epilogue: normalise, write lse, stage O (bf16) in this warp's own Q rows, store 16 bytes a
  // lane. Only this warp ever read those rows, so a warp barrier suffices.
  __syncwarp();
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float sum = row_sum[mt][half];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = 1.f / sum;
      const int r = warp_row + mt * 16 + (lane >> 2) + half * 8;
      if ((lane & 3) == 0 && m0 + r < len)
        p.lse[(int64_t(begin) + m0 + r) * p.q_heads + h] = (row_max[mt][half] + log2f(sum)) * kLn2;
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt)
        *reinterpret_cast<uint32_t*>(smem + Tile<D>::offset(r, dt * 8 + (lane & 3) * 2)) =
            pack_bf16(o[mt][dt][2 * half] * inv, o[mt][dt][2 * half + 1] * inv);
    }
  __syncwarp();
  constexpr int kChunks = Tile<D>::kChunks;
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    const int i = lane + j * 32, r = warp_row + i / kChunks, c = (i % kChunks) * 8;
    if (m0 + r < len)
      *reinterpret_cast<uint4*>(p.out + (int64_t(begin) + m0 + r) * p.q_stride + int64_t(h) * D +
                                c) = *reinterpret_cast<const uint4*>(smem + Tile<D>::offset(r, c));
  }
}

template <int D>
absl::Status launch(const FwdParams& p, unsigned blocks, cudaStream_t stream) {
  constexpr int smem = fwd_smem_bytes<D>();
  FP8RL_CUDA_CHECK(cudaFuncSetAttribute(attention_fwd_kernel<D>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  attention_fwd_kernel<D><<<blocks, kThreads, smem, stream>>>(p);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace

absl::Status attention_forward(const AttentionShape& s, int64_t max_seqlen, const __nv_bfloat16* q,
                               const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* out,
                               float* lse, cudaStream_t stream) {
  constexpr const char* op = "attention_forward";
  FP8RL_RETURN_IF_ERROR(check_shape(op, s, max_seqlen));
  const bool work = s.tokens > 0 && s.seqs > 0 && max_seqlen > 0;
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "q", q, 16, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "k", k, 16, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "v", v, 16, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "out", out, 16, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "lse", lse, 4, work));
  if (!work) return absl::OkStatus();
  const int64_t m_blocks = (std::min(max_seqlen, s.tokens) + kBlockM - 1) / kBlockM;
  const int64_t blocks = s.seqs * s.q_heads * m_blocks;
  FP8RL_REQUIRE(blocks <= INT32_MAX, op, ": seqs=", s.seqs, " x q_heads=", s.q_heads,
                " x query blocks=", m_blocks, " exceeds the grid");
  FwdParams p;
  p.q = q, p.k = k, p.v = v, p.out = out, p.lse = lse, p.cu_seqlens = s.cu_seqlens;
  p.q_heads = int(s.q_heads), p.group = int(s.q_heads / s.kv_heads), p.m_blocks = int(m_blocks);
  p.q_stride = s.q_heads * s.head_dim, p.kv_stride = s.kv_heads * s.head_dim;
  p.scale_log2 = s.scale * kLog2e;
  switch (s.head_dim) {
    case 32:
      return launch<32>(p, unsigned(blocks), stream);
    case 64:
      return launch<64>(p, unsigned(blocks), stream);
    default:
      return launch<128>(p, unsigned(blocks), stream);
  }
}

}  // namespace fp8rl::cuda
