// Flash attention backward on the tensor cores (FlashAttention-2 schedule). After the fp32 dq
// accumulator is cleared, three launches:
//   1. delta[t, h] = dot(dout, out) per row;
//   2. one CTA per (sequence, kv head, 128-key block), 8 warps: K and V stay in shared memory,
//      dK and dV stay in registers while the CTA walks every q head of the group and every
//      64-query block at or after its keys (causal), rebuilding P from lse:
//        S = Q K^T, dP = dO V^T              warps 2 (queries) x 4 (keys)
//        P = exp(S - lse), dS = P (dP - delta); P, dS -> shared memory (bf16)
//        dV += P^T dO, dK += dS^T Q          warps 4 (keys) x 2 (head_dim)
//        dQ += dS K                          fp32 atomics into the workspace
//      Q, dO, lse and delta of the next block load (cp.async) while this one computes;
//   3. dq = bf16(scale * accumulator).
#include <algorithm>

#include "core/cuda/cuda_check.h"
#include "model/cuda/attention.h"
#include "model/cuda/attention_tile.cuh"

namespace fp8rl::cuda {
namespace {

using namespace attention_detail;

constexpr int kBlockM = 64;   // query rows per step
constexpr int kBlockN = 128;  // keys per CTA
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;

struct BwdParams {
  const __nv_bfloat16 *q, *k, *v, *dout;
  const float* lse;
  float *delta, *dq_accum;
  __nv_bfloat16 *dk, *dv;
  const int32_t* cu_seqlens;
  int q_heads, kv_heads, group;  // group = q_heads / kv_heads
  int n_blocks;                  // key blocks of the longest sequence
  int64_t q_stride, kv_stride;   // elements from one token to the next
  float scale, scale_log2;
};

// Shared memory: K, V [kBlockN][D]; two stages of Q, dO [kBlockM][D] and lse, delta [kBlockM];
// P and dS [kBlockM][kBlockN].
template <int D>
struct BwdSmem {
  static constexpr uint32_t kKV = kBlockN * D * 2, kQ = kBlockM * D * 2;
  static constexpr uint32_t kPS = kBlockM * kBlockN * 2, kRow = kBlockM * 4;
  static constexpr uint32_t k = 0, v = kKV, q = 2 * kKV, dout = q + 2 * kQ, p = dout + 2 * kQ,
                            ds = p + kPS, lse = ds + kPS, delta = lse + 2 * kRow,
                            bytes = delta + 2 * kRow;
};

template <int D>
__global__ void __launch_bounds__(kThreads, 1) attention_bwd_kernel(const BwdParams p) {
  extern __shared__ __align__(128) uint8_t smem[];
  using L = BwdSmem<D>;
  constexpr int kKSteps = D / 16;
  // dK/dV warp tile: 32 keys x D/2; dQ warp tile: kDqRows x kDqCols (two n8 tiles at least).
  constexpr int kKvTiles = D / 16;
  constexpr int kDqWarpsM = D >= 64 ? 2 : 4;
  constexpr int kDqRows = kBlockM / kDqWarpsM, kDqCols = D / (kWarps / kDqWarpsM);
  constexpr int kDqMTiles = kDqRows / 16, kDqNTiles = kDqCols / 8;

  // Blocks run in (sequence, key block, kv head) order: the CTAs in flight read the Q and dO of
  // one sequence (which stay in L2), the longest (first) key blocks starting first.
  const int kvh = int(blockIdx.x % unsigned(p.kv_heads));
  const int n0 = int(blockIdx.x / unsigned(p.kv_heads) % unsigned(p.n_blocks)) * kBlockN;
  const int seq = int(blockIdx.x / unsigned(p.kv_heads) / unsigned(p.n_blocks));
  const int begin = p.cu_seqlens[seq];
  const int len = p.cu_seqlens[seq + 1] - begin;
  if (n0 >= len) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int mb_first = n0 / kBlockM;  // causal: queries before n0 see none of these keys
  const int mb_count = (len + kBlockM - 1) / kBlockM - mb_first;
  const int items = p.group * mb_count;  // (q head, query block) pairs, head-major

  const uint32_t base = smem_addr(smem);
  const uint32_t sK = base + L::k, sV = base + L::v, sP = base + L::p, sdS = base + L::ds;
  const auto sQ = [&](int b) { return base + L::q + uint32_t(b) * L::kQ; };
  const auto sdO = [&](int b) { return base + L::dout + uint32_t(b) * L::kQ; };
  const auto lse_row = [&](int b) {
    return reinterpret_cast<const float*>(smem + L::lse) + b * kBlockM;
  };
  const auto delta_row = [&](int b) {
    return reinterpret_cast<const float*>(smem + L::delta) + b * kBlockM;
  };

  const int64_t kv_off = (int64_t(begin) + n0) * p.kv_stride + int64_t(kvh) * D;
  load_tile<kBlockN, D, kThreads>(sK, p.k + kv_off, p.kv_stride, len - n0, tid);
  load_tile<kBlockN, D, kThreads>(sV, p.v + kv_off, p.kv_stride, len - n0, tid);
  const auto load_item = [&](int it) {
    const int b = it & 1, h = kvh * p.group + it / mb_count;
    const int m0 = (mb_first + it % mb_count) * kBlockM;
    const int64_t q_off = (int64_t(begin) + m0) * p.q_stride + int64_t(h) * D;
    load_tile<kBlockM, D, kThreads>(sQ(b), p.q + q_off, p.q_stride, len - m0, tid);
    load_tile<kBlockM, D, kThreads>(sdO(b), p.dout + q_off, p.q_stride, len - m0, tid);
    if (tid < 2 * kBlockM) {  // rows past the sequence read as 0 (their P is masked anyway)
      const int r = tid % kBlockM;
      const bool valid = m0 + r < len;
      const int64_t i = (int64_t(begin) + m0 + r) * p.q_heads + h;
      const float* src = tid < kBlockM ? p.lse : p.delta;
      const uint32_t dst =
          base + (tid < kBlockM ? L::lse : L::delta) + uint32_t(b * kBlockM + r) * 4;
      cp_async4(dst, valid ? src + i : src, valid);
    }
  };
  load_item(0);
  cp_async_commit();

  float dk[2][kKvTiles][4] = {}, dv[2][kKvTiles][4] = {};
  const int wm = warp & 1, wn = warp >> 1;  // phase 1: 32 queries x 32 keys
  const int kv_row = (warp >> 1) * 32, kv_col = (warp & 1) * (D / 2);  // phase 2
  const int dq_row = (warp % kDqWarpsM) * kDqRows, dq_col = (warp / kDqWarpsM) * kDqCols;

  for (int it = 0; it < items; ++it) {
    cp_async_wait_all();
    __syncthreads();  // this item landed; every warp is done with the previous one
    if (it + 1 < items) {
      load_item(it + 1);
      cp_async_commit();
    }
    const int b = it & 1, h = kvh * p.group + it / mb_count;
    const int m0 = (mb_first + it % mb_count) * kBlockM;

    // Phase 1: S = Q K^T and dP = dO V^T for this warp's 32 x 32 tile.
    float s[2][4][4] = {}, dp[2][4][4] = {};
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      uint32_t aq[2][4], ado[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        load_a<D>(aq[mt], sQ(b), wm * 32 + mt * 16, kk * 16, lane);
        load_a<D>(ado[mt], sdO(b), wm * 32 + mt * 16, kk * 16, lane);
      }
#pragma unroll
      for (int nt = 0; nt < 4; nt += 2) {
        uint32_t bk[4], bv[4];
        load_b<D>(bk, sK, wn * 32 + nt * 8, kk * 16, lane);
        load_b<D>(bv, sV, wn * 32 + nt * 8, kk * 16, lane);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_bf16(s[mt][nt], aq[mt], bk[0], bk[1]);
          mma_bf16(s[mt][nt + 1], aq[mt], bk[2], bk[3]);
          mma_bf16(dp[mt][nt], ado[mt], bv[0], bv[1]);
          mma_bf16(dp[mt][nt + 1], ado[mt], bv[2], bv[3]);
        }
      }
    }
    // P and dS; masked entries (key after query, or a query past the sequence) are exactly 0.
    const bool masked_block = n0 + wn * 32 + 31 > m0 + wm * 32 || m0 + wm * 32 + 32 > len;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = wm * 32 + mt * 16 + (lane >> 2) + half * 8, row = m0 + r;
        const float lse2 = lse_row(b)[r] * kLog2e, delta = delta_row(b)[r];
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int e = 2 * half; e < 2 * half + 2; ++e) {
            const int col = n0 + wn * 32 + nt * 8 + (lane & 3) * 2 + (e & 1);
            float pe = exp2_approx(fmaf(s[mt][nt][e], p.scale_log2, -lse2));
            float ds = pe * (dp[mt][nt][e] - delta);
            if (masked_block && (col > row || row >= len)) pe = ds = 0.f;
            s[mt][nt][e] = pe;
            dp[mt][nt][e] = ds;
          }
        uint8_t* prow = smem + L::p;
        uint8_t* dsrow = smem + L::ds;
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const uint32_t off = Tile<kBlockN>::offset(r, wn * 32 + nt * 8 + (lane & 3) * 2);
          *reinterpret_cast<uint32_t*>(prow + off) =
              pack_bf16(s[mt][nt][2 * half], s[mt][nt][2 * half + 1]);
          *reinterpret_cast<uint32_t*>(dsrow + off) =
              pack_bf16(dp[mt][nt][2 * half], dp[mt][nt][2 * half + 1]);
        }
      }
    __syncthreads();

    // Phase 2: dV += P^T dO, dK += dS^T Q over this block's queries (k = 64).
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
      uint32_t ap[2][4], ads[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        load_a_trans<kBlockN>(ap[mt], sP, kv_row + mt * 16, kk * 16, lane);
        load_a_trans<kBlockN>(ads[mt], sdS, kv_row + mt * 16, kk * 16, lane);
      }
