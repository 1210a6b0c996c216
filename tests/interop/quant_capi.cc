// fp8rl_quant_capi: a C ABI over the quant/ CPU reference for the Python interop tests (ctypes).
//
// Every function returns 0 on success or an absl::StatusCode value, and then writes the status
// message, NUL-terminated and truncated to `err_len` bytes, into `err` (which may be null).
// Buffers are raw, caller-owned, contiguous and sized as quant/*.h describe. `dtype` arguments
// are fp8rl::DType values: 0 float32, 1 bfloat16 (bfloat16 data travels as uint16 bits).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "core/float8.h"
#include "core/status.h"
#include "quant/block_quant.h"
#include "quant/gemm_ref.h"
#include "quant/int4.h"

namespace {

int report(const absl::Status& s, char* err, int64_t err_len) {
  return fp8rl::status_to_c(s, err, err_len);
}

fp8rl::QuantDesc quant_desc(int64_t rows, int64_t cols, int dtype, int power_2, float eps) {
  fp8rl::QuantDesc d;
  d.rows = rows;
  d.cols = cols;
  d.src_dtype = static_cast<fp8rl::DType>(dtype);
  d.scale.power_2 = power_2 != 0;
  d.scale.amax_eps = eps;
  return d;
}

fp8rl::Int4Desc int4_desc(int64_t rows, int64_t cols, int64_t group_size, int dtype) {
  fp8rl::Int4Desc d;
  d.rows = rows;
  d.cols = cols;
  d.group_size = group_size;
  d.src_dtype = static_cast<fp8rl::DType>(dtype);
  return d;
}

}  // namespace

extern "C" {

// Scalar codecs applied elementwise over n values.
int fp8rl_f32_to_e4m3(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = fp8rl::f32_to_e4m3(x[i]);
  return 0;
}
int fp8rl_e4m3_to_f32(const uint8_t* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = fp8rl::e4m3_to_f32(x[i]);
  return 0;
}
int fp8rl_f32_to_e8m0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = fp8rl::f32_to_e8m0(x[i]);
  return 0;
}
int fp8rl_e8m0_to_f32(const uint8_t* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = fp8rl::e8m0_to_f32(x[i]);
  return 0;
}

// quantize_1x128_cpu; q/scale_inv (rowwise) and q_t/scale_inv_t (columnwise) may be null when
// that copy is not requested.
int fp8rl_quantize_1x128(int64_t rows, int64_t cols, int dtype, int power_2, float eps, int rowwise,
                         int columnwise, const void* x, uint8_t* q, float* scale_inv, uint8_t* q_t,
                         float* scale_inv_t, char* err, int64_t err_len) {
  fp8rl::QuantDesc d = quant_desc(rows, cols, dtype, power_2, eps);
  d.rowwise = rowwise != 0;
  d.columnwise = columnwise != 0;
  return report(fp8rl::quantize_1x128_cpu(d, x, q, scale_inv, q_t, scale_inv_t), err, err_len);
}

int fp8rl_quantize_128x128(int64_t rows, int64_t cols, int dtype, int power_2, float eps,
                           int64_t scale_ld, const void* x, uint8_t* q, float* scale_inv, char* err,
                           int64_t err_len) {
  fp8rl::QuantDesc d = quant_desc(rows, cols, dtype, power_2, eps);
  d.scale_ld = scale_ld;
  return report(fp8rl::quantize_128x128_cpu(d, x, q, scale_inv), err, err_len);
}

int fp8rl_dequantize_1x128(int64_t rows, int64_t cols, const uint8_t* q, const float* scale_inv,
                           void* out, int out_dtype, char* err, int64_t err_len) {
  const fp8rl::QuantDesc d = quant_desc(rows, cols, 0, 1, 0.f);
  return report(
      fp8rl::dequantize_1x128_cpu(d, q, scale_inv, out, static_cast<fp8rl::DType>(out_dtype)), err,
      err_len);
}

int fp8rl_dequantize_128x128(int64_t rows, int64_t cols, int64_t scale_ld, const uint8_t* q,
                             const float* scale_inv, void* out, int out_dtype, char* err,
                             int64_t err_len) {
  fp8rl::QuantDesc d = quant_desc(rows, cols, 0, 1, 0.f);
  d.scale_ld = scale_ld;
  return report(
      fp8rl::dequantize_128x128_cpu(d, q, scale_inv, out, static_cast<fp8rl::DType>(out_dtype)),
      err, err_len);
}

int fp8rl_transpose_128x128(int64_t rows, int64_t cols, int64_t scale_ld, const uint8_t* q,
                            const float* scale_inv, uint8_t* q_t, float* scale_inv_t, char* err,
                            int64_t err_len) {
  fp8rl::QuantDesc d = quant_desc(rows, cols, 0, 1, 0.f);
  d.scale_ld = scale_ld;
  return report(fp8rl::transpose_128x128_cpu(d, q, scale_inv, q_t, scale_inv_t), err, err_len);
}

int fp8rl_int4_fake_quant(int64_t rows, int64_t cols, int64_t group_size, int dtype, const void* x,
                          void* y, char* err, int64_t err_len) {
  return report(fp8rl::int4_fake_quant_cpu(int4_desc(rows, cols, group_size, dtype), x, y), err,
                err_len);
}

int fp8rl_int4_pack(int64_t rows, int64_t cols, int64_t group_size, int dtype, const void* x,
                    int32_t* packed, uint16_t* scale, char* err, int64_t err_len) {
  return report(fp8rl::int4_pack_cpu(int4_desc(rows, cols, group_size, dtype), x, packed, scale),
                err, err_len);
}

int fp8rl_int4_unpack(int64_t rows, int64_t cols, int64_t group_size, const int32_t* packed,
                      const uint16_t* scale, void* out, int out_dtype, char* err, int64_t err_len) {
  return report(fp8rl::int4_unpack_cpu(int4_desc(rows, cols, group_size, 0), packed, scale, out,
                                       static_cast<fp8rl::DType>(out_dtype)),
                err, err_len);
}

// gemm_blockscaled_cpu; a_tile/b_tile: 0 = 1x128, 1 = 128x128.
int fp8rl_gemm_blockscaled(int64_t m, int64_t n, int64_t k, int a_tile, int b_tile,
                           int64_t a_scale_ld, int64_t b_scale_ld, int out_dtype, int accumulate,
                           const uint8_t* a, const float* a_scale_inv, const uint8_t* b,
                           const float* b_scale_inv, void* d, char* err, int64_t err_len) {
  fp8rl::GemmDesc g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a_tile = a_tile ? fp8rl::ScaleTile::k128x128 : fp8rl::ScaleTile::k1x128;
  g.b_tile = b_tile ? fp8rl::ScaleTile::k128x128 : fp8rl::ScaleTile::k1x128;
  g.a_scale_ld = a_scale_ld;
  g.b_scale_ld = b_scale_ld;
  g.out_dtype = static_cast<fp8rl::DType>(out_dtype);
  g.accumulate = accumulate != 0;
  return report(fp8rl::gemm_blockscaled_cpu(g, a, a_scale_inv, b, b_scale_inv, d), err, err_len);
}

}  // extern "C"
