// INT4 group kernels shared by quant/cuda/int4.cu and the fused weight export: fake-quant
// (y = level * scale in the source dtype) and compressed-tensors packing (int32 words of 8
// nibbles + bf16 scales), with source loaders that may dequantize FP8 and round to bf16 first.
//
// Fast path (group_size a power of two in [unit, 256], cols a multiple of the unit, 16-byte
// aligned buffers): int4_group_kernel, LG lanes per (row, group), E elements a lane, amax by
// 16-bit SIMD max and a shuffle over the LG lanes, one scale per lane and group, branch-free
// levels for bf16 values (int4_code_bf16), 8 nibbles per 32-bit store. Otherwise a
// per-(row, group) / per-word path with the same results.
#pragma once

#include <algorithm>

#include "quant/cuda/device_numerics.cuh"

namespace fp8rl::cuda_detail {

struct Int4Args {
  const void* x = nullptr;
  int64_t rows = 0, cols = 0, group_size = 0, groups = 0, packed_cols = 0;
  void* y = nullptr;          // fake-quant output (source dtype)
  int32_t* packed = nullptr;  // pack outputs
  uint16_t* scale = nullptr;
  unsigned long long* first_bad = nullptr;  // pack: smallest flat index of a non-finite input
  const float* src_s = nullptr;             // FP8 source: 128x128 scale_inv
  int64_t src_s_ld = 0;
  // Fast path (set by launch_int4_fast): warp tiles per row, and the constants that divide a tile
  // index by it with a multiply-high, an add and a shift (tile indices stay below 2^30).
  uint32_t tiles_per_row = 0, tpr_magic = 0, tpr_shift = 0;
};

// Granlund-Montgomery: n / d = (umulhi(n, m) + n) >> l for n < 2^31, l = ceil(log2 d),
// m = floor(2^32 (2^l - d) / d) + 1.
inline void set_tile_division(Int4Args& a, uint32_t tiles_per_row) {
  uint32_t l = 0;
  while ((uint64_t(1) << l) < tiles_per_row) ++l;
  a.tiles_per_row = tiles_per_row;
  a.tpr_shift = l;
  a.tpr_magic =
      uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << l) - tiles_per_row)) / tiles_per_row + 1);
}
__device__ __forceinline__ uint32_t tile_row(const Int4Args& a, uint32_t tile) {
  return (__umulhi(tile, a.tpr_magic) + tile) >> a.tpr_shift;
}
// --- loaders ---------------------------------------------------------------------------------
// Each reads the source as the CPU reference sees it (bf16-rounded where the export rounds).
//   load1(): one element as float32 bits (generic kernels and the non-finite scans; bits, not
//            floats: the amax key of a NaN is taken from its bits, see amax_fold_bits).
//   Fast path (32-bit row and column indices), a "unit" of kUnit consecutive elements (one lane's
//   share of one 16-byte load, or two for f32): load() issues its loads; unit() decodes them into
//   floats and returns the amax key of the CPU's values.
//   kScaled: the kernel loads the 128x128 block scale (block_scale) and passes it to unit(),
//   which may hand back the e4m3 values themselves, the CPU's values divided by a power of two k
//   (FP8 with a power-of-2 block scale), and sets k then (it stays 0 for the CPU's values); the
//   kernel levels those by int4_code_e4m3 with 1/S times k.
//   kBF16Values: every value is a bf16 (the key too), so int4_code_bf16 and int4_scale_bf16 are
//   exact for it.

__device__ __forceinline__ const uint8_t* src_at(const Int4Args& a, uint32_t r, uint32_t c,
                                                 int bytes) {
  return static_cast<const uint8_t*>(a.x) + (uint64_t(r) * uint32_t(a.cols) + c) * bytes;
}