#pragma unroll
      for (int dt = 0; dt < kKvTiles; dt += 2) {
        uint32_t bdo[4], bq[4];
        load_b_trans<D>(bdo, sdO(b), kv_col + dt * 8, kk * 16, lane);
        load_b_trans<D>(bq, sQ(b), kv_col + dt * 8, kk * 16, lane);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_bf16(dv[mt][dt], ap[mt], bdo[0], bdo[1]);
          mma_bf16(dv[mt][dt + 1], ap[mt], bdo[2], bdo[3]);
          mma_bf16(dk[mt][dt], ads[mt], bq[0], bq[1]);
          mma_bf16(dk[mt][dt + 1], ads[mt], bq[2], bq[3]);
        }
      }
    }

    // Phase 3: dQ += dS K over this CTA's keys (k = 128), added into the fp32 accumulator.
    float dq[kDqMTiles][kDqNTiles][4] = {};
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      uint32_t a[kDqMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kDqMTiles; ++mt)
        load_a<kBlockN>(a[mt], sdS, dq_row + mt * 16, kk * 16, lane);
#pragma unroll
      for (int nt = 0; nt < kDqNTiles; nt += 2) {
        uint32_t bk[4];
        load_b_trans<D>(bk, sK, dq_col + nt * 8, kk * 16, lane);
#pragma unroll
        for (int mt = 0; mt < kDqMTiles; ++mt) {
          mma_bf16(dq[mt][nt], a[mt], bk[0], bk[1]);
          mma_bf16(dq[mt][nt + 1], a[mt], bk[2], bk[3]);
        }
      }
    }
