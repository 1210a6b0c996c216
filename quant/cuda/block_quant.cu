// CUDA blockwise FP8: quantize (1x128 rowwise + columnwise in one pass, 128x128), dequantize,
// and the 128x128 transpose. Twins of quant/cpu/block_quant.cc.
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "quant/cuda/block_quant_cuda.h"
#include "quant/cuda/swiglu_math.cuh"
#include "quant/cuda/tile_quant.cuh"

namespace fp8rl {
namespace {

using namespace cuda_detail;

// --- dequantize: 16 payload bytes a thread -----------------------------------------------------

template <bool k1x128>
__device__ __forceinline__ float dq_scale(const float* s, int64_t rows, int64_t s_ld, int64_t r,
                                          int64_t c) {
  return k1x128 ? s[(c / kTile) * rows + r] : s[(r / kTile) * s_ld + c / kTile];
}

// Vectorised: cols % 16 == 0, q and out 16-byte aligned. Each thread converts kDqU chunks of 16
// payload bytes whose loads are issued together.
constexpr int kDqU = 2;

template <bool k1x128, bool kBF16>
__global__ void __launch_bounds__(256)
    dequant_vec_kernel(const uint8_t* __restrict__ q, const float* __restrict__ s,
                       void* __restrict__ out, int64_t rows, int64_t cols, int64_t s_ld,
                       int64_t chunks) {
  const int64_t cpr = cols / 16;
  int64_t idx[kDqU];
  uint4 raw[kDqU];
  float scale[kDqU];
#pragma unroll
  for (int u = 0; u < kDqU; ++u) {
    idx[u] = (int64_t(blockIdx.x) * kDqU + u) * blockDim.x + threadIdx.x;
    if (idx[u] >= chunks) continue;
    const int64_t r = idx[u] / cpr, c = (idx[u] % cpr) * 16;
    scale[u] = dq_scale<k1x128>(s, rows, s_ld, r, c);
    raw[u] = ld_stream16(q + idx[u] * 16);
  }
#pragma unroll
  for (int u = 0; u < kDqU; ++u) {
    if (idx[u] >= chunks) continue;
    const uint32_t w[4] = {raw[u].x, raw[u].y, raw[u].z, raw[u].w};
    float f[16];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t b2 = w[i / 2] >> (16 * (i % 2));
      const float2 h = e4m3x2_to_f32x2(b2);
      f[2 * i] = dequant_elem(h.x, b2 & 0xffu, scale[u]);
      f[2 * i + 1] = dequant_elem(h.y, (b2 >> 8) & 0xffu, scale[u]);
    }
    if constexpr (kBF16) {
      uint32_t o[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) o[i] = bf16x2_bits(f[2 * i], f[2 * i + 1]);
      uint8_t* p = static_cast<uint8_t*>(out) + idx[u] * 32;
      st_stream16(p, make_uint4(o[0], o[1], o[2], o[3]));
      st_stream16(p + 16, make_uint4(o[4], o[5], o[6], o[7]));
    } else {
      uint8_t* p = static_cast<uint8_t*>(out) + idx[u] * 64;
#pragma unroll
      for (int i = 0; i < 4; ++i)
        st_stream16(p + 16 * i,
                    make_uint4(__float_as_uint(f[4 * i]), __float_as_uint(f[4 * i + 1]),
                               __float_as_uint(f[4 * i + 2]), __float_as_uint(f[4 * i + 3])));
    }
  }
}

// Any shape and alignment: one element a thread.
template <bool k1x128, bool kBF16>
__global__ void __launch_bounds__(256)
    dequant_elem_kernel(const uint8_t* q, const float* s, void* out, int64_t rows, int64_t cols,
                        int64_t s_ld) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * cols) return;
  const int64_t r = idx / cols, c = idx % cols;
  const float f = mul_x86(e4m3_byte_to_f32(q[idx]), dq_scale<k1x128>(s, rows, s_ld, r, c));
  if constexpr (kBF16)
    static_cast<uint16_t*>(out)[idx] = uint16_t(f32_to_bf16_bits(f));
  else
    static_cast<float*>(out)[idx] = f;
}

