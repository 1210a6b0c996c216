// Blockwise FP8 quantization (DeepSeek-V3 / TransformerEngine Float8BlockScaling): 1x128 tiles for
// activations and gradients, 128x128 blocks for weights. CPU reference declarations; the CUDA twins
// in quant/cuda/ take the same QuantDesc and produce the same bytes.
//
// Layouts (x is row-major [rows, cols]; a "tile" never crosses a row; ragged edges hold fewer
// elements and their amax covers only the elements present):
//   1x128 rowwise     q  [rows, cols] e4m3      scale_inv [ceil(cols/128), rows] f32 (row index
//                                                contiguous: cuBLASLt VEC128, torch (1, M) strides)
//   1x128 columnwise  qT [cols, rows] e4m3      scale_inv_t [ceil(rows/128), cols] f32; tiles run
//                     along rows (the token dimension) of x: TE's columnwise copy used by wgrad.
//   128x128           q  [rows, cols] e4m3      scale_inv [ceil(rows/128), scale_ld] f32 row-major;
//                     scale_ld = ceil(cols/128) is DeepSeek-V3's weight_scale_inv; cuBLASLt's
//                     BLK128x128 wants scale_ld rounded up to a multiple of 4; the padding
//                     entries are not written.
//
// amax is NaN-propagating (as torch.amax and np.max): a tile holding a NaN has amax NaN, hence
// scale 1, so the NaN encodes to 0x7F/0xFF and the other elements are quantized unscaled.
// TE's kernels reduce with fmaxf, which skips NaN and scales such a tile by its finite elements;
// the rules differ only in tiles holding a NaN (for 1x128 tiles every GEMM output reading such a
// tile is NaN either way). amax_key() implements the rule for both backends.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "core/dtype.h"
#include "quant/scale.h"

namespace fp8rl {

inline constexpr int64_t kQuantBlock = 128;

inline constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// |x| as an ordered integer key: the float32 bits with the sign cleared. NaN keys sort above inf,
// so the unsigned max of the keys of a tile is its NaN-propagating amax (as bits), in any order.
FP8RL_HD uint32_t amax_key(float x) { return fp8_f32_bits_(x) & 0x7fffffffu; }

// One quantization problem: the source matrix, its dtype and the scale rule.
struct QuantDesc {
  int64_t rows = 0;
  int64_t cols = 0;
  DType src_dtype = DType::kBF16;  // kF32 or kBF16
  ScaleParams scale;
  // 1x128: which copies to produce (at least one).
  bool rowwise = true;
  bool columnwise = false;
  // 128x128: row stride of scale_inv in elements; 0 means compact, ceil(cols/128).
  int64_t scale_ld = 0;

  int64_t row_tiles() const { return ceil_div(rows, kQuantBlock); }
  int64_t col_tiles() const { return ceil_div(cols, kQuantBlock); }
  int64_t block_scale_ld() const { return scale_ld ? scale_ld : col_tiles(); }
  // TE's value_for_inf: largest finite value of src_dtype.
  float value_for_inf() const { return src_dtype == DType::kF32 ? kF32MaxFinite : kBF16MaxFinite; }
  // InvalidArgument naming the field: negative sizes, unsupported dtype, no copy requested,
  // scale_ld too small.
  absl::Status validate() const;
  // Every field, for logs: "QuantDesc{rows=.., cols=.., src=bfloat16, pow2=1, eps=0, ...}".
  std::string to_string() const;
};

// x: [rows, cols] of desc.src_dtype. Outputs for copies not requested may be null.
absl::Status quantize_1x128_cpu(const QuantDesc& desc, const void* x, uint8_t* q, float* scale_inv,
                                uint8_t* q_t, float* scale_inv_t);
absl::Status quantize_128x128_cpu(const QuantDesc& desc, const void* x, uint8_t* q,
                                  float* scale_inv);

// out = e4m3(q) * scale_inv, written as out_dtype (kF32 or kBF16, round to nearest even).
// dequantize_1x128_cpu reads the rowwise layout.
absl::Status dequantize_1x128_cpu(const QuantDesc& desc, const uint8_t* q, const float* scale_inv,
                                  void* out, DType out_dtype);
absl::Status dequantize_128x128_cpu(const QuantDesc& desc, const uint8_t* q,
                                    const float* scale_inv, void* out, DType out_dtype);

// The transposed (columnwise) copy of a 128x128-quantized matrix: qT [cols, rows] and scales
// [ceil(cols/128), ceil(rows/128)] compact. Bitwise a transpose (TE: 2D columnwise = transpose).
absl::Status transpose_128x128_cpu(const QuantDesc& desc, const uint8_t* q, const float* scale_inv,
                                   uint8_t* q_t, float* scale_inv_t);

}  // namespace fp8rl
