// CUDA INT4: group fake-quant, pack and unpack (twins of quant/cpu/int4.cc).
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "quant/cuda/int4_cuda.h"
#include "quant/cuda/int4_kernels.cuh"
#include "quant/cuda/int4_launch.h"

namespace fp8rl {
namespace {

using namespace cuda_detail;

// One thread per packed word: 8 outputs (vector stores when cols % 8 == 0 and out is aligned).
template <bool kBF16>
__global__ void __launch_bounds__(256)
    int4_unpack_kernel(const int32_t* __restrict__ packed, const uint16_t* __restrict__ scale,
                       void* __restrict__ out, int64_t rows, int64_t cols, int64_t group_size,
                       int64_t groups, int64_t packed_cols, bool vec) {
  const int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= rows * packed_cols) return;
  const int64_t r = item / packed_cols, c0 = (item % packed_cols) * 8;
  const uint32_t word = uint32_t(packed[item]);
  float f[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int64_t c = min(c0 + e, cols - 1);
    const float s = bf16_bits_to_f32(scale[r * groups + c / group_size]);
    f[e] = mul_x86(float(int((word >> (4 * e)) & 0xFu) - 8), s);
  }
  if (vec) {
    uint8_t* p = static_cast<uint8_t*>(out) + (r * cols + c0) * (kBF16 ? 2 : 4);
    if constexpr (kBF16) {
      uint32_t w[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) w[i] = bf16x2_bits(f[2 * i], f[2 * i + 1]);
      *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
      reinterpret_cast<float4*>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
      reinterpret_cast<float4*>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
    }
    return;
  }
  for (int e = 0; e < 8 && c0 + e < cols; ++e) {
    if constexpr (kBF16)
      static_cast<uint16_t*>(out)[r * cols + c0 + e] = uint16_t(f32_to_bf16_bits(f[e]));
    else
      static_cast<float*>(out)[r * cols + c0 + e] = f[e];
  }
}

Int4Args int4_args(const Int4Desc& d, const void* x) {
  Int4Args a;
  a.x = x;
  a.rows = d.rows;
  a.cols = d.cols;
  a.group_size = d.group_size;
  a.groups = d.groups();
  a.packed_cols = d.packed_cols();
  return a;
}

absl::Status require_ptr(const void* p, const char* name, const Int4Desc& d, size_t align) {
  if (p == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(name, " is null for ", d.to_string()));
  if (!aligned_to_host(p, align))
    return absl::InvalidArgumentError(absl::StrCat(name, " must be aligned to its element size (",
                                                   align, " bytes) for ", d.to_string()));
  return absl::OkStatus();
}

absl::Status check_pack(const Int4Desc& d, const void* x, int32_t* packed, uint16_t* scale) {
  FP8RL_RETURN_IF_ERROR(require_ptr(x, "x", d, dtype_size(d.src_dtype)));
  FP8RL_RETURN_IF_ERROR(require_ptr(packed, "packed", d, 4));
  return require_ptr(scale, "scale", d, 2);
}

cudaError_t launch_pack(const Int4Desc& d, const Int4Args& a, cudaStream_t stream) {
  const bool vec = d.cols % 8 == 0 && aligned16_host(a.x);
  return d.src_dtype == DType::kF32 ? launch_int4<I4LoadF32, true>(a, vec, stream)
                                    : launch_int4<I4LoadBF16, true>(a, vec, stream);
}

}  // namespace

absl::Status int4_fake_quant_cuda(const Int4Desc& d, const void* x, void* y, cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  FP8RL_RETURN_IF_ERROR(require_ptr(x, "x", d, dtype_size(d.src_dtype)));
  FP8RL_RETURN_IF_ERROR(require_ptr(y, "y", d, dtype_size(d.src_dtype)));
  Int4Args a = int4_args(d, x);
  a.y = y;
  const bool vec = d.cols % 8 == 0 && aligned16_host(x) && aligned16_host(y);
  const cudaError_t err = d.src_dtype == DType::kF32
                              ? launch_int4<I4LoadF32, false>(a, vec, stream)
                              : launch_int4<I4LoadBF16, false>(a, vec, stream);
  return annotate(cuda_status(err, "int4 fake-quant launch", __FILE__, __LINE__), d.to_string());
}

absl::Status int4_pack_cuda(const Int4Desc& d, const void* x, int32_t* packed, uint16_t* scale,
                            cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  FP8RL_RETURN_IF_ERROR(check_pack(d, x, packed, scale));
  Int4Args a = int4_args(d, x);
  a.packed = packed;
  a.scale = scale;
  return run_int4_pack(
      a, d.to_string(), "int4_pack_cuda",
      [&](const Int4Args& args) { return launch_pack(d, args, stream); }, stream);
}

absl::Status int4_pack_cuda_async(const Int4Desc& d, const void* x, int32_t* packed,
                                  uint16_t* scale, unsigned long long* first_bad,
                                  cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  FP8RL_RETURN_IF_ERROR(check_pack(d, x, packed, scale));
  FP8RL_RETURN_IF_ERROR(require_ptr(first_bad, "first_bad", d, 8));
  Int4Args a = int4_args(d, x);
  a.packed = packed;
  a.scale = scale;
  a.first_bad = first_bad;
  return annotate(cuda_status(launch_pack(d, a, stream), "int4 pack launch", __FILE__, __LINE__),
                  d.to_string());
}

absl::Status int4_unpack_cuda(const Int4Desc& d, const int32_t* packed, const uint16_t* scale,
                              void* out, DType out_dtype, cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  FP8RL_REQUIRE(out_dtype == DType::kF32 || out_dtype == DType::kBF16,
                "int4_unpack_cuda: out_dtype must be float32 or bfloat16, got ",
                std::string(dtype_name(out_dtype)));
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  FP8RL_RETURN_IF_ERROR(require_ptr(packed, "packed", d, 4));
  FP8RL_RETURN_IF_ERROR(require_ptr(scale, "scale", d, 2));
  FP8RL_RETURN_IF_ERROR(require_ptr(out, "out", d, dtype_size(out_dtype)));
  const bool vec = d.cols % 8 == 0 && aligned16_host(out);
  const unsigned blocks = blocks_for(d.rows * d.packed_cols());
  if (out_dtype == DType::kBF16)
    int4_unpack_kernel<true><<<blocks, 256, 0, stream>>>(
        packed, scale, out, d.rows, d.cols, d.group_size, d.groups(), d.packed_cols(), vec);
  else
    int4_unpack_kernel<false><<<blocks, 256, 0, stream>>>(
        packed, scale, out, d.rows, d.cols, d.group_size, d.groups(), d.packed_cols(), vec);
  return annotate(cuda_status(cudaGetLastError(), "int4_unpack_kernel launch", __FILE__, __LINE__),
                  d.to_string());
}

}  // namespace fp8rl