template <bool k1x128, bool kBF16>
cudaError_t launch_dequant(const QuantDesc& d, const uint8_t* q, const float* s, void* out,
                           int64_t s_ld, cudaStream_t stream) {
  const int64_t n = d.rows * d.cols;
  const bool vec = d.cols % 16 == 0 && aligned16_host(q) && aligned16_host(out);
  if (vec) {
    const int64_t chunks = n / 16;
    dequant_vec_kernel<k1x128, kBF16>
        <<<unsigned((chunks + 256 * kDqU - 1) / (256 * kDqU)), 256, 0, stream>>>(
            q, s, out, d.rows, d.cols, s_ld, chunks);
  } else {
    dequant_elem_kernel<k1x128, kBF16>
        <<<unsigned((n + 255) / 256), 256, 0, stream>>>(q, s, out, d.rows, d.cols, s_ld);
  }
  return cudaGetLastError();
}

// --- transpose of a 128x128-quantized matrix: one 128x128 byte tile a CTA ---------------------

__global__ void __launch_bounds__(256)
    transpose_128x128_kernel(const uint8_t* __restrict__ q, const float* __restrict__ s,
                             uint8_t* __restrict__ qt, float* __restrict__ st, int64_t rows,
                             int64_t cols, int64_t s_ld, bool vec_ok) {
  __shared__ uint4 tile[kTile * 8];  // 128 rows x 8 chunks, chunk index ^ ((row >> 4) & 7)
  const int64_t col_tiles = (cols + kTile - 1) / kTile, row_tiles = (rows + kTile - 1) / kTile;
  const int64_t rt = int64_t(blockIdx.x) / col_tiles, ct = int64_t(blockIdx.x) % col_tiles;
  const int64_t r0 = rt * kTile, c0 = ct * kTile;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const bool full = vec_ok && r0 + kTile <= rows && c0 + kTile <= cols;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = i * 32 + t / 8, cc = t % 8;
    const int64_t r = r0 + row, c = c0 + cc * 16;
    tile[row * 8 + (cc ^ ((row >> 4) & 7))] =
        full ? ld_stream16(q + r * cols + c) : gather_chunk<1>(q, rows, cols, r, c);
  }
  if (t == 0) st[ct * row_tiles + rt] = s[rt * s_ld + ct];
  __syncthreads();
  const uint32_t* sw = reinterpret_cast<const uint32_t*>(tile);
  const int k = lane & 7, w = warp * 4 + (lane >> 3);
  uint32_t wd[16];
#pragma unroll
  for (int rr = 0; rr < 16; ++rr) wd[rr] = sw[(16 * k + rr) * 32 + (((w >> 2) ^ k) << 2) + (w & 3)];
  const int64_t r = r0 + 16 * k;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    uint32_t b[4];
    const uint32_t sel = uint32_t(e) | (uint32_t(e + 4) << 4);  // byte e of x, byte e of y
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t lo = __byte_perm(wd[4 * j], wd[4 * j + 1], sel);
      const uint32_t hi = __byte_perm(wd[4 * j + 2], wd[4 * j + 3], sel);
      b[j] = __byte_perm(lo, hi, 0x5410);
    }
    const int64_t c = c0 + 4 * w + e;
    if (full) {
      st_stream16(qt + c * rows + r, make_uint4(b[0], b[1], b[2], b[3]));
    } else if (c < cols) {
#pragma unroll
      for (int rr = 0; rr < 16; ++rr)
        if (r + rr < rows) qt[c * rows + r + rr] = uint8_t(b[rr / 4] >> (8 * (rr % 4)));
    }
  }
}

// InvalidArgument for a null buffer, or one not aligned to its element size (`align` bytes).
absl::Status require_ptr(const void* p, const char* name, const QuantDesc& d, size_t align = 1) {
  if (p == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(name, " is null for ", d.to_string()));
  if (!aligned_to_host(p, align))
    return absl::InvalidArgumentError(absl::StrCat(name, " must be aligned to its element size (",
                                                   align, " bytes) for ", d.to_string()));
  return absl::OkStatus();
}

TileArgs tile_args(const QuantDesc& d, const void* x) {
  TileArgs a;
  a.x = x;
  a.rows = d.rows;
  a.cols = d.cols;
  a.amax_eps = d.scale.amax_eps;
  a.power_2 = d.scale.power_2;
  a.value_for_inf = d.value_for_inf();
  return a;
}