#pragma unroll
    for (int mt = 0; mt < kDqMTiles; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = dq_row + mt * 16 + (lane >> 2) + half * 8;
        if (m0 + r >= len) continue;
        float* dst =
            p.dq_accum + ((int64_t(begin) + m0 + r) * p.q_heads + h) * D + dq_col + (lane & 3) * 2;
#pragma unroll
        for (int nt = 0; nt < kDqNTiles; ++nt)
          atomicAdd(reinterpret_cast<float2*>(dst + nt * 8),
                    make_float2(dq[mt][nt][2 * half], dq[mt][nt][2 * half + 1]));
      }
  }

  // Epilogue: stage dK (scaled) and dV as bf16 over K and V, then 16-byte stores of valid rows.
  __syncthreads();
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = kv_row + mt * 16 + (lane >> 2) + half * 8;
#pragma unroll
      for (int dt = 0; dt < kKvTiles; ++dt) {
        const uint32_t off = Tile<D>::offset(r, kv_col + dt * 8 + (lane & 3) * 2);
        *reinterpret_cast<uint32_t*>(smem + L::k + off) =
            pack_bf16(dk[mt][dt][2 * half] * p.scale, dk[mt][dt][2 * half + 1] * p.scale);
        *reinterpret_cast<uint32_t*>(smem + L::v + off) =
            pack_bf16(dv[mt][dt][2 * half], dv[mt][dt][2 * half + 1]);
      }
    }
  __syncthreads();
  constexpr int kChunks = Tile<D>::kChunks;
