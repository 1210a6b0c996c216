// Building blocks of the flash attention kernels (attention_fwd.cu, attention_bwd.cu): cp.async
// tile loads into XOR-swizzled shared memory, ldmatrix fragment loads and the m16n8k16 BF16
// tensor-core MMA in the fragment layouts of the PTX ISA, and the host-side argument checks both
// launchers share.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "core/status.h"
#include "model/ops/attention.h"

namespace fp8rl::cuda::attention_detail {

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

// A [rows, COLS] bf16 tile in shared memory, rows COLS * 2 bytes apart. The 16-byte chunks of a
// row are permuted (chunk ^ f(row)) so that the 8 rows one ldmatrix matrix or one fragment store
// touches land in 8 distinct bank groups: unswizzled, rows 128 or 256 bytes apart would all hit
// the same banks.
template <int COLS>
struct Tile {
  static_assert(COLS == 32 || COLS == 64 || COLS == 128, "tile width");
  static constexpr int kChunks = COLS / 8;  // 16-byte chunks per row
  static constexpr int kRowBytes = COLS * 2;
  __device__ static __forceinline__ uint32_t offset(int row, int col) {
    const int chunk = col >> 3;
    // 64-byte rows: two rows share a 128-byte line, so the pattern repeats every other row.
    const int swz = COLS >= 64 ? chunk ^ (row & 7) : chunk ^ ((row >> 1) & 3);
    return uint32_t(row * kRowBytes + (swz << 4) + (col & 7) * 2);
  }
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1; zero-filled when !valid (src must still be a valid
// address, it is not read).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// Rows [0, ROWS) of a [*, row_stride] bf16 global matrix starting at g into a Tile<COLS>,
// rows >= rows_valid zero-filled; NTHREADS threads share the copy, each one 16-byte column chunk
// of rows kStep apart (kStep a multiple of the swizzle period: one shared offset plus constants).
template <int ROWS, int COLS, int NTHREADS>
__device__ __forceinline__ void load_tile(uint32_t dst, const __nv_bfloat16* g, int64_t row_stride,
                                          int rows_valid, int tid) {
  constexpr int kChunks = Tile<COLS>::kChunks, kStep = NTHREADS / kChunks;
  static_assert(NTHREADS % kChunks == 0 && kStep % 8 == 0 && ROWS % kStep == 0, "tile copy split");
  // Hide the stride from the optimiser: otherwise it keeps every copy's source address of every
  // stage alive across the whole main loop (a 64-bit register per copy, spilled at 255
  // registers); recomputing them costs one multiply-add per copy.
  asm volatile("" : "+l"(row_stride));
  const int r0 = tid / kChunks, c = (tid % kChunks) * 8;
  const uint32_t d0 = dst + Tile<COLS>::offset(r0, c);
  const __nv_bfloat16* src = g + r0 * row_stride + c;
#pragma unroll
  for (int j = 0; j < ROWS / kStep; ++j) {
    const bool valid = r0 + j * kStep < rows_valid;
    cp_async16(d0 + j * kStep * Tile<COLS>::kRowBytes, valid ? src + j * kStep * row_stride : g,
               valid);
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a . b for one m16n8k16 tile: a the A fragment (row-major 16x16), b0/b1 the B fragment
// (16x8, k-pairs per n), fp32 accumulators in the C layout (rows lane/4 and lane/4 + 8, columns
// 2 * (lane % 4) + {0, 1}).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The fragment loaders. A tile "stored [x][y]" is a Tile<COLS> whose rows index x. lane is the
// thread's lane; all 32 lanes must call together (ldmatrix is warp-wide).
//
// A (m16 x k16 at m0, k0) of a tile stored [m][k].
template <int COLS>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], uint32_t base, int m0, int k0, int lane) {
  ldmatrix_x4(a, base + Tile<COLS>::offset(m0 + (lane & 15), k0 + (lane >> 4) * 8));
}
// A (m16 x k16) of the transpose of a tile stored [k][m].
template <int COLS>
__device__ __forceinline__ void load_a_trans(uint32_t (&a)[4], uint32_t base, int m0, int k0,
                                             int lane) {
  ldmatrix_x4_trans(a, base + Tile<COLS>::offset(k0 + (lane & 7) + ((lane >> 4) << 3),
                                                 m0 + ((lane >> 3) & 1) * 8));
}
// B (k16 x n8) for the two n tiles n0 and n0 + 8 (b[0..1] and b[2..3]) of a tile stored [n][k].
template <int COLS>
__device__ __forceinline__ void load_b(uint32_t (&b)[4], uint32_t base, int n0, int k0, int lane) {
  ldmatrix_x4(b, base + Tile<COLS>::offset(n0 + (lane & 7) + ((lane >> 4) << 3),
                                           k0 + ((lane >> 3) & 1) * 8));
}
// B (k16 x n8, n tiles n0 and n0 + 8) of a tile stored [k][n].
template <int COLS>
__device__ __forceinline__ void load_b_trans(uint32_t (&b)[4], uint32_t base, int n0, int k0,
                                             int lane) {
  ldmatrix_x4_trans(
      b, base + Tile<COLS>::offset(k0 + (lane & 7) + ((lane >> 3) & 1) * 8, n0 + (lane >> 4) * 8));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// 2^x with the MUFU unit (relative error ~2^-22; 2^-inf = +0).
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Checks shared by both launchers; `op` names the caller in messages.
inline absl::Status check_shape(const char* op, const AttentionShape& s, int64_t max_seqlen) {
  FP8RL_REQUIRE(s.head_dim == 32 || s.head_dim == 64 || s.head_dim == 128, op,
                ": head_dim=", s.head_dim, " is not supported (32, 64 or 128)");
  FP8RL_REQUIRE(s.tokens >= 0 && s.tokens <= INT32_MAX, op, ": tokens=", s.tokens, " out of range");
  FP8RL_REQUIRE(s.seqs >= 0 && s.seqs <= INT32_MAX, op, ": seqs=", s.seqs, " out of range");
  FP8RL_REQUIRE(s.q_heads > 0 && s.q_heads <= 65535, op, ": q_heads=", s.q_heads, " out of range");
  FP8RL_REQUIRE(s.kv_heads > 0 && s.q_heads % s.kv_heads == 0, op, ": q_heads=", s.q_heads,
                " is not a multiple of kv_heads=", s.kv_heads);
  FP8RL_REQUIRE(std::isfinite(s.scale) && s.scale > 0.f, op, ": scale=", s.scale,
                " must be positive and finite");
  FP8RL_REQUIRE(max_seqlen >= 0, op, ": max_seqlen=", max_seqlen, " is negative");
  FP8RL_REQUIRE(s.seqs == 0 || s.cu_seqlens != nullptr, op, ": cu_seqlens is null");
  return absl::OkStatus();
}

// A device buffer argument: non-null (when there is work) and aligned to `align` bytes.
inline absl::Status check_buffer(const char* op, const char* name, const void* p, size_t align,
                                 bool needed) {
  FP8RL_REQUIRE(!needed || p != nullptr, op, ": ", name, " is null");
  FP8RL_REQUIRE(reinterpret_cast<uintptr_t>(p) % align == 0, op, ": ", name, " must be ", align,
                "-byte aligned");
  return absl::OkStatus();
}

}  // namespace fp8rl::cuda::attention_detail