// act = bf16(silu(gate) * up) from bf16 gate (x) and up (x2), then quantized as bf16 rows.
struct LoadSwiGLU : LoadBF16 {
  static constexpr int kSources = 2;
  __device__ LoadSwiGLU(const TileArgs& a, int64_t rt, int64_t ct) : LoadBF16(a, rt, ct) {}
  __device__ static uint4 combine(const uint4& gate, const uint4& up) {
    const uint32_t g[4] = {gate.x, gate.y, gate.z, gate.w}, u[4] = {up.x, up.y, up.z, up.w};
    uint32_t o[4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
      o[i] = bf16x2_bits(
          swiglu_value(__uint_as_float(g[i] << 16), __uint_as_float(u[i] << 16)),
          swiglu_value(__uint_as_float(g[i] & 0xffff0000u), __uint_as_float(u[i] & 0xffff0000u)));
    return make_uint4(o[0], o[1], o[2], o[3]);
  }
};

// dgate and dup = the gradients of silu(gate) * up given dact, from bf16 gate (x), up (x2) and
// dact (x3), rounded to bf16 and quantized as bf16 rows (dgate into q..., dup into q2...).
struct LoadSwiGLUGrad : LoadBF16 {
  static constexpr int kSources = 3, kOutputs = 2;
  __device__ LoadSwiGLUGrad(const TileArgs& a, int64_t rt, int64_t ct) : LoadBF16(a, rt, ct) {}
  __device__ static void combine(const uint4& gate, const uint4& up, const uint4& dact,
                                 uint4* dgate, uint4* dup) {
    const uint32_t g[4] = {gate.x, gate.y, gate.z, gate.w}, u[4] = {up.x, up.y, up.z, up.w};
    const uint32_t d[4] = {dact.x, dact.y, dact.z, dact.w};
    uint32_t og[4], ou[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 lo = swiglu_grads(__uint_as_float(g[i] << 16), __uint_as_float(u[i] << 16),
                                     __uint_as_float(d[i] << 16));
      const float2 hi =
          swiglu_grads(__uint_as_float(g[i] & 0xffff0000u), __uint_as_float(u[i] & 0xffff0000u),
                       __uint_as_float(d[i] & 0xffff0000u));
      og[i] = bf16x2_bits(lo.x, hi.x), ou[i] = bf16x2_bits(lo.y, hi.y);
    }
    *dgate = make_uint4(og[0], og[1], og[2], og[3]);
    *dup = make_uint4(ou[0], ou[1], ou[2], ou[3]);
  }
};

template <int kMode>
cudaError_t launch_by_src(DType src, const TileArgs& a, cudaStream_t stream) {
  return src == DType::kF32 ? launch_tile_quant<LoadF32, kMode>(a, stream)
                            : launch_tile_quant<LoadBF16, kMode>(a, stream);
}

}  // namespace

QuantTuning& quant_tuning() {
  static QuantTuning* t = new QuantTuning();  // never destroyed: launches may run at exit
  return *t;
}

