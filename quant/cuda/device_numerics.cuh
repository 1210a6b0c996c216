// Device-side numerics shared by the quant/cuda kernels: bf16 rounding, the E4M3 encoder (hardware
// cvt with the NaN sign restored), amax folding, INT4 grid, 16-byte memory access and warp
// reductions. Each scalar rule here mirrors the CPU reference bit for bit (see the comments).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/float8.h"
#include "quant/block_quant.h"
#include "quant/int4.h"
#include "quant/scale.h"

namespace fp8rl::cuda_detail {

inline constexpr int kTile = 128;  // 1x128 / 128x128 block edge

// --- x86 NaN rules ---------------------------------------------------------------------------
// The CPU twins run on x86-64, where an arithmetic result that is NaN is the first NaN operand
// made quiet (sign and payload kept), or the "default NaN" 0xFFC00000 when no operand was NaN
// (0*inf, inf/inf). The GPU returns 0x7FFFFFFF for all of these. Where a NaN's bits reach an output
// (dequantized values, fake-quant outputs), the kernels use these to produce the same bits.
__device__ __forceinline__ bool is_nan(float f) {
  return (__float_as_uint(f) & 0x7fffffffu) > 0x7f800000u;
}
__device__ __forceinline__ float quiet(float f) {
  return __uint_as_float(__float_as_uint(f) | 0x00400000u);
}
__device__ __forceinline__ float x86_nan_rule(float a, float b, float r) {
  if (is_nan(a)) return quiet(a);
  if (is_nan(b)) return quiet(b);
  if (is_nan(r)) return __uint_as_float(0xffc00000u);
  return r;
}
// a * b and a / b, IEEE round to nearest (never contracted into an FMA), with x86 NaN results.
__device__ __forceinline__ float mul_x86(float a, float b) {
  return x86_nan_rule(a, b, __fmul_rn(a, b));
}
__device__ __forceinline__ float div_x86(float a, float b) {
  return x86_nan_rule(a, b, __fdiv_rn(a, b));
}

// --- bf16 -----------------------------------------------------------------------------------

__device__ __forceinline__ float bf16_bits_to_f32(uint32_t h) { return __uint_as_float(h << 16); }

// core/dtype.h f32_to_bf16: round to nearest even; NaN -> quiet NaN with the same sign; overflow
// rounds to inf. (cuda_bf16's __float2bfloat16_rn canonicalises NaN, so it is not used.)
__device__ __forceinline__ uint32_t f32_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) | 0x0040u) & 0xffffu;
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}

// The float32 value of f rounded to bf16 (the export's "-> BF16" step, kept in a register).
__device__ __forceinline__ float round_to_bf16(float f) {
  return bf16_bits_to_f32(f32_to_bf16_bits(f));
}

// Two floats -> bf16x2 bits (lo in bits 0-15), f32_to_bf16 per element: the hardware's
// cvt.rn.bf16x2.f32 rounds the same way but canonicalises NaN, so NaNs are redone.
static __device__ __noinline__ uint32_t bf16x2_bits_slow(float lo,
                                                         float hi) {  // some NaN: software
  return f32_to_bf16_bits(lo) | (f32_to_bf16_bits(hi) << 16);
}
__device__ __forceinline__ uint32_t bf16x2_bits(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  const uint32_t r = *reinterpret_cast<uint32_t*>(&h);
  // Out of line: predicated inline fix-ups would cost every element their instructions.
  if (is_nan(lo) | is_nan(hi)) return bf16x2_bits_slow(lo, hi);
  return r;
}
// For values known not to be NaN (a tile without NaN): the hardware rounding alone.
__device__ __forceinline__ uint32_t bf16x2_bits_nonan(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
// Rounds two floats to bf16 in place.
__device__ __forceinline__ void round2_to_bf16(float& lo, float& hi) {
  const uint32_t r = bf16x2_bits(lo, hi);
  lo = __uint_as_float(r << 16);
  hi = __uint_as_float(r & 0xffff0000u);
}

// --- E4M3 -----------------------------------------------------------------------------------

// Two floats -> two E4M3 bytes (lo in bits 0-7), equal to core/float8.h f32_to_e4m3 for every
// input: cvt.rn.satfinite.e4m3x2.f32 rounds to nearest even and saturates to +-448 (inf too);
// it returns 0x7F for any NaN, so the NaN's sign is put back.
__device__ __forceinline__ uint32_t e4m3x2(float lo, float hi) {
  uint32_t r = __nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, __NV_E4M3);
  const uint32_t ul = __float_as_uint(lo), uh = __float_as_uint(hi);
  if ((ul & 0x7fffffffu) > 0x7f800000u) r = (r & 0xff00u) | ((ul >> 24) & 0x80u) | 0x7fu;
  if ((uh & 0x7fffffffu) > 0x7f800000u) r = (r & 0x00ffu) | (((uh >> 24) & 0x80u) << 8) | 0x7f00u;
  return r;
}