struct I4LoadF32 {
  using Out = float;
  static constexpr int kUnit = 8, kBytes = 4;
  static constexpr bool kBF16Values = false, kScaled = false;
  struct Raw {
    uint4 lo, hi;
  };
  __device__ static Raw load(const Int4Args& a, uint32_t r, uint32_t c) {
    const uint8_t* p = src_at(a, r, c, 4);
    return {ld_stream16(p), ld_stream16(p + 16)};
  }
  __device__ static uint32_t unit(const Int4Args&, const Raw& w, float, float* x, float&) {
    const uint32_t b[8] = {w.lo.x, w.lo.y, w.lo.z, w.lo.w, w.hi.x, w.hi.y, w.hi.z, w.hi.w};
    uint32_t key = 0;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      x[e] = __uint_as_float(b[e]);
      key = amax_fold_bits(key, b[e]);
    }
    return key;
  }
  __device__ static uint32_t load1(const Int4Args& a, int64_t r, int64_t c) {
    return static_cast<const uint32_t*>(a.x)[r * a.cols + c];
  }
};

// A unit of eight bf16 values (four bf16x2 words) -> floats and their amax key.
__device__ __forceinline__ uint32_t bf16_unit(const uint4& w, float* x) {
  const uint32_t b[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    x[2 * i] = __uint_as_float(b[i] << 16);
    x[2 * i + 1] = __uint_as_float(b[i] & 0xffff0000u);
  }
  return bf16_key_of(mag16x2_max(w, 0));
}

struct I4LoadBF16 {
  using Out = uint16_t;
  static constexpr int kUnit = 8, kBytes = 2;
  static constexpr bool kBF16Values = true, kScaled = false;
  struct Raw {
    uint4 w;
  };
  __device__ static Raw load(const Int4Args& a, uint32_t r, uint32_t c) {
    return {ld_stream16(src_at(a, r, c, 2))};
  }
  __device__ static uint32_t unit(const Int4Args&, const Raw& w, float, float* x, float&) {
    return bf16_unit(w.w, x);
  }
  __device__ static uint32_t load1(const Int4Args& a, int64_t r, int64_t c) {
    return uint32_t(static_cast<const uint16_t*>(a.x)[r * a.cols + c]) << 16;
  }
};

// f32 master weights rounded to bf16 (export). A NaN is canonicalised by the hardware rounding,
// but it makes the group non-finite either way (the scan reads the exact bits through load1).
struct I4LoadF32AsBF16 {
  static constexpr int kUnit = 8, kBytes = 4;
  static constexpr bool kBF16Values = true, kScaled = false;
  using Raw = I4LoadF32::Raw;
  __device__ static Raw load(const Int4Args& a, uint32_t r, uint32_t c) {
    return I4LoadF32::load(a, r, c);
  }
  __device__ static uint32_t unit(const Int4Args&, const Raw& w, float, float* x, float&) {
    const uint4 h = make_uint4(bf16x2_bits_nonan(__uint_as_float(w.lo.x), __uint_as_float(w.lo.y)),
                               bf16x2_bits_nonan(__uint_as_float(w.lo.z), __uint_as_float(w.lo.w)),
                               bf16x2_bits_nonan(__uint_as_float(w.hi.x), __uint_as_float(w.hi.y)),
                               bf16x2_bits_nonan(__uint_as_float(w.hi.z), __uint_as_float(w.hi.w)));
    return bf16_unit(h, x);
  }
  __device__ static uint32_t load1(const Int4Args& a, int64_t r, int64_t c) {
    return f32_to_bf16_bits(__uint_as_float(I4LoadF32::load1(a, r, c))) << 16;
  }
};