namespace {

// The sources quantize_1x128_cuda reads, by src_dtype, and the SwiGLU pair.
struct BySourceDtype {
  template <int kMode>
  static cudaError_t launch(DType src, const TileArgs& a, cudaStream_t stream) {
    return launch_by_src<kMode>(src, a, stream);
  }
};
template <class L>
struct Combined {
  template <int kMode>
  static cudaError_t launch(DType, const TileArgs& a, cudaStream_t stream) {
    return launch_tile_quant<L, kMode>(a, stream);
  }
};

// The copies desc asks for are there (and aligned as the vector path wants: *aligned).
absl::Status check_copies(const QuantDesc& d, const Fp8Copies& c, bool* aligned) {
  if (d.rowwise) {
    FP8RL_RETURN_IF_ERROR(require_ptr(c.q, "q", d));
    FP8RL_RETURN_IF_ERROR(require_ptr(c.scale_inv, "scale_inv", d, 4));
  }
  if (d.columnwise) {
    FP8RL_RETURN_IF_ERROR(require_ptr(c.q_t, "q_t", d));
    FP8RL_RETURN_IF_ERROR(require_ptr(c.scale_inv_t, "scale_inv_t", d, 4));
  }
  *aligned = *aligned && (!d.rowwise || aligned16_host(c.q)) &&
             (!d.columnwise || (aligned16_host(c.q_t) && d.rows % 16 == 0));
  return absl::OkStatus();
}

// The rowwise and/or columnwise 1x128 copies of the source(s) in `a` into `out` (and `out2` for
// two-output loaders; sources_aligned: every source 16-byte aligned).
template <class Sources>
absl::Status quantize_1x128_tiles(const QuantDesc& d, TileArgs a, bool sources_aligned,
                                  const Fp8Copies& out, const Fp8Copies* out2,
                                  cudaStream_t stream) {
  bool aligned = sources_aligned && d.cols % 16 == 0;
  FP8RL_RETURN_IF_ERROR(check_copies(d, out, &aligned));
  a.q = out.q, a.s = out.scale_inv, a.qt = out.q_t, a.st = out.scale_inv_t;
  if (out2 != nullptr) {
    FP8RL_RETURN_IF_ERROR(check_copies(d, *out2, &aligned));
    a.q2 = out2->q, a.s2 = out2->scale_inv, a.qt2 = out2->q_t, a.st2 = out2->scale_inv_t;
  }
  a.vec_ok = aligned;
  cudaError_t err;
  if (d.rowwise && d.columnwise)
    err = Sources::template launch<kRow | kCol>(d.src_dtype, a, stream);
  else if (d.rowwise)
    err = Sources::template launch<kRow>(d.src_dtype, a, stream);
  else
    err = Sources::template launch<kCol>(d.src_dtype, a, stream);
  return annotate(cuda_status(err, "tile_quant_kernel launch", __FILE__, __LINE__), d.to_string());
}

}  // namespace

absl::Status quantize_1x128_cuda(const QuantDesc& d, const void* x, uint8_t* q, float* scale_inv,
                                 uint8_t* q_t, float* scale_inv_t, cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  FP8RL_RETURN_IF_ERROR(require_ptr(x, "x", d, dtype_size(d.src_dtype)));
  return quantize_1x128_tiles<BySourceDtype>(d, tile_args(d, x), aligned16_host(x),
                                             {q, scale_inv, q_t, scale_inv_t}, nullptr, stream);
}

namespace {

// TileArgs over the bf16 sources of a combining loader (null past the last), checked.
absl::StatusOr<TileArgs> combined_args(const char* op, const QuantDesc& d,
                                       std::initializer_list<std::pair<const char*, const void*>> x,
                                       bool* aligned) {
  FP8RL_REQUIRE(d.src_dtype == DType::kBF16, op, ": the sources must be bfloat16, desc says ",
                std::string(dtype_name(d.src_dtype)));
  *aligned = true;
  for (const auto& [name, p] : x) {
    FP8RL_RETURN_IF_ERROR(require_ptr(p, name, d, 2));
    *aligned = *aligned && aligned16_host(p);
  }
  const void* src[3] = {};
  int i = 0;
  for (const auto& [name, p] : x) src[i++] = p;
  TileArgs a = tile_args(d, src[0]);
  a.x2 = src[1], a.x3 = src[2];
  return a;
}

}  // namespace

absl::Status quantize_swiglu_1x128_cuda(const QuantDesc& d, const void* gate, const void* up,
                                        uint8_t* q, float* scale_inv, uint8_t* q_t,
                                        float* scale_inv_t, cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  bool aligned;
  FP8RL_ASSIGN_OR_RETURN(TileArgs a, combined_args("quantize_swiglu_1x128_cuda", d,
                                                   {{"gate", gate}, {"up", up}}, &aligned));
  return quantize_1x128_tiles<Combined<LoadSwiGLU>>(d, a, aligned, {q, scale_inv, q_t, scale_inv_t},
                                                    nullptr, stream);
}

absl::Status quantize_swiglu_backward_1x128_cuda(const QuantDesc& d, const void* gate,
                                                 const void* up, const void* dact,
                                                 const Fp8Copies& dgate, const Fp8Copies& dup,
                                                 cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  bool aligned;
  FP8RL_ASSIGN_OR_RETURN(TileArgs a,
                         combined_args("quantize_swiglu_backward_1x128_cuda", d,
                                       {{"gate", gate}, {"up", up}, {"dact", dact}}, &aligned));
  return quantize_1x128_tiles<Combined<LoadSwiGLUGrad>>(d, a, aligned, dgate, &dup, stream);
}