// Four floats -> four E4M3 bytes, element 0 in the lowest byte (little-endian memory order).
__device__ __forceinline__ uint32_t e4m3x4(float a, float b, float c, float d) {
  return e4m3x2(a, b) | (e4m3x2(c, d) << 16);
}

// e4m3(x * scale) for two elements, for a finite scale (compute_scale_from_amax never returns
// inf or NaN): then only a NaN x gives a NaN product, and on x86 that product keeps x's sign.
// `may_nan`: whether x may hold a NaN (a tile whose amax is NaN); without, the cvt alone is exact.
static __device__ __noinline__ uint32_t e4m3x2_nan_fixup(uint32_t r, float lo, float hi) {
  if (is_nan(lo)) r = (r & 0xff00u) | ((__float_as_uint(lo) >> 24) & 0x80u) | 0x7fu;
  if (is_nan(hi)) r = (r & 0x00ffu) | (((__float_as_uint(hi) >> 24) & 0x80u) << 8) | 0x7f00u;
  return r;
}
__device__ __forceinline__ uint32_t e4m3x2_scaled(float lo, float hi, float scale, bool may_nan) {
  const uint32_t r = __nv_cvt_float2_to_fp8x2(
      make_float2(__fmul_rn(lo, scale), __fmul_rn(hi, scale)), __NV_SATFINITE, __NV_E4M3);
  return may_nan ? e4m3x2_nan_fixup(r, lo, hi) : r;
}

__device__ __forceinline__ float e4m3_byte_to_f32(uint32_t b) { return e4m3_to_f32(uint8_t(b)); }

// Two E4M3 bytes (bits 0-15 of b2) -> floats without conversion instructions (which run at a
// fraction of the ALU rate): the 7 magnitude bits placed at float32 bits 20-26 read as the value
// times 2^-120, for normal and subnormal codes alike, so one exact multiply finishes the job. The
// NaN codes 0x7F/0xFF come out as +-480: callers that may see them check the byte (dequant_elem).
__device__ __forceinline__ float e4m3_bits_to_f32(uint32_t b) {
  const uint32_t bits = ((b & 0x7fu) << 20) | ((b & 0x80u) << 24);
  return __fmul_rn(__uint_as_float(bits), 0x1p120f);
}
__device__ __forceinline__ float2 e4m3x2_to_f32x2(uint32_t b2) {
  return make_float2(e4m3_bits_to_f32(b2 & 0xffu), e4m3_bits_to_f32((b2 >> 8) & 0xffu));
}

// e4m3(b) * s with the CPU's bits: the product of the decoded value unless the byte is NaN or the
// product is NaN (s inf or NaN), then the x86 rule.
static __device__ __noinline__ float dequant_slow(uint32_t b, float s) {
  return mul_x86(e4m3_byte_to_f32(b), s);
}
__device__ __forceinline__ float dequant_elem(float decoded, uint32_t b, float s) {
  const float f = __fmul_rn(decoded, s);
  if (((b & 0x7fu) == 0x7fu) | is_nan(f)) return dequant_slow(b, s);
  return f;
}

// --- amax -----------------------------------------------------------------------------------
// quant/block_quant.h amax_key: |x| as ordered bits, NaN above inf, so the unsigned max of keys is
// the NaN-propagating amax (the largest NaN payload wins, as on the CPU).