// FP8 (e4m3 with a 128x128 scale_inv s) dequantized and rounded to bf16 (export). The bytes are
// widened by the hardware e4m3x2 -> f16x2 conversion (exact); the amax comes from the largest f16
// magnitude (|e4m3| orders like its f16 bits, and bf16(e4m3 * s) is monotone in |e4m3|). With a
// power-of-2 s in [2^-60, 2^60], bf16(e4m3 * s) = e4m3 * s exactly, so the unit hands back the
// e4m3 values with k = s; otherwise the CPU's values themselves (k stays 0).
struct I4LoadFP8AsBF16 {
  static constexpr int kUnit = 16, kBytes = 1;
  static constexpr bool kBF16Values = true, kScaled = true;
  struct Raw {
    uint4 w;
  };
  __device__ static float block_scale(const Int4Args& a, int64_t r, int64_t c) {
    return a.src_s[(r / kTile) * a.src_s_ld + c / kTile];
  }
  __device__ static Raw load(const Int4Args& a, uint32_t r, uint32_t c) {
    return {ld_stream16(src_at(a, r, c, 1))};
  }
  __device__ static uint32_t unit(const Int4Args&, const Raw& raw, float s, float* x, float& k) {
    const uint32_t b[4] = {raw.w.x, raw.w.y, raw.w.z, raw.w.w};
    uint32_t h[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(b[i]), __NV_E4M3);
      const __half2_raw hi =
          __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(b[i] >> 16), __NV_E4M3);
      h[2 * i] = uint32_t(lo.x) | (uint32_t(lo.y) << 16);
      h[2 * i + 1] = uint32_t(hi.x) | (uint32_t(hi.y) << 16);
    }
    const uint32_t m2 = mag16x2_max(make_uint4(h[4], h[5], h[6], h[7]),
                                    mag16x2_max(make_uint4(h[0], h[1], h[2], h[3]), 0));
    const float dmax = __half2float(__ushort_as_half(uint16_t(max(m2 & 0xffffu, m2 >> 16))));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      x[2 * i] = __half2float(__ushort_as_half(uint16_t(h[i])));
      x[2 * i + 1] = __half2float(__ushort_as_half(uint16_t(h[i] >> 16)));
    }
    const uint32_t sb = __float_as_uint(s);
    if ((sb & 0x807fffffu) == 0 && sb - 0x21800000u <= 0x3c000000u) {  // 2^-60 <= s <= 2^60
      k = s;  // dmax * s is exact (a NaN byte: NaN, a non-finite key either way)
      return __float_as_uint(__fmul_rn(dmax, s)) & 0x7fffffffu;
    }
    // Any other s: the CPU's values (only finite groups use them: no NaN here), in a branch of
    // its own (predicated alongside the power-of-2 case it would cost that case its instructions).
    // k stays 0.
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t r = bf16x2_bits_nonan(__fmul_rn(x[2 * i], s), __fmul_rn(x[2 * i + 1], s));
      x[2 * i] = __uint_as_float(r << 16), x[2 * i + 1] = __uint_as_float(r & 0xffff0000u);
    }
    return is_nan(dmax) ? 0x7fc00000u  // a NaN byte
                        : (f32_to_bf16_bits(mul_x86(dmax, s)) << 16) & 0x7fffffffu;
  }
  __device__ static uint32_t load1(const Int4Args& a, int64_t r, int64_t c) {
    const uint8_t b = static_cast<const uint8_t*>(a.x)[r * a.cols + c];
    return f32_to_bf16_bits(mul_x86(e4m3_byte_to_f32(b), block_scale(a, r, c))) << 16;
  }
};

// y = level * scale (x86 NaN rule, level first as in the CPU's expression), as Out.
template <class Out>
__device__ __forceinline__ void store_fake1(Out* y, float level, float scale) {
  const float f = mul_x86(level, scale);
  if constexpr (sizeof(Out) == 2)
    *y = uint16_t(f32_to_bf16_bits(f));
  else
    *y = f;
}

__device__ __forceinline__ void note_bad(const Int4Args& a, float v, int64_t r, int64_t c) {
  if (!isfinite(v)) atomicMin(a.first_bad, (unsigned long long)(r * a.cols + c));
}

// --- fast path ---------------------------------------------------------------------------------
// Geometry for group size kG and loader L: a lane owns E elements of one (row, group) in NU units;
// unit u of lane j is unit u * LG + j of the group, so the LG lanes of a group read LG
// consecutive units with each load. A warp "tile" is 32 / LG groups of one row; a warp takes KT
// consecutive tiles and issues all their loads before using any: up to 128 bytes a lane, and at
// most 64 elements (more raw registers cost occupancy: FP8 with 4 tiles ran at 2 CTAs per SM).
template <class L, int kG>
struct I4Geom {
  static constexpr int E = kG >= 128 ? 32 : (kG / 4 > L::kUnit ? kG / 4 : L::kUnit);
  static constexpr int NU = E / L::kUnit, LG = kG / E, TW = 32 * E;
  static constexpr int KT = E * L::kBytes >= 128 ? 1 : std::min(128 / (E * L::kBytes), 64 / E);
  static_assert(kG % L::kUnit == 0 && LG >= 1 && LG <= 32, "unsupported INT4 group size");
};