absl::Status quantize_128x128_cuda(const QuantDesc& d, const void* x, uint8_t* q, float* scale_inv,
                                   cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  FP8RL_RETURN_IF_ERROR(require_ptr(x, "x", d, dtype_size(d.src_dtype)));
  FP8RL_RETURN_IF_ERROR(require_ptr(q, "q", d));
  FP8RL_RETURN_IF_ERROR(require_ptr(scale_inv, "scale_inv", d, 4));
  TileArgs a = tile_args(d, x);
  a.q = q;
  a.s = scale_inv;
  a.s_ld = d.block_scale_ld();
  a.vec_ok = aligned16_host(x) && aligned16_host(q) && d.cols % 16 == 0;
  const cudaError_t err = launch_by_src<kBlock>(d.src_dtype, a, stream);
  return annotate(cuda_status(err, "tile_quant_kernel launch", __FILE__, __LINE__), d.to_string());
}

absl::Status dequantize_1x128_cuda(const QuantDesc& d, const uint8_t* q, const float* scale_inv,
                                   void* out, DType out_dtype, cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  FP8RL_REQUIRE(out_dtype == DType::kF32 || out_dtype == DType::kBF16,
                "dequantize_1x128_cuda: out_dtype must be float32 or bfloat16, got ",
                std::string(dtype_name(out_dtype)));
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  FP8RL_RETURN_IF_ERROR(require_ptr(q, "q", d));
  FP8RL_RETURN_IF_ERROR(require_ptr(scale_inv, "scale_inv", d, 4));
  FP8RL_RETURN_IF_ERROR(require_ptr(out, "out", d, dtype_size(out_dtype)));
  const cudaError_t err = out_dtype == DType::kBF16
                              ? launch_dequant<true, true>(d, q, scale_inv, out, 0, stream)
                              : launch_dequant<true, false>(d, q, scale_inv, out, 0, stream);
  return annotate(cuda_status(err, "dequant kernel launch", __FILE__, __LINE__), d.to_string());
}

absl::Status dequantize_128x128_cuda(const QuantDesc& d, const uint8_t* q, const float* scale_inv,
                                     void* out, DType out_dtype, cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  FP8RL_REQUIRE(out_dtype == DType::kF32 || out_dtype == DType::kBF16,
                "dequantize_128x128_cuda: out_dtype must be float32 or bfloat16, got ",
                std::string(dtype_name(out_dtype)));
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  FP8RL_RETURN_IF_ERROR(require_ptr(q, "q", d));
  FP8RL_RETURN_IF_ERROR(require_ptr(scale_inv, "scale_inv", d, 4));
  FP8RL_RETURN_IF_ERROR(require_ptr(out, "out", d, dtype_size(out_dtype)));
  const int64_t ld = d.block_scale_ld();
  const cudaError_t err = out_dtype == DType::kBF16
                              ? launch_dequant<false, true>(d, q, scale_inv, out, ld, stream)
                              : launch_dequant<false, false>(d, q, scale_inv, out, ld, stream);
  return annotate(cuda_status(err, "dequant kernel launch", __FILE__, __LINE__), d.to_string());
}

absl::Status transpose_128x128_cuda(const QuantDesc& d, const uint8_t* q, const float* scale_inv,
                                    uint8_t* q_t, float* scale_inv_t, cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  FP8RL_RETURN_IF_ERROR(require_ptr(q, "q", d));
  FP8RL_RETURN_IF_ERROR(require_ptr(scale_inv, "scale_inv", d, 4));
  FP8RL_RETURN_IF_ERROR(require_ptr(q_t, "q_t", d));
  FP8RL_RETURN_IF_ERROR(require_ptr(scale_inv_t, "scale_inv_t", d, 4));
  const int64_t tiles = d.row_tiles() * d.col_tiles();
  const bool vec_ok =
      aligned16_host(q) && aligned16_host(q_t) && d.cols % 16 == 0 && d.rows % 16 == 0;
  transpose_128x128_kernel<<<unsigned(tiles), 256, 0, stream>>>(
      q, scale_inv, q_t, scale_inv_t, d.rows, d.cols, d.block_scale_ld(), vec_ok);
  return annotate(
      cuda_status(cudaGetLastError(), "transpose_128x128_kernel launch", __FILE__, __LINE__),
      d.to_string());
}

}  // namespace fp8rl