__device__ __forceinline__ uint32_t amax_fold(uint32_t acc, float x) {
  return max(acc, amax_key(x));
}
// The same from float32 bits: where a NaN's payload reaches an output (INT4 scales), the key must
// come from the loaded bits, since the compiler may turn `bits & 0x7FFFFFFF` of a float into an
// |x| that canonicalises NaN.
__device__ __forceinline__ uint32_t amax_fold_bits(uint32_t acc, uint32_t bits) {
  return max(acc, bits & 0x7fffffffu);
}
__device__ __forceinline__ uint32_t amax_merge(uint32_t a, uint32_t b) { return max(a, b); }
__device__ __forceinline__ float amax_value(uint32_t key) { return __uint_as_float(key); }

// Max over groups of W consecutive lanes (W a power of two <= 32); every lane of a group gets it.
template <int W>
__device__ __forceinline__ uint32_t group_amax(uint32_t v) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) v = amax_merge(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// --- INT4 (quant/cpu/int4.cc) -----------------------------------------------------------------

// The group scale rounded to bf16: bf16(max(amax / 7, 1e-5)) with the CPU's NaN bits (a NaN amax
// gives a NaN scale, an infinite one an infinite scale).
__device__ __forceinline__ float int4_scale(uint32_t amax_key_bits) {
  if (amax_key_bits > 0x7f800000u)  // NaN: x86 keeps the (quieted) NaN, bf16 keeps its top half
    return __uint_as_float((((amax_key_bits | 0x00400000u) >> 16) | 0x40u) << 16);
  float s = div_x86(amax_value(amax_key_bits), float(kInt4QMax));
  if (s < kInt4MinScale) s = kInt4MinScale;
  return bf16_bits_to_f32(f32_to_bf16_bits(s));
}
// int4_scale of a finite amax that is a bf16 value (every kBF16Values loader's key): amax * RN(1/7)
// rounds to the same bf16 as amax / 7 for every finite bf16 amax (all 32,640 are checked against
// the CPU by tests/gpu/quant_kernels_test.cc), so neither the division nor the NaN rule is needed.
__device__ __forceinline__ float int4_scale_bf16(uint32_t amax_key_bits) {
  return round_to_bf16(
      fmaxf(__fmul_rn(amax_value(amax_key_bits), 1.0f / float(kInt4QMax)), kInt4MinScale));
}
// int4_level: rne(clamp(x / scale, -7, 7)); NaN stays NaN with the CPU's bits.
__device__ __forceinline__ float int4_level(float x, float scale) {
  float v = div_x86(x, scale);
  if (is_nan(v)) return v;
  v = fminf(fmaxf(v, -float(kInt4QMax)), float(kInt4QMax));
  return rintf(v);
}

// Round to nearest even for |v| < 2^22 with two adds (FRND and F2I run at a fraction of the ALU
// rate): adding 1.5 * 2^23 leaves no fraction bits.
__device__ __forceinline__ float rne_small(float v) {
  return __fsub_rn(__fadd_rn(v, 12582912.0f), 12582912.0f);
}

// int4_level without a division per element: v = x * (1/scale) is within 2e-6 of fl(x / scale)
// for |v| < 16, so rne(v) clamped to +-7 equals the exact level unless v is within 1e-5 of a
// half-integer (or not finite), where the exact division decides. rne(+-small) keeps v's sign,
// as nearbyint does. `rcp` = 1/scale; fast_ok: scale finite and below 2^125 (rcp normal).
static __device__ __noinline__ float int4_level_slow(float x, float scale) {
  return int4_level(x, scale);
}
__device__ __forceinline__ bool int4_fast_ok(float scale) {
  return (__float_as_uint(scale) & 0x7fffffffu) < 0x7e000000u;
}
__device__ __forceinline__ float int4_level_fast(float x, float scale, float rcp, bool fast_ok) {
  if (fast_ok) {
    const float v = __fmul_rn(x, rcp);
    if (fabsf(v) < 16.f) {
      const float q = rne_small(v);
      if (fabsf(__fsub_rn(v, q)) < 0.49999f)
        return copysignf(fminf(fmaxf(q, -float(kInt4QMax)), float(kInt4QMax)), v);
    }
  }
  return int4_level_slow(x, scale);
}
// level + 8 as an integer, for an integral level in [-7, 7].
__device__ __forceinline__ uint32_t int4_nibble(float level) {
  return uint32_t(__float_as_int(__fadd_rn(level, 12582912.0f)) - 0x4B400000 + 8) & 0xFu;
}

// The level of a bf16-valued x in a finite group, branch-free, as M + level in a float:
// v0 = x * R is within 2e-6 of x / S (R = 1/S); rem = x - v0 * S is exact (fma), and
// v1 = v0 + rem * R lands exactly on x / S whenever that is a half-integer, while every other
// quotient of two bf16 values is at least 4.9e-4 away from one. So RN(v1 + M) = M + rne(x / S)
// (M even: ties to even), the CPU's nearbyint(x / S). No clamp: S = bf16(max(amax / 7, 1e-5))
// keeps |x / S| <= 7.014 for every x of the group. Checked on the host against int4_level for
// every bf16 x and every bf16 scale a group can have (bench/NOTES.md).
//   kInt4NibbleMagic: the low 4 bits of the result are the nibble (level + 8);
//   kInt4LevelMagic:  result - kInt4LevelMagic is the level.
inline constexpr float kInt4NibbleMagic = 12582920.0f;  // 1.5 * 2^23 + 8
inline constexpr float kInt4LevelMagic = 12582912.0f;   // 1.5 * 2^23
__device__ __forceinline__ float int4_code_bf16(float x, float scale, float rcp, float magic) {
  const float v0 = __fmul_rn(x, rcp);
  const float rem = __fmaf_rn(-v0, scale, x);
  return __fadd_rn(__fmaf_rn(rem, rcp, v0), magic);
}
// The same for an e4m3 value x of a group of e4m3 values under one power-of-2 block scale k, by
// one FMA: `rcp` = RN(1 / S) * k, S = int4_scale_bf16 of the group's amax (an e4m3 value times
// k). S depends on the e4m3 amax and k alone, so the cases are few enough to check them all:
// tests/gpu/quant_kernels_test.cc compares every e4m3 group under every power-of-2 k in [2^-70,
// 2^70] with the CPU. Only for that S: a group spanning blocks of different scales needs
// int4_code_bf16 (an S from other values breaks it).
__device__ __forceinline__ float int4_code_e4m3(float x, float rcp, float magic) {
  return __fmaf_rn(x, rcp, magic);
}

// Eight words whose low nibbles are elements 0..7 (bits 4-7 zero, as int4_nibble or the bits of
// an int4_code_bf16 result with kInt4NibbleMagic give) -> one packed word, element 0 lowest.
__device__ __forceinline__ uint32_t pack_nibbles8(const uint32_t* n) {
  // n0 + (n1 << 4) leaves bits 8-15 zero for both kinds of input (0x4B400000 * 17 = 0xFF400000).
  const uint32_t b01 = n[0] + (n[1] << 4), b23 = n[2] + (n[3] << 4);
  const uint32_t b45 = n[4] + (n[5] << 4), b67 = n[6] + (n[7] << 4);
  return __byte_perm(b01 + (b23 << 8), b45 + (b67 << 8), 0x5410);
}

// Max of the magnitudes of the four bf16 (or f16) pairs of a 16-byte chunk, per 16-bit half.
__device__ __forceinline__ uint32_t mag16x2_max(const uint4& c, uint32_t acc) {
  constexpr uint32_t m = 0x7fff7fffu;
  return __vimax3_u16x2(__vimax3_u16x2(acc, c.x & m, c.y & m), c.z & m, c.w & m);
}
// The larger half of mag16x2_max's result, as a float32 key of the bf16 values.
__device__ __forceinline__ uint32_t bf16_key_of(uint32_t m2) {
  return max(m2 & 0xffffu, m2 >> 16) << 16;
}

// --- memory ---------------------------------------------------------------------------------

// Streaming 16-byte load/store (read or written once: do not keep in L1/L2 longer than needed).
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  return __ldcs(reinterpret_cast<const uint4*>(p));
}
__device__ __forceinline__ void st_stream16(void* p, uint4 v) {
  __stcs(reinterpret_cast<uint4*>(p), v);
}

inline bool aligned16_host(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
inline bool aligned_to_host(const void* p, size_t n) {
  return reinterpret_cast<uintptr_t>(p) % uintptr_t(n) == 0;
}

}  // namespace fp8rl::cuda_detail