// A group holding inf or NaN (rare): the pack records the first non-finite element (its outputs
// are meaningless then), the fake-quant takes the exact element-by-element path. Inline (a call
// would copy the kernel's arguments to the stack on the hot path), loops kept rolled.
template <class L, int kG, bool kPack>
__device__ __forceinline__ void int4_nonfinite_lane(const Int4Args& a, int64_t r, int64_t col0,
                                                    int j, uint32_t key) {
  using G = I4Geom<L, kG>;
  const float s = int4_scale(key);
#pragma unroll 1
  for (int u = 0; u < G::NU; ++u) {
    const int64_t c0 = col0 + int64_t(u * G::LG + j) * L::kUnit;
    if (c0 >= a.cols) break;
#pragma unroll 1
    for (int e = 0; e < L::kUnit; ++e) {
      const float v = __uint_as_float(L::load1(a, r, c0 + e));
      if constexpr (kPack) {
        note_bad(a, v, r, c0 + e);
      } else {
        using Out = typename L::Out;
        store_fake1(static_cast<Out*>(a.y) + r * a.cols + c0 + e, int4_level(v, s), s);
      }
    }
  }
}

// FP8 sources: registers capped for 4 CTAs (32 warps) per SM (a 4-12 byte spill, outside the
// element loop); the other sources are left to the compiler.
template <class L, int kG, bool kPack>
__global__ void __launch_bounds__(256, L::kBytes == 1 ? 4 : 1) int4_group_kernel(const Int4Args a) {
  using G = I4Geom<L, kG>;
  constexpr int U = L::kUnit;
  static_assert(kPack || !L::kScaled, "the fake-quant takes the CPU's values");
  const int lane = threadIdx.x & 31, gl = lane / G::LG, j = lane % G::LG;
  const uint32_t first = (blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5)) * G::KT;
  const uint32_t rows = uint32_t(a.rows), cols = uint32_t(a.cols);
  // kScaled: the block scale of each unit, one a tile where a group lies in one 128x128 block.
  constexpr int NS = L::kScaled && kG > kTile ? G::NU : 1;
  typename L::Raw raw[G::KT][G::NU];
  float bs[G::KT][NS] = {};
  uint32_t row[G::KT], col0[G::KT];  // col0: the lane's group's first column
#pragma unroll
  for (int t = 0; t < G::KT; ++t) {
    const uint32_t tile = first + t;  // past the last tile: row >= rows
    const uint32_t r = tile_row(a, tile);
    row[t] = r;
    col0[t] = (tile - r * a.tiles_per_row) * G::TW + gl * kG;
#pragma unroll
    for (int u = 0; u < G::NU; ++u) {
      const uint32_t c = col0[t] + (u * G::LG + j) * U;
      const bool live = r < rows && c < cols;
      raw[t][u] = live ? L::load(a, r, c) : typename L::Raw{};
      if constexpr (L::kScaled)
        if (u < NS) bs[t][u] = live ? L::block_scale(a, r, c) : 0.f;
    }
  }