#pragma unroll
  for (int j = 0; j < kBlockN * kChunks / kThreads; ++j) {
    const int i = tid + j * kThreads, r = i / kChunks, c = (i % kChunks) * 8;
    if (n0 + r >= len) continue;
    const int64_t off = (int64_t(begin) + n0 + r) * p.kv_stride + int64_t(kvh) * D + c;
    const uint32_t s_off = Tile<D>::offset(r, c);
    *reinterpret_cast<uint4*>(p.dk + off) = *reinterpret_cast<const uint4*>(smem + L::k + s_off);
    *reinterpret_cast<uint4*>(p.dv + off) = *reinterpret_cast<const uint4*>(smem + L::v + s_off);
  }
}

// delta[row] = dot(dout[row], out[row]) in fp32, one warp per (token, q head) row.
template <int D>
__global__ void __launch_bounds__(256)
    attention_bwd_delta_kernel(const __nv_bfloat16* out, const __nv_bfloat16* dout, float* delta,
                               int64_t rows) {
  const int64_t row = int64_t(blockIdx.x) * 8 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  float acc = 0.f;
#pragma unroll
  for (int d = lane * 2; d < D; d += 64) {
    const float2 o =
        __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(out + row * D + d));
    const float2 g =
        __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(dout + row * D + d));
    acc = fmaf(o.x, g.x, fmaf(o.y, g.y, acc));
  }
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);
  if (lane == 0) delta[row] = acc;
}

// dq = bf16(scale * accumulator), four elements a thread.
__global__ void __launch_bounds__(256)
    attention_bwd_dq_kernel(const float4* acc, uint2* dq, int64_t n4, float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float4 a = acc[i];
    dq[i] = make_uint2(pack_bf16(a.x * scale, a.y * scale), pack_bf16(a.z * scale, a.w * scale));
  }
}

