// The 128x128-tile quantization kernel shared by quantize_1x128/128x128 and the fused weight
// export: a CTA brings 128x128 source tiles into shared memory (cp.async, two stages), then
// produces any of
//   kRow   1x128 rowwise tiles     (8 lanes a row, CPR / 8 chunks a lane, amax by shuffles)
//   kCol   1x128 columnwise tiles  (each thread owns 16 consecutive rows of one 4-byte column
//                                   word and stores 16 bytes of the transposed copy)
//   kBlock one 128x128 block       (CTA-wide amax)
// A source "loader" folds raw 16-byte chunks into an amax (in its own domain: SIMD max of bf16 or
// byte magnitudes, say) and turns them into V floats: plain f32/bf16, or the export loaders that
// dequantize FP8 and/or round to bf16 on the way in. Full tiles (in bounds, aligned) and edge
// tiles run separate copies of the tile code, so the common one carries no bounds checks.
#pragma once

#include <algorithm>

#include "quant/cuda/device_numerics.cuh"
#include "quant/cuda/quant_tuning.h"

namespace fp8rl::cuda_detail {

enum TileMode : int { kRow = 1, kCol = 2, kBlock = 4 };

struct TileArgs {
  const void* x = nullptr;
  int64_t rows = 0, cols = 0;
  uint8_t* q = nullptr;      // kRow / kBlock payload [rows, cols]
  float* s = nullptr;        // kRow: [col_tiles, rows]; kBlock: [row_tiles, s_ld]
  uint8_t* qt = nullptr;     // kCol payload [cols, rows]
  float* st = nullptr;       // kCol scales [row_tiles, cols]
  int64_t s_ld = 0;          // kBlock scale row stride
  const void* x2 = nullptr;  // combining loaders (kSources > 1): more sources, laid out as x
  const void* x3 = nullptr;
  // Two-output loaders (kOutputs 2): the copies of the second output, as q, s, qt, st.
  uint8_t* q2 = nullptr;
  float* s2 = nullptr;
  uint8_t* qt2 = nullptr;
  float* st2 = nullptr;
  const float* src_s = nullptr;  // FP8 source: 128x128 scale_inv
  int64_t src_s_ld = 0;
  float amax_eps = 0.f;
  float value_for_inf = 0.f;
  bool power_2 = true;
  bool vec_ok = false;  // x, q, qt 16-byte aligned, cols % 16 == 0, (kCol) rows % 16 == 0
};

// --- loaders: kBytes per source element, V = 16 / kBytes elements per 16-byte chunk ----------
//   fold(acc, chunk) / key(acc): the chunk amax in the loader's domain, then as the float32 key of
//     the CPU's values (acc starts at 0; keys of several threads merge by unsigned max);
//   raw_ok(): whether fold/key apply (else the kernel decodes and folds the floats);
//   decode(chunk, out, may_nan): V floats (may_nan: the tile's amax is NaN);
//   elem(bits) (2- and 4-byte sources, columnwise pass): one element; col_fold/col_key: the
//     amax of a column word over rows, per element of the word;
//   identity(scale, nan_key): the requantized block is the source bytes (FP8 -> FP8 export).
// A combining loader (2-byte sources, kSources 2 or 3) stages the tiles of x, x2 (and x3) side by
// side (one tile per CTA, no prefetch), then combine() turns the chunks at each position into the
// chunk of the output tile (kOutputs 1: into x's place) or of two output tiles (kOutputs 2: into
// x's and x2's places, quantized into q/s/qt/st and q2/s2/qt2/st2).

struct LoadBase {
  static constexpr int kSources = 1, kOutputs = 1;
  __device__ bool raw_ok() const { return true; }
  __device__ bool identity(float, bool) const { return false; }
};

struct LoadF32 : LoadBase {
  static constexpr int kBytes = 4;
  __device__ LoadF32(const TileArgs&, int64_t, int64_t) {}
  __device__ static uint32_t fold(uint32_t acc, const uint4& c) {
    constexpr uint32_t m = 0x7fffffffu;
    return max(max(acc, c.x & m), max(max(c.y & m, c.z & m), c.w & m));
  }
  __device__ uint32_t key(uint32_t acc) const { return acc; }
  __device__ float elem(uint32_t bits) const { return __uint_as_float(bits); }
  __device__ uint32_t col_fold(uint32_t acc, uint32_t w) const { return max(acc, w & 0x7fffffffu); }
  __device__ static uint32_t col_merge(uint32_t a, uint32_t b) { return max(a, b); }
  __device__ uint32_t col_key(uint32_t acc, int) const { return acc; }
  __device__ void decode(const uint4& c, float* o, bool) const {
    o[0] = __uint_as_float(c.x), o[1] = __uint_as_float(c.y);
    o[2] = __uint_as_float(c.z), o[3] = __uint_as_float(c.w);
  }
};
struct LoadBF16 : LoadBase {
  static constexpr int kBytes = 2;
  __device__ LoadBF16(const TileArgs&, int64_t, int64_t) {}
  __device__ uint32_t fold(uint32_t acc, const uint4& c) const { return mag16x2_max(c, acc); }
  __device__ uint32_t key(uint32_t acc) const { return bf16_key_of(acc); }
  __device__ float elem(uint32_t bits) const { return bf16_bits_to_f32(bits); }
  // A word holds two columns: their amax side by side, as bf16 magnitudes.
  __device__ uint32_t col_fold(uint32_t acc, uint32_t w) const {
    return __vmaxu2(acc, w & 0x7fff7fffu);
  }
  __device__ static uint32_t col_merge(uint32_t a, uint32_t b) { return __vmaxu2(a, b); }
  __device__ uint32_t col_key(uint32_t acc, int e) const {
    return ((acc >> (16 * e)) & 0xffffu) << 16;
  }
  __device__ void decode(const uint4& c, float* o, bool) const {
    const uint32_t w[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      o[2 * i] = __uint_as_float(w[i] << 16);
      o[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
};
// f32 master weights rounded to bf16 (export). Rounding is monotone, so the block amax is the
// rounded amax of the raw f32 keys (a NaN key stays NaN: the scale is 1 either way).
struct LoadF32AsBF16 : LoadBase {
  static constexpr int kBytes = 4;
  __device__ LoadF32AsBF16(const TileArgs&, int64_t, int64_t) {}
  __device__ uint32_t fold(uint32_t acc, const uint4& c) const { return LoadF32::fold(acc, c); }
  __device__ uint32_t key(uint32_t acc) const {
    return acc > 0x7f800000u ? 0x7fc00000u : (f32_to_bf16_bits(__uint_as_float(acc)) << 16);
  }
  __device__ void decode(const uint4& c, float* o, bool may_nan) const {
    const uint32_t lo = may_nan ? bf16x2_bits(__uint_as_float(c.x), __uint_as_float(c.y))
                                : bf16x2_bits_nonan(__uint_as_float(c.x), __uint_as_float(c.y));
    const uint32_t hi = may_nan ? bf16x2_bits(__uint_as_float(c.z), __uint_as_float(c.w))
                                : bf16x2_bits_nonan(__uint_as_float(c.z), __uint_as_float(c.w));
    o[0] = __uint_as_float(lo << 16), o[1] = __uint_as_float(lo & 0xffff0000u);
    o[2] = __uint_as_float(hi << 16), o[3] = __uint_as_float(hi & 0xffff0000u);
  }
};
// FP8 with 128x128 scale_inv, dequantized and rounded to bf16 (export). The tile is one source
// block, so one scale serves the whole CTA.
struct LoadFP8AsBF16 {
  static constexpr int kBytes = 1;
  static constexpr int kSources = 1, kOutputs = 1;
  float s;
  __device__ LoadFP8AsBF16(const TileArgs& a, int64_t rt, int64_t ct)
      : s(a.src_s[rt * a.src_s_ld + ct]) {}
  // For a finite s, key(bf16(e4m3(b) * s)) depends on b only through b & 0x7F and does not
  // decrease with it (scaling by |s| and rounding are monotone); 0x7F is NaN, whose key
  // (0x7FC00000) is above every other. So the largest b & 0x7F of the tile gives its amax key:
  // folded as two 16-bit lanes of byte magnitudes.
  __device__ bool raw_ok() const { return (__float_as_uint(s) & 0x7f800000u) != 0x7f800000u; }
  __device__ uint32_t fold(uint32_t acc, const uint4& c) const {
    const uint32_t w[4] = {c.x & 0x7f7f7f7fu, c.y & 0x7f7f7f7fu, c.z & 0x7f7f7f7fu,
                           c.w & 0x7f7f7f7fu};
#pragma unroll
    for (int i = 0; i < 4; ++i)
      acc = __vimax3_u16x2(acc, w[i] & 0x00ff00ffu, w[i] >> 8 & 0x00ff00ffu);
    return acc;
  }
  __device__ uint32_t key(uint32_t acc) const {
    const uint32_t m = max(acc & 0xffffu, acc >> 16);
    if (m == 0x7fu) return 0x7fc00000u;
    return amax_key(round_to_bf16(mul_x86(e4m3_byte_to_f32(m), s)));
  }
  // With a power-of-2 s in [2^-60, 2^60], bf16(e4m3(b) * s) = e4m3(b) * s exactly; when the new
  // scale is 1 / s (the usual case: the source block was quantized by the same rule), every
  // e4m3(x * scale) is e4m3(e4m3(b)) = b. A NaN amax (some NaN byte) takes the general path.
  __device__ bool identity(float scale, bool nan_key) const {
    const uint32_t sb = __float_as_uint(s);
    return !nan_key && (sb & 0x807fffffu) == 0 && sb >= 0x21800000u && sb <= 0x5d800000u &&
           __fmul_rn(scale, s) == 1.0f;
  }
  // may_nan false: no NaN byte in the tile and a finite scale, so no product is NaN.
  __device__ void decode(const uint4& c, float* o, bool may_nan) const {
    const uint32_t w[4] = {c.x, c.y, c.z, c.w};
    const bool slow = may_nan || !raw_ok();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t b2 = w[i] >> (16 * h);
        const float2 f = e4m3x2_to_f32x2(b2);
        uint32_t r;
        if (slow) {
          r = bf16x2_bits(dequant_elem(f.x, b2 & 0xffu, s),
                          dequant_elem(f.y, (b2 >> 8) & 0xffu, s));
        } else {
          r = bf16x2_bits_nonan(__fmul_rn(f.x, s), __fmul_rn(f.y, s));
        }
        o[4 * i + 2 * h] = __uint_as_float(r << 16);
        o[4 * i + 2 * h + 1] = __uint_as_float(r & 0xffff0000u);
      }
    }
  }
};

// Gathers a chunk element by element (edge tiles): elements outside [rows, cols] read as +0.
template <int kBytes>
__device__ __forceinline__ uint4 gather_chunk(const uint8_t* x, int64_t rows, int64_t cols,
                                              int64_t r, int64_t c) {
  uint32_t w[4] = {0, 0, 0, 0};
  constexpr int V = 16 / kBytes;
  constexpr int per_word = 4 / kBytes;
  if (r < rows) {
#pragma unroll
    for (int e = 0; e < V; ++e) {
      if (c + e < cols) {
        const uint8_t* p = x + (r * cols + c + e) * kBytes;
        uint32_t bits;
        if constexpr (kBytes == 4)
          bits = *reinterpret_cast<const uint32_t*>(p);
        else if constexpr (kBytes == 2)
          bits = *reinterpret_cast<const uint16_t*>(p);
        else
          bits = *p;
        w[e / per_word] |= bits << (8 * kBytes * (e % per_word));
      }
    }
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// e4m3(v[i] * scale) for N floats (N a multiple of 4), element 0 in the lowest byte.
// may_nan: the tile's amax key is NaN (only then can an element be NaN); decided once for the run.
template <int N, bool kMayNan>
__device__ __forceinline__ void quantize_run_as(const float* v, float scale, uint32_t* out) {
#pragma unroll
  for (int i = 0; i < N / 4; ++i)
    out[i] = e4m3x2_scaled(v[4 * i], v[4 * i + 1], scale, kMayNan) |
             (e4m3x2_scaled(v[4 * i + 2], v[4 * i + 3], scale, kMayNan) << 16);
}
template <int N>
__device__ __forceinline__ void quantize_run(const float* v, float scale, uint32_t* out,
                                             bool may_nan) {
  if (may_nan)
    quantize_run_as<N, true>(v, scale, out);
  else
    quantize_run_as<N, false>(v, scale, out);
}
__device__ __forceinline__ bool key_is_nan(uint32_t key) { return key > 0x7f800000u; }

// Stores V payload bytes of one row chunk: one vector store on the fast path, else byte by byte
// inside [rows, cols].
template <int V>
__device__ __forceinline__ void store_row_bytes(uint8_t* q, const uint32_t* b, bool full,
                                                int64_t rows, int64_t cols, int64_t r, int64_t c) {
  if (full) {
    uint8_t* p = q + r * cols + c;
    if constexpr (V == 16)
      st_stream16(p, make_uint4(b[0], b[1], b[2], b[3]));
    else if constexpr (V == 8)
      __stcs(reinterpret_cast<uint2*>(p), make_uint2(b[0], b[1]));
    else
      __stcs(reinterpret_cast<unsigned*>(p), b[0]);
    return;
  }
  if (r >= rows) return;
#pragma unroll
  for (int e = 0; e < V; ++e)
    if (c + e < cols) q[r * cols + c + e] = uint8_t(b[e / 4] >> (8 * (e % 4)));
}

__device__ __forceinline__ float scale_from_amax(uint32_t key, const TileArgs& a) {
  return compute_scale_from_amax(amax_value(key), kE4M3Max, a.power_2, a.amax_eps, a.value_for_inf);
}

// The scale and its inverse (what is stored), as compute_scale_from_amax and 1.0f / scale give
// them. Power-of-2 scales in integers: for amax = m * 2^(E-127) (m in [1, 2)), 448 / amax is
// (1.75 / m) * 2^(135-E), whose rounding never reaches the next power of two, so its exponent is
// 262 - E, less one when m > 1.75 (checked against compute_scale_from_amax for every float32
// amax, bench/NOTES.md); amax >= 2^-118 keeps scale and inverse normal. FP32 scales, 0, inf, NaN
// and tiny amax take the exact path.
__device__ __forceinline__ float scale_and_inverse(uint32_t key, const TileArgs& a, float* inv) {
  if (a.power_2) {
    float amax = amax_value(key);
    if (amax < a.amax_eps) amax = a.amax_eps;
    const uint32_t ab = __float_as_uint(amax);
    if (ab - 0x04800000u < 0x7f800000u - 0x04800000u) {  // 2^-118 <= amax < inf
      const uint32_t e = 262u - (ab >> 23) - ((ab & 0x7fffffu) > 0x600000u ? 1u : 0u);
      *inv = __uint_as_float((254u - e) << 23);
      return __uint_as_float(e << 23);
    }
  }
  const float scale = scale_from_amax(key, a);
  *inv = 1.0f / scale;
  return scale;
}

// Max over groups of W consecutive lanes with a custom merge (packed 16-bit maxima, say).
template <int W, class Merge>
__device__ __forceinline__ uint32_t group_merge(uint32_t v, Merge merge) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) v = merge(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// cp.async: 16 bytes global -> shared without a register round trip (L2 only, .cg).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Threads per CTA: 512 for 4-byte sources (8 chunks a thread), 256 otherwise (8 or 4 chunks).
template <class L>
inline constexpr int kTileThreads = L::kBytes == 4 ? 512 : 256;
// CTAs per SM the register cap is set for (the shared-memory stages allow as many: two for a
// three-source loader's 96 KB).
template <class L>
inline constexpr int kTileMinCtas = L::kBytes == 4     ? 1
                                    : L::kSources == 3 ? 2
                                    : L::kBytes == 2   ? 3
                                                       : 4;
// Shared memory: two stages of one 128x128 source tile, or the tiles of every source.
template <class L>
inline constexpr size_t kTileSmem = size_t(L::kSources > 2 ? L::kSources : 2) *
                                    size_t(kTile) * kTile* L::kBytes;

// One tile from shared memory `st` (128 rows of CPR chunks, chunk cc of row r at
// r * CPR + (cc ^ ((r >> 4) & 7))). kFull: the tile is inside the matrix and vec_ok holds.
template <class L, int kMode, bool kFull, int kOut = 0>
__device__ __forceinline__ void tile_body(const TileArgs& a, const L& load, const uint4* st,
                                          uint32_t* red, int64_t r0, int64_t c0, int64_t rt,
                                          int64_t ct) {
  constexpr int kThreads = kTileThreads<L>;
  constexpr int kWarps = kThreads / 32;
  constexpr int kB = L::kBytes;
  constexpr int V = 16 / kB;      // elements per chunk
  constexpr int CPR = kTile / V;  // chunks per tile row (8, 16 or 32)
  static_assert(!(kMode & kCol) || kB >= 2, "columnwise needs a 2- or 4-byte source");
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  // The output the tile goes to: the first, or a two-output loader's second.
  uint8_t* const out_q = kOut ? a.q2 : a.q;
  float* const out_s = kOut ? a.s2 : a.s;
  uint8_t* const out_qt = kOut ? a.qt2 : a.qt;
  float* const out_st = kOut ? a.st2 : a.st;
  auto chunk = [&](int row, int cc) { return st[row * CPR + (cc ^ ((row >> 4) & 7))]; };

  if constexpr ((kMode & kRow) != 0) {
    // 8 lanes a row, chunks c8, c8 + 8, ... (conflict-free: a quarter warp reads one row half).
    constexpr int CPL = CPR / 8, RPI = kThreads / 8, NI = kTile / RPI;
    const int c8 = t & 7, rr = t >> 3;
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      const int row = i * RPI + rr;
      uint4 ch[CPL];
      uint32_t acc = 0;
#pragma unroll
      for (int p = 0; p < CPL; ++p) {
        ch[p] = chunk(row, c8 + 8 * p);
        acc = load.fold(acc, ch[p]);
      }
      const uint32_t am = group_amax<8>(load.key(acc));
      float inv;
      const float scale = scale_and_inverse(am, a, &inv);
      const bool nan = key_is_nan(am);
      const int64_t r = r0 + row;
#pragma unroll
      for (int p = 0; p < CPL; ++p) {
        float v[V];
        load.decode(ch[p], v, nan);
        uint32_t b[V / 4];
        quantize_run<V>(v, scale, b, nan);
        store_row_bytes<V>(out_q, b, kFull, a.rows, a.cols, r, c0 + (c8 + 8 * p) * V);
      }
      if (c8 == 0 && (kFull || r < a.rows)) out_s[ct * a.rows + r] = inv;
    }
  }

  if constexpr ((kMode & kBlock) != 0) {
    constexpr int RPI = kThreads / CPR, NI = kTile / RPI;
    const int cc = t % CPR, rb = t / CPR;
    uint32_t am = 0;
    if (load.raw_ok()) {
      uint32_t acc = 0;
#pragma unroll
      for (int i = 0; i < NI; ++i) acc = load.fold(acc, chunk(i * RPI + rb, cc));
      am = load.key(acc);
    } else {  // FP8 source with an inf or NaN scale: fold the decoded values
#pragma unroll
      for (int i = 0; i < NI; ++i) {
        float v[V];
        load.decode(chunk(i * RPI + rb, cc), v, true);
#pragma unroll
        for (int e = 0; e < V; ++e) am = amax_fold(am, v[e]);
      }
    }
    am = group_amax<32>(am);
    if (lane == 0) red[warp] = am;
    __syncthreads();
    am = red[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) am = amax_merge(am, red[w]);
    float inv;
    const float scale = scale_and_inverse(am, a, &inv);
    const bool may_nan = key_is_nan(am);
    if (load.identity(scale, may_nan)) {
#pragma unroll
      for (int i = 0; i < NI; ++i) {
        const uint4 c = chunk(i * RPI + rb, cc);
        const uint32_t b[4] = {c.x, c.y, c.z, c.w};
        store_row_bytes<V>(out_q, b, kFull, a.rows, a.cols, r0 + i * RPI + rb, c0 + cc * V);
      }
    } else {
#pragma unroll
      for (int i = 0; i < NI; ++i) {
        float v[V];
        load.decode(chunk(i * RPI + rb, cc), v, may_nan);
        uint32_t b[V / 4];
        quantize_run<V>(v, scale, b, may_nan);
        store_row_bytes<V>(out_q, b, kFull, a.rows, a.cols, r0 + i * RPI + rb, c0 + cc * V);
      }
    }
    if (t == 0) out_s[rt * a.s_ld + ct] = inv;
  }

  if constexpr ((kMode & kCol) != 0) {
    constexpr int WPR = kTile * kB / 4;  // 4-byte words per tile row
    constexpr int EPW = 4 / kB;          // elements per word
    constexpr int WPI = kThreads / 8;    // words per pass (8 lanes, 16 rows each, per word)
    const uint32_t* sw = reinterpret_cast<const uint32_t*>(st);
    const int k = lane & 7;  // 16-row group
#pragma unroll 1
    for (int j = 0; j < WPR / WPI; ++j) {
      const int w = j * WPI + (t >> 3);  // lanes 8q..8q+7 of a warp: one word, 4 per warp
      uint32_t wd[16];
      uint32_t acc = 0;
#pragma unroll
      for (int rr = 0; rr < 16; ++rr) {
        const int row = 16 * k + rr;  // (row >> 4) & 7 == k
        wd[rr] = sw[row * WPR + (((w >> 2) ^ k) << 2) + (w & 3)];
        acc = load.col_fold(acc, wd[rr]);
      }
      acc = group_merge<8>(acc, L::col_merge);  // every element of the word: over all 128 rows
#pragma unroll
      for (int e = 0; e < EPW; ++e) {
        float cv[16];
#pragma unroll
        for (int rr = 0; rr < 16; ++rr)
          cv[rr] = load.elem(kB == 4 ? wd[rr] : (wd[rr] >> (16 * e)) & 0xffffu);
        const uint32_t am = load.col_key(acc, e);
        float inv;
        const float scale = scale_and_inverse(am, a, &inv);
        uint32_t b[4];
        quantize_run<16>(cv, scale, b, key_is_nan(am));
        const int64_t c = c0 + w * EPW + e;
        const int64_t r = r0 + 16 * k;
        if (kFull) {
          st_stream16(out_qt + c * a.rows + r, make_uint4(b[0], b[1], b[2], b[3]));
        } else if (c < a.cols) {
#pragma unroll
          for (int rr = 0; rr < 16; ++rr)
            if (r + rr < a.rows) out_qt[c * a.rows + r + rr] = uint8_t(b[rr / 4] >> (8 * (rr % 4)));
        }
        if (k == 0 && (kFull || c < a.cols)) out_st[rt * a.cols + c] = inv;
      }
    }
  }
}

// Persistent, two-stage pipeline: CTA b handles tiles b, b + gridDim.x, ...; while it works on
// one tile (from shared memory), the next one is already on its way in by cp.async, so the SM
// always has loads in flight and few registers are needed. Tile indices are 32-bit (the launcher
// checks). A tile lives in shared memory as 128 rows of CPR 16-byte chunks, chunk cc of row r at
// r * CPR + (cc ^ ((r >> 4) & 7)): conflict-free for 16-byte row accesses and for the column
// pass's 4-byte column reads.
template <class L, int kMode>
__global__ void __launch_bounds__(kTileThreads<L>, kTileMinCtas<L>)
    tile_quant_kernel(const TileArgs a) {
  constexpr int kThreads = kTileThreads<L>;
  constexpr int kB = L::kBytes;
  constexpr int V = 16 / kB;
  constexpr int CPR = kTile / V;
  constexpr int RPI = kThreads / CPR;  // rows per cp.async round
  constexpr int NI = kTile / RPI;
  constexpr int kStage = kTile * CPR;  // chunks per stage
  extern __shared__ uint4 smem[];
  __shared__ uint32_t red[kThreads / 32];

  const uint32_t col_tiles = uint32_t((a.cols + kTile - 1) / kTile);
  const uint32_t tiles = uint32_t((a.rows + kTile - 1) / kTile) * col_tiles;
  const int t = threadIdx.x, cc = t % CPR, rb = t / CPR;
  auto is_full = [&](int64_t r0, int64_t c0) {
    return a.vec_ok && r0 + kTile <= a.rows && c0 + kTile <= a.cols;
  };

  // Starts bringing tile `tile` of source x into stage `stage` (edge tiles: element loads,
  // zero-filled).
  auto issue_from = [&](const uint8_t* x, uint32_t tile, int stage) {
    const int64_t r0 = int64_t(tile / col_tiles) * kTile, c0 = int64_t(tile % col_tiles) * kTile;
    uint4* dst = smem + stage * kStage;
    if (is_full(r0, c0)) {
      const uint8_t* g = x + ((r0 + rb) * a.cols + c0 + cc * V) * kB;
      const int64_t step = RPI * a.cols * kB;
#pragma unroll
      for (int i = 0; i < NI; ++i) {
        const int row = i * RPI + rb;
        cp_async16(dst + row * CPR + (cc ^ ((row >> 4) & 7)), g + i * step);
      }
    } else {
#pragma unroll
      for (int i = 0; i < NI; ++i) {
        const int row = i * RPI + rb;
        dst[row * CPR + (cc ^ ((row >> 4) & 7))] =
            gather_chunk<kB>(x, a.rows, a.cols, r0 + row, c0 + cc * V);
      }
    }
  };
  auto issue = [&](uint32_t tile, int stage) {
    issue_from(static_cast<const uint8_t*>(a.x), tile, stage);
    if constexpr (L::kSources > 1) issue_from(static_cast<const uint8_t*>(a.x2), tile, 1);
    if constexpr (L::kSources > 2) issue_from(static_cast<const uint8_t*>(a.x3), tile, 2);
    cp_async_commit();
  };

  uint32_t tile = blockIdx.x;
  if (tile < tiles) issue(tile, 0);
  for (int stage = 0; tile < tiles; tile += gridDim.x, stage ^= 1) {
    if (L::kSources == 1 && tile + gridDim.x < tiles) {
      issue(tile + gridDim.x, stage ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();                  // the stage's chunks (everyone's) have landed
    if constexpr (L::kSources > 1) {  // each thread combines the chunks it brought in
#pragma unroll
      for (int i = 0; i < NI; ++i) {
        const int row = i * RPI + rb, at = row * CPR + (cc ^ ((row >> 4) & 7));
        if constexpr (L::kSources == 2)
          smem[at] = L::combine(smem[at], smem[kStage + at]);
        else
          L::combine(smem[at], smem[kStage + at], smem[2 * kStage + at], &smem[at],
                     &smem[kStage + at]);
      }
      __syncthreads();
    }
    const uint4* st = smem + stage * kStage;
    const int64_t rt = tile / col_tiles, ct = tile % col_tiles;
    const int64_t r0 = rt * kTile, c0 = ct * kTile;
    const L load(a, rt, ct);
    if (is_full(r0, c0))
      tile_body<L, kMode, true>(a, load, st, red, r0, c0, rt, ct);
    else
      tile_body<L, kMode, false>(a, load, st, red, r0, c0, rt, ct);
    if constexpr (L::kOutputs == 2) {  // the second output tile, from x2's place
      if (is_full(r0, c0))
        tile_body<L, kMode, true, 1>(a, load, st + kStage, red, r0, c0, rt, ct);
      else
        tile_body<L, kMode, false, 1>(a, load, st + kStage, red, r0, c0, rt, ct);
    }
    __syncthreads();  // done with this stage (and `red`) before the next issue refills it
  }
}

// Launches tile_quant_kernel<L, kMode> over every tile of a.rows x a.cols, as a persistent grid
// (as many CTAs as fit on the device at once, never more than there are tiles) or one CTA per tile,
// by quant_tuning().tile_policy (combining loaders: one CTA per tile).
template <class L, int kMode>
cudaError_t launch_tile_quant(const TileArgs& a, cudaStream_t stream) {
  const int64_t tiles = ((a.rows + kTile - 1) / kTile) * ((a.cols + kTile - 1) / kTile);
  if (tiles == 0) return cudaSuccess;
  if (tiles >= (int64_t(1) << 31)) return cudaErrorInvalidValue;  // 2^45 elements: 32-bit tiles
  constexpr int kThreads = kTileThreads<L>;
  constexpr size_t smem = kTileSmem<L>;
  // Per launch: the attribute belongs to the current device's context.
  cudaError_t e = cudaFuncSetAttribute(tile_quant_kernel<L, kMode>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  int device = 0, sms = 0, per_sm = 0;
  if (e == cudaSuccess) e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess)
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, tile_quant_kernel<L, kMode>,
                                                      kThreads, smem);
  if (e != cudaSuccess) return e;
  const int64_t resident = int64_t(sms) * std::max(per_sm, 1);
  // Measured (bench/NOTES.md): persistent wins for 4-byte sources (one 512-thread CTA per SM),
  // one tile per CTA for 1- and 2-byte sources (3-4 CTAs per SM already overlap their phases).
  const TilePolicy policy = quant_tuning().tile_policy.load(std::memory_order_relaxed);
  const bool persistent = L::kSources == 1 && (policy == TilePolicy::kPersistent ||
                                               (policy == TilePolicy::kAuto && L::kBytes == 4));
  const int64_t grid = persistent ? std::min<int64_t>(tiles, resident) : tiles;
  tile_quant_kernel<L, kMode><<<unsigned(grid), kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace fp8rl::cuda_detail