#pragma unroll
  for (int t = 0; t < G::KT; ++t) {
    const uint32_t r = row[t];
    float x[G::NU][U], k[G::NU];
    uint32_t key = 0;
    // Zero-filled units (past the edge) add a zero key. k stays 0 unless unit() hands back e4m3
    // values under a power-of-2 block scale.
#pragma unroll
    for (int u = 0; u < G::NU; ++u) {
      k[u] = 0.f;
      key = max(key, L::unit(a, raw[t][u], bs[t][NS > 1 ? u : 0], x[u], k[u]));
    }
    key = group_amax<G::LG>(key);
    if (r >= rows || col0[t] + j * U >= cols) continue;  // this lane has no unit
    if (key >= 0x7f800000u) {
      int4_nonfinite_lane<L, kG, kPack>(a, r, col0[t], j, key);
      continue;
    }
    const float s = L::kBF16Values ? int4_scale_bf16(key) : int4_scale(key), rcp = __frcp_rn(s);
    if (kPack && j == 0)  // s is finite and a bf16 value: its top half
      a.scale[uint64_t(r) * uint32_t(a.groups) + col0[t] / kG] = uint16_t(__float_as_uint(s) >> 16);
    // int4_code_e4m3 holds where S comes from e4m3 values under the same k as x: every unit of
    // the group has that k (a lane's units cover every block a group spans). A group across
    // blocks of different scales takes int4_code_bf16 of the CPU's values, x * k (exact).
    bool one_fma = true;
#pragma unroll
    for (int u = 1; u < NS; ++u) one_fma = one_fma && k[u] == k[0];
#pragma unroll
    for (int u = 0; u < G::NU; ++u) {
      const uint32_t c = col0[t] + (u * G::LG + j) * U;
      if (c >= cols) break;
      if constexpr (kPack) {
        uint32_t n[U];
        if (L::kScaled && k[u] != 0.f && one_fma) {  // e4m3 values: x / (S / k), exactly
          const float rk = __fmul_rn(rcp, k[u]);
#pragma unroll
          for (int e = 0; e < U; ++e)
            n[e] = __float_as_uint(int4_code_e4m3(x[u][e], rk, kInt4NibbleMagic));
        } else {
#pragma unroll
          for (int e = 0; e < U; ++e) {
            const float xe = L::kScaled && k[u] != 0.f ? __fmul_rn(x[u][e], k[u]) : x[u][e];
            if constexpr (L::kBF16Values)
              n[e] = __float_as_uint(int4_code_bf16(xe, s, rcp, kInt4NibbleMagic));
            else
              n[e] = int4_nibble(int4_level_fast(xe, s, rcp, int4_fast_ok(s)));
          }
        }
        int32_t* p = a.packed + uint64_t(r) * uint32_t(a.packed_cols) + c / 8;
        if constexpr (U == 16) {  // 8-byte aligned: cols % 16 == 0 and packed 8-byte aligned
          __stcs(reinterpret_cast<int2*>(p),
                 make_int2(int(pack_nibbles8(n)), int(pack_nibbles8(n + 8))));
        } else {
          __stcs(reinterpret_cast<int*>(p), int(pack_nibbles8(n)));
        }
      } else {
        using Out = typename L::Out;
        float f[U];
#pragma unroll
        for (int e = 0; e < U; ++e) {
          const float xe = x[u][e];
          if constexpr (L::kBF16Values) {  // level * S exactly, with the sign of x (-0 too)
            const float lv =
                __fsub_rn(int4_code_bf16(xe, s, rcp, kInt4LevelMagic), kInt4LevelMagic);
            f[e] = __uint_as_float((__float_as_uint(__fmul_rn(lv, s)) & 0x7fffffffu) |
                                   (__float_as_uint(xe) & 0x80000000u));
          } else {
            f[e] = __fmul_rn(int4_level_fast(xe, s, rcp, int4_fast_ok(s)), s);
          }
        }
        uint8_t* p = static_cast<uint8_t*>(a.y) + (uint64_t(r) * cols + c) * sizeof(Out);
        if constexpr (sizeof(Out) == 2) {
          uint32_t w[U / 2];
#pragma unroll
          for (int i = 0; i < U / 2; ++i) w[i] = bf16x2_bits_nonan(f[2 * i], f[2 * i + 1]);
#pragma unroll
          for (int i = 0; i < U / 8; ++i)
            st_stream16(p + 16 * i, make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]));
        } else {
#pragma unroll
          for (int i = 0; i < U / 4; ++i)
            st_stream16(p + 16 * i,
                        make_uint4(__float_as_uint(f[4 * i]), __float_as_uint(f[4 * i + 1]),
                                   __float_as_uint(f[4 * i + 2]), __float_as_uint(f[4 * i + 3])));
        }
      }
    }
  }
}

// Generic fake-quant: one thread per (row, group).
template <class L>
__global__ void __launch_bounds__(256) int4_fake_generic_kernel(const Int4Args a) {
  const int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= a.rows * a.groups) return;
  const int64_t r = item / a.groups, g = item % a.groups;
  const int64_t c0 = g * a.group_size, c1 = min(a.cols, c0 + a.group_size);
  uint32_t key = 0;
  for (int64_t c = c0; c < c1; ++c) key = amax_fold_bits(key, L::load1(a, r, c));
  const float s = int4_scale(key);
  using Out = typename L::Out;
  Out* y = static_cast<Out*>(a.y) + r * a.cols;
  for (int64_t c = c0; c < c1; ++c)
    store_fake1(&y[c], int4_level(__uint_as_float(L::load1(a, r, c)), s), s);
}