template <int D>
absl::Status launch(const BwdParams& p, const __nv_bfloat16* out, __nv_bfloat16* dq, int64_t tokens,
                    unsigned blocks, cudaStream_t stream) {
  const int64_t rows = tokens * p.q_heads;
  attention_bwd_delta_kernel<D>
      <<<unsigned((rows + 7) / 8), 256, 0, stream>>>(out, p.dout, p.delta, rows);
  FP8RL_CUDA_CHECK_LAUNCH();

  constexpr int smem = BwdSmem<D>::bytes;
  FP8RL_CUDA_CHECK(cudaFuncSetAttribute(attention_bwd_kernel<D>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  attention_bwd_kernel<D><<<blocks, kThreads, smem, stream>>>(p);
  FP8RL_CUDA_CHECK_LAUNCH();

  int device = 0, sms = 0;
  FP8RL_CUDA_CHECK(cudaGetDevice(&device));
  FP8RL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t n4 = rows * D / 4;
  const unsigned dq_blocks = unsigned(std::clamp<int64_t>((n4 + 255) / 256, 1, int64_t(sms) * 8));
  attention_bwd_dq_kernel<<<dq_blocks, 256, 0, stream>>>(
      reinterpret_cast<const float4*>(p.dq_accum), reinterpret_cast<uint2*>(dq), n4, p.scale);
  FP8RL_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

size_t round_up_256(size_t n) { return (n + 255) / 256 * 256; }

// The workspace: the fp32 dq accumulator, then delta.
size_t dq_accum_bytes(const AttentionShape& s) {
  return round_up_256(size_t(std::max<int64_t>(0, s.tokens * s.q_heads * s.head_dim)) * 4);
}

}  // namespace

size_t attention_backward_workspace_bytes(const AttentionShape& s, int64_t max_seqlen) {
  return dq_accum_bytes(s) + round_up_256(size_t(std::max<int64_t>(0, s.tokens * s.q_heads)) * 4);
}

absl::Status attention_backward(const AttentionShape& s, int64_t max_seqlen, const __nv_bfloat16* q,
                                const __nv_bfloat16* k, const __nv_bfloat16* v,
                                const __nv_bfloat16* out, const float* lse,
                                const __nv_bfloat16* dout, __nv_bfloat16* dq, __nv_bfloat16* dk,
                                __nv_bfloat16* dv, void* workspace, cudaStream_t stream) {
  constexpr const char* op = "attention_backward";
  FP8RL_RETURN_IF_ERROR(check_shape(op, s, max_seqlen));
  const bool work = s.tokens > 0 && s.seqs > 0 && max_seqlen > 0;
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "q", q, 16, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "k", k, 16, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "v", v, 16, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "out", out, 16, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "lse", lse, 4, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "dout", dout, 16, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "dq", dq, 16, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "dk", dk, 16, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "dv", dv, 16, work));
  FP8RL_RETURN_IF_ERROR(check_buffer(op, "workspace", workspace, 16, work));
  if (!work) return absl::OkStatus();
  const int64_t n_blocks = (std::min(max_seqlen, s.tokens) + kBlockN - 1) / kBlockN;
  const int64_t blocks = s.seqs * s.kv_heads * n_blocks;
  FP8RL_REQUIRE(blocks <= INT32_MAX, op, ": seqs=", s.seqs, " x kv_heads=", s.kv_heads,
                " x key blocks=", n_blocks, " exceeds the grid");
  float* dq_accum = static_cast<float*>(workspace);
  FP8RL_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, dq_accum_bytes(s), stream));
  BwdParams p;
  p.q = q, p.k = k, p.v = v, p.dout = dout, p.lse = lse;
  p.delta = reinterpret_cast<float*>(static_cast<uint8_t*>(workspace) + dq_accum_bytes(s));
  p.dq_accum = dq_accum, p.dk = dk, p.dv = dv, p.cu_seqlens = s.cu_seqlens;
  p.q_heads = int(s.q_heads), p.kv_heads = int(s.kv_heads);
  p.group = int(s.q_heads / s.kv_heads), p.n_blocks = int(n_blocks);
  p.q_stride = s.q_heads * s.head_dim, p.kv_stride = s.kv_heads * s.head_dim;
  p.scale = s.scale, p.scale_log2 = s.scale * kLog2e;
  switch (s.head_dim) {
    case 32:
      return launch<32>(p, out, dq, s.tokens, unsigned(blocks), stream);
    case 64:
      return launch<64>(p, out, dq, s.tokens, unsigned(blocks), stream);
    default:
      return launch<128>(p, out, dq, s.tokens, unsigned(blocks), stream);
  }
}

}  // namespace fp8rl::cuda
