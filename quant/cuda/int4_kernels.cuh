// INT4 group kernels shared by quant/cuda/int4.cu and the fused weight export: fake-quant
// (y = level * scale in the source dtype) and compressed-tensors packing (int32 words of 8
// nibbles + bf16 scales), with source loaders that may dequantize FP8 and round to bf16 first.
//
// Fast path (cols % 8 == 0, group_size = 8 * L with L a power of two <= 32, 16-byte aligned
// buffers): L consecutive lanes own one (row, group), 8 elements each; the group amax is a
// shuffle reduction. Otherwise a per-(row, group) / per-word path with the same results.
#pragma once

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
};

// --- loaders: 8 aligned elements (fast path) or one element, as float32 bit patterns ----------
// (bits, not floats: the amax key of a NaN is taken from its bits, see amax_fold_bits)

struct I4LoadF32 {
  using Out = float;
  __device__ static void load8(const Int4Args& a, int64_t r, int64_t c, uint32_t* o) {
    const uint8_t* p = static_cast<const uint8_t*>(a.x) + (r * a.cols + c) * 4;
    const uint4 u0 = ld_stream16(p), u1 = ld_stream16(p + 16);
    o[0] = u0.x, o[1] = u0.y, o[2] = u0.z, o[3] = u0.w;
    o[4] = u1.x, o[5] = u1.y, o[6] = u1.z, o[7] = u1.w;
  }
  __device__ static uint32_t load1(const Int4Args& a, int64_t r, int64_t c) {
    return static_cast<const uint32_t*>(a.x)[r * a.cols + c];
  }
};
struct I4LoadBF16 {
  using Out = uint16_t;
  __device__ static void load8(const Int4Args& a, int64_t r, int64_t c, uint32_t* o) {
    const uint4 u = ld_stream16(static_cast<const uint8_t*>(a.x) + (r * a.cols + c) * 2);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      o[2 * i] = w[i] << 16;
      o[2 * i + 1] = w[i] & 0xffff0000u;
    }
  }
  __device__ static uint32_t load1(const Int4Args& a, int64_t r, int64_t c) {
    return uint32_t(static_cast<const uint16_t*>(a.x)[r * a.cols + c]) << 16;
  }
};
struct I4LoadF32AsBF16 {
  __device__ static void load8(const Int4Args& a, int64_t r, int64_t c, uint32_t* o) {
    I4LoadF32::load8(a, r, c, o);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t b = bf16x2_bits(__uint_as_float(o[2 * i]), __uint_as_float(o[2 * i + 1]));
      o[2 * i] = b << 16;
      o[2 * i + 1] = b & 0xffff0000u;
    }
  }
  __device__ static uint32_t load1(const Int4Args& a, int64_t r, int64_t c) {
    return f32_to_bf16_bits(__uint_as_float(I4LoadF32::load1(a, r, c))) << 16;
  }
};
struct I4LoadFP8AsBF16 {
  __device__ static float block_scale(const Int4Args& a, int64_t r, int64_t c) {
    return a.src_s[(r / kTile) * a.src_s_ld + c / kTile];
  }
  __device__ static void load8(const Int4Args& a, int64_t r, int64_t c, uint32_t* o) {
    const float s = block_scale(a, r, c);
    const uint2 u =
        *reinterpret_cast<const uint2*>(static_cast<const uint8_t*>(a.x) + r * a.cols + c);
    const uint32_t w[2] = {u.x, u.y};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t b2 = w[i / 2] >> (16 * (i % 2));
      const float2 f = e4m3x2_to_f32x2(b2);
      const uint32_t b =
          bf16x2_bits(dequant_elem(f.x, b2 & 0xffu, s), dequant_elem(f.y, (b2 >> 8) & 0xffu, s));
      o[2 * i] = b << 16;
      o[2 * i + 1] = b & 0xffff0000u;
    }
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

// Fast path: one thread = 8 elements of one (row, group) in each of kU independent slots (their
// loads are all issued before any use: more bytes in flight); kL consecutive lanes = one group.
constexpr int kU = 2;

template <class L, int kL, bool kPack>
__global__ void __launch_bounds__(256) int4_group_kernel(const Int4Args a) {
  uint32_t v[kU][8];  // float32 bits
  int64_t r[kU], g[kU], c[kU];
  bool valid[kU];
  int j[kU];
#pragma unroll
  for (int u = 0; u < kU; ++u) {
    const int64_t idx = (int64_t(blockIdx.x) * kU + u) * blockDim.x + threadIdx.x;
    const int64_t item = idx / kL;  // row * groups + group
    j[u] = int(idx % kL);
    r[u] = item / a.groups, g[u] = item % a.groups;
    c[u] = g[u] * a.group_size + 8 * j[u];
    valid[u] = r[u] < a.rows && c[u] < a.cols;  // c + 8 <= cols since cols % 8 == 0
    if (valid[u]) L::load8(a, r[u], c[u], v[u]);
  }
#pragma unroll
  for (int u = 0; u < kU; ++u) {
    uint32_t key = 0;
    if (valid[u]) {
#pragma unroll
      for (int e = 0; e < 8; ++e) key = amax_fold_bits(key, v[u][e]);
    }
    key = group_amax<kL>(key);
    if (!valid[u]) continue;
    const float s = int4_scale(key);
    const float rcp = __fdiv_rn(1.0f, s);
    const bool fast = int4_fast_ok(s);
    if constexpr (kPack) {
      uint32_t word = 0;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float x = __uint_as_float(v[u][e]);
        note_bad(a, x, r[u], c[u] + e);
        word |= int4_nibble(int4_level_fast(x, s, rcp, fast)) << (4 * e);
      }
      a.packed[r[u] * a.packed_cols + c[u] / 8] = int32_t(word);
      if (j[u] == 0) a.scale[r[u] * a.groups + g[u]] = uint16_t(f32_to_bf16_bits(s));
    } else {
      using Out = typename L::Out;
      float f[8];
#pragma unroll
      for (int e = 0; e < 8; ++e)
        f[e] = mul_x86(int4_level_fast(__uint_as_float(v[u][e]), s, rcp, fast), s);
      uint8_t* p = static_cast<uint8_t*>(a.y) + (r[u] * a.cols + c[u]) * sizeof(Out);
      if constexpr (sizeof(Out) == 2) {
        uint32_t w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
          w[i] = f32_to_bf16_bits(f[2 * i]) | (f32_to_bf16_bits(f[2 * i + 1]) << 16);
        st_stream16(p, make_uint4(w[0], w[1], w[2], w[3]));
      } else {
        st_stream16(p, make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]),
                                  __float_as_uint(f[2]), __float_as_uint(f[3])));
        st_stream16(p + 16, make_uint4(__float_as_uint(f[4]), __float_as_uint(f[5]),
                                       __float_as_uint(f[6]), __float_as_uint(f[7])));
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

// Launches the fake-quant (kPack false) or the pack (kPack true) of a over every row.
// vec: cols % 8 == 0 and the buffers 16-byte aligned (8-byte for an FP8 source).
template <class L, bool kPack>
cudaError_t launch_int4(const Int4Args& a, bool vec, cudaStream_t stream) {
  const int64_t lanes = a.group_size / 8;
  const bool fast = vec && a.group_size % 8 == 0 && lanes <= 32 && (lanes & (lanes - 1)) == 0;
  if (fast) {
    const int64_t threads = a.rows * a.groups * lanes;
    const unsigned blocks = blocks_for((threads + kU - 1) / kU);
    switch (lanes) {
#define FP8RL_INT4_CASE(n)                                         \
  case n:                                                          \
    int4_group_kernel<L, n, kPack><<<blocks, 256, 0, stream>>>(a); \
    break;
      FP8RL_INT4_CASE(1)
      FP8RL_INT4_CASE(2)
      FP8RL_INT4_CASE(4)
      FP8RL_INT4_CASE(8)
      FP8RL_INT4_CASE(16)
      FP8RL_INT4_CASE(32)
#undef FP8RL_INT4_CASE
    }
    return cudaGetLastError();
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