// Generic pack, step 1: the bf16 scale of each (row, group) into a.scale.
template <class L>
__global__ void __launch_bounds__(256) int4_scale_generic_kernel(const Int4Args a) {
  const int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= a.rows * a.groups) return;
  const int64_t r = item / a.groups, g = item % a.groups;
  const int64_t c0 = g * a.group_size, c1 = min(a.cols, c0 + a.group_size);
  uint32_t key = 0;
  for (int64_t c = c0; c < c1; ++c) key = amax_fold_bits(key, L::load1(a, r, c));
  a.scale[item] = uint16_t(f32_to_bf16_bits(int4_scale(key)));
}

// Generic pack, step 2: one thread per packed word (zero nibbles past cols).
template <class L>
__global__ void __launch_bounds__(256) int4_pack_generic_kernel(const Int4Args a) {
  const int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= a.rows * a.packed_cols) return;
  const int64_t r = item / a.packed_cols, w = item % a.packed_cols;
  uint32_t word = 0;
  for (int e = 0; e < 8; ++e) {
    const int64_t c = w * 8 + e;
    if (c >= a.cols) break;
    const float v = __uint_as_float(L::load1(a, r, c));
    note_bad(a, v, r, c);
    const float s = bf16_bits_to_f32(a.scale[r * a.groups + c / a.group_size]);
    word |= int4_nibble(int4_level(v, s)) << (4 * e);
  }
  a.packed[item] = int32_t(word);
}

inline unsigned blocks_for(int64_t threads) { return unsigned((threads + 255) / 256); }

template <class L, int kG, bool kPack>
cudaError_t launch_int4_fast(Int4Args a, cudaStream_t stream) {
  using G = I4Geom<L, kG>;
  set_tile_division(a, uint32_t((a.cols + G::TW - 1) / G::TW));
  const int64_t warps = (a.rows * a.tiles_per_row + G::KT - 1) / G::KT;
  int4_group_kernel<L, kG, kPack><<<unsigned((warps + 7) / 8), 256, 0, stream>>>(a);
  return cudaGetLastError();
}

// Launches the fake-quant (kPack false) or the pack (kPack true) of a over every row.
// vec: cols % 8 == 0 and the source (and fake-quant output) 16-byte aligned.
template <class L, bool kPack>
cudaError_t launch_int4(const Int4Args& a, bool vec, cudaStream_t stream) {
  const int64_t g = a.group_size;
  // Tile, row and column indices are 32-bit: tiles span >= 256 columns of a row, keep fewer than
  // 2^30 of them, and columns below 2^31.
  const bool fast = vec && a.cols % L::kUnit == 0 && g >= L::kUnit && g <= 256 &&
                    (L::kUnit < 16 || (reinterpret_cast<uintptr_t>(a.packed) & 7) == 0) &&
                    (g & (g - 1)) == 0 && a.rows * ((a.cols + 255) / 256) < (int64_t(1) << 30) &&
                    a.cols < (int64_t(1) << 31);
  if (fast) {
    switch (g) {
      case 8:
        if constexpr (L::kUnit <= 8) return launch_int4_fast<L, 8, kPack>(a, stream);
        break;
      case 16:
        return launch_int4_fast<L, 16, kPack>(a, stream);
      case 32:
        return launch_int4_fast<L, 32, kPack>(a, stream);
      case 64:
        return launch_int4_fast<L, 64, kPack>(a, stream);
      case 128:
        return launch_int4_fast<L, 128, kPack>(a, stream);
      default:
        return launch_int4_fast<L, 256, kPack>(a, stream);
    }
  }
  if constexpr (kPack) {
    int4_scale_generic_kernel<L><<<blocks_for(a.rows * a.groups), 256, 0, stream>>>(a);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    int4_pack_generic_kernel<L><<<blocks_for(a.rows * a.packed_cols), 256, 0, stream>>>(a);
  } else {
    int4_fake_generic_kernel<L><<<blocks_for(a.rows * a.groups), 256, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

}  // namespace fp8rl::cuda_detail
