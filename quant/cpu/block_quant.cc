// CPU reference of the blockwise FP8 quantizers: 1x128 rowwise and columnwise, 128x128,
// dequantization and the 128x128 transpose (quant/block_quant.h).
#include "quant/block_quant.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/parallel.h"
#include "core/status.h"
#include "quant/cpu/kernel_util.h"

namespace fp8rl {
namespace {

using namespace quant_cpu;

float tile_scale(uint32_t key, const QuantDesc& desc) {
  return compute_scale_from_amax(f32_from_bits(key), kE4M3Max, desc.scale.power_2,
                                 desc.scale.amax_eps, desc.value_for_inf());
}

template <typename Src>
void encode(const Src* x, int64_t n, float scale, uint8_t* q) {
  for (int64_t i = 0; i < n; ++i) q[i] = f32_to_e4m3(load_f32(x[i]) * scale);
}

// Rowwise 1x128: rows [r0, r1), each tile along the row scaled on its own.
template <typename Src>
void rowwise_rows(const QuantDesc& d, const Src* x, uint8_t* q, float* scale_inv, int64_t r0,
                  int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const Src* xr = x + r * d.cols;
    for (int64_t kb = 0; kb < d.col_tiles(); ++kb) {
      const int64_t c0 = kb * kQuantBlock;
      const int64_t len = std::min(kQuantBlock, d.cols - c0);
      const float scale = tile_scale(amax_key_of(xr + c0, len), d);
      scale_inv[kb * d.rows + r] = 1.0f / scale;
      encode(xr + c0, len, scale, q + r * d.cols + c0);
    }
  }
}

// Columnwise 1x128 for row blocks [b0, b1): per column, one tile of up to 128 rows; the result is
// written transposed, qT [cols, rows].
template <typename Src>
void columnwise_blocks(const QuantDesc& d, const Src* x, uint8_t* q_t, float* scale_inv_t,
                       int64_t b0, int64_t b1) {
  constexpr int64_t kColChunk = 64;  // columns written together: 64 output lines stay in cache
  std::vector<uint32_t> keys(static_cast<size_t>(d.cols));
  std::vector<float> scales(static_cast<size_t>(d.cols));
  for (int64_t rb = b0; rb < b1; ++rb) {
    const int64_t r0 = rb * kQuantBlock;
    const int64_t r1 = std::min(d.rows, r0 + kQuantBlock);
    std::fill(keys.begin(), keys.end(), 0u);
    for (int64_t r = r0; r < r1; ++r) {
      const Src* xr = x + r * d.cols;
      for (int64_t c = 0; c < d.cols; ++c) keys[c] = std::max(keys[c], amax_key(load_f32(xr[c])));
    }
    for (int64_t c = 0; c < d.cols; ++c) {
      scales[c] = tile_scale(keys[c], d);
      scale_inv_t[rb * d.cols + c] = 1.0f / scales[c];
    }
    for (int64_t c0 = 0; c0 < d.cols; c0 += kColChunk) {
      const int64_t c1 = std::min(d.cols, c0 + kColChunk);
      for (int64_t r = r0; r < r1; ++r) {
        const Src* xr = x + r * d.cols;
        for (int64_t c = c0; c < c1; ++c) {
          q_t[c * d.rows + r] = f32_to_e4m3(load_f32(xr[c]) * scales[c]);
        }
      }
    }
  }
}

// 128x128 for row blocks [b0, b1).
template <typename Src>
void square_blocks(const QuantDesc& d, const Src* x, uint8_t* q, float* scale_inv, int64_t b0,
                   int64_t b1) {
  const int64_t nb = d.col_tiles();
  std::vector<uint32_t> keys(static_cast<size_t>(nb));
  std::vector<float> scales(static_cast<size_t>(nb));
  for (int64_t rb = b0; rb < b1; ++rb) {
    const int64_t r0 = rb * kQuantBlock;
    const int64_t r1 = std::min(d.rows, r0 + kQuantBlock);
    std::fill(keys.begin(), keys.end(), 0u);
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t cb = 0; cb < nb; ++cb) {
        const int64_t c0 = cb * kQuantBlock;
        keys[cb] = std::max(keys[cb],
                            amax_key_of(x + r * d.cols + c0, std::min(kQuantBlock, d.cols - c0)));
      }
    }
    for (int64_t cb = 0; cb < nb; ++cb) {
      scales[cb] = tile_scale(keys[cb], d);
      scale_inv[rb * d.block_scale_ld() + cb] = 1.0f / scales[cb];
    }
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t cb = 0; cb < nb; ++cb) {
        const int64_t c0 = cb * kQuantBlock;
        encode(x + r * d.cols + c0, std::min(kQuantBlock, d.cols - c0), scales[cb],
               q + r * d.cols + c0);
      }
    }
  }
}

// out[r][c] = e4m3(q[r][c]) * scale_of(r, c / 128) for rows [r0, r1).
template <typename Out, typename ScaleOf>
void dequantize_rows(const QuantDesc& d, const uint8_t* q, ScaleOf scale_of, Out* out, int64_t r0,
                     int64_t r1) {
  const float* e4m3 = e4m3_table();
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t kb = 0; kb < d.col_tiles(); ++kb) {
      const float s = scale_of(r, kb);
      const int64_t c0 = kb * kQuantBlock;
      const int64_t c1 = std::min(d.cols, c0 + kQuantBlock);
      for (int64_t c = c0; c < c1; ++c) store_as(e4m3[q[r * d.cols + c]] * s, out + r * d.cols + c);
    }
  }
}

template <typename ScaleOf>
absl::Status dequantize(const QuantDesc& d, const uint8_t* q, ScaleOf scale_of, void* out,
                        DType out_dtype) {
  FP8RL_RETURN_IF_ERROR(require_float_out(out_dtype));
  parallel_for(
      d.rows,
      [&](int64_t r0, int64_t r1) {
        if (out_dtype == DType::kF32) {
          dequantize_rows(d, q, scale_of, static_cast<float*>(out), r0, r1);
        } else {
          dequantize_rows(d, q, scale_of, static_cast<uint16_t*>(out), r0, r1);
        }
      },
      grain_for(d.cols));
  return absl::OkStatus();
}

}  // namespace

absl::Status QuantDesc::validate() const {
  FP8RL_REQUIRE(rows >= 0, "QuantDesc.rows=", rows, " is negative");
  FP8RL_REQUIRE(cols >= 0, "QuantDesc.cols=", cols, " is negative");
  FP8RL_REQUIRE(src_dtype == DType::kF32 || src_dtype == DType::kBF16,
                "QuantDesc.src_dtype must be float32 or bfloat16, got ",
                std::string(dtype_name(src_dtype)));
  FP8RL_REQUIRE(rowwise || columnwise,
                "QuantDesc requests neither a rowwise nor a columnwise copy");
  FP8RL_REQUIRE(scale.amax_eps >= 0.f, "QuantDesc.scale.amax_eps=", scale.amax_eps,
                " must be a non-negative number");
  FP8RL_REQUIRE(scale_ld >= 0, "QuantDesc.scale_ld=", scale_ld, " is negative");
  FP8RL_REQUIRE(scale_ld == 0 || scale_ld >= col_tiles(), "QuantDesc.scale_ld=", scale_ld,
                " is below ceil(cols/128)=", col_tiles());
  return absl::OkStatus();
}

std::string QuantDesc::to_string() const {
  return absl::StrCat(
      "QuantDesc{rows=", rows, ", cols=", cols, ", src=", std::string(dtype_name(src_dtype)),
      ", pow2=", scale.power_2 ? 1 : 0, ", eps=", scale.amax_eps, ", rowwise=", rowwise ? 1 : 0,
      ", columnwise=", columnwise ? 1 : 0, ", scale_ld=", scale_ld, "}");
}

absl::Status quantize_1x128_cpu(const QuantDesc& desc, const void* x, uint8_t* q, float* scale_inv,
                                uint8_t* q_t, float* scale_inv_t) {
  FP8RL_RETURN_IF_ERROR(validate_for(desc, "quantize_1x128_cpu"));
  const int64_t n = desc.rows * desc.cols;
  FP8RL_RETURN_IF_ERROR(require_buffer(x, n, "x"));
  if (desc.rowwise) {
    FP8RL_RETURN_IF_ERROR(require_buffer(q, n, "q"));
    FP8RL_RETURN_IF_ERROR(require_buffer(scale_inv, n, "scale_inv"));
    parallel_for(
        desc.rows,
        [&](int64_t r0, int64_t r1) {
          if (desc.src_dtype == DType::kF32) {
            rowwise_rows(desc, static_cast<const float*>(x), q, scale_inv, r0, r1);
          } else {
            rowwise_rows(desc, static_cast<const uint16_t*>(x), q, scale_inv, r0, r1);
          }
        },
        grain_for(desc.cols));
  }
  if (desc.columnwise) {
    FP8RL_RETURN_IF_ERROR(require_buffer(q_t, n, "q_t"));
    FP8RL_RETURN_IF_ERROR(require_buffer(scale_inv_t, n, "scale_inv_t"));
    parallel_for(
        desc.row_tiles(),
        [&](int64_t b0, int64_t b1) {
          if (desc.src_dtype == DType::kF32) {
            columnwise_blocks(desc, static_cast<const float*>(x), q_t, scale_inv_t, b0, b1);
          } else {
            columnwise_blocks(desc, static_cast<const uint16_t*>(x), q_t, scale_inv_t, b0, b1);
          }
        },
        grain_for(kQuantBlock * desc.cols));
  }
  return absl::OkStatus();
}

absl::Status quantize_128x128_cpu(const QuantDesc& desc, const void* x, uint8_t* q,
                                  float* scale_inv) {
  FP8RL_RETURN_IF_ERROR(validate_for(desc, "quantize_128x128_cpu"));
  const int64_t n = desc.rows * desc.cols;
  FP8RL_RETURN_IF_ERROR(require_buffer(x, n, "x"));
  FP8RL_RETURN_IF_ERROR(require_buffer(q, n, "q"));
  FP8RL_RETURN_IF_ERROR(require_buffer(scale_inv, n, "scale_inv"));
  parallel_for(
      desc.row_tiles(),
      [&](int64_t b0, int64_t b1) {
        if (desc.src_dtype == DType::kF32) {
          square_blocks(desc, static_cast<const float*>(x), q, scale_inv, b0, b1);
        } else {
          square_blocks(desc, static_cast<const uint16_t*>(x), q, scale_inv, b0, b1);
        }
      },
      grain_for(kQuantBlock * desc.cols));
  return absl::OkStatus();
}

absl::Status dequantize_1x128_cpu(const QuantDesc& desc, const uint8_t* q, const float* scale_inv,
                                  void* out, DType out_dtype) {
  FP8RL_RETURN_IF_ERROR(validate_for(desc, "dequantize_1x128_cpu"));
  const int64_t n = desc.rows * desc.cols;
  FP8RL_RETURN_IF_ERROR(require_buffer(q, n, "q"));
  FP8RL_RETURN_IF_ERROR(require_buffer(scale_inv, n, "scale_inv"));
  FP8RL_RETURN_IF_ERROR(require_buffer(out, n, "out"));
  const int64_t rows = desc.rows;
  return dequantize(
      desc, q, [=](int64_t r, int64_t kb) { return scale_inv[kb * rows + r]; }, out, out_dtype);
}

absl::Status dequantize_128x128_cpu(const QuantDesc& desc, const uint8_t* q, const float* scale_inv,
                                    void* out, DType out_dtype) {
  FP8RL_RETURN_IF_ERROR(validate_for(desc, "dequantize_128x128_cpu"));
  const int64_t n = desc.rows * desc.cols;
  FP8RL_RETURN_IF_ERROR(require_buffer(q, n, "q"));
  FP8RL_RETURN_IF_ERROR(require_buffer(scale_inv, n, "scale_inv"));
  FP8RL_RETURN_IF_ERROR(require_buffer(out, n, "out"));
  const int64_t ld = desc.block_scale_ld();
  return dequantize(
      desc, q, [=](int64_t r, int64_t cb) { return scale_inv[(r / kQuantBlock) * ld + cb]; }, out,
      out_dtype);
}

absl::Status transpose_128x128_cpu(const QuantDesc& desc, const uint8_t* q, const float* scale_inv,
                                   uint8_t* q_t, float* scale_inv_t) {
  FP8RL_RETURN_IF_ERROR(validate_for(desc, "transpose_128x128_cpu"));
  const int64_t n = desc.rows * desc.cols;
  FP8RL_RETURN_IF_ERROR(require_buffer(q, n, "q"));
  FP8RL_RETURN_IF_ERROR(require_buffer(scale_inv, n, "scale_inv"));
  FP8RL_RETURN_IF_ERROR(require_buffer(q_t, n, "q_t"));
  FP8RL_RETURN_IF_ERROR(require_buffer(scale_inv_t, n, "scale_inv_t"));
  const int64_t rows = desc.rows, cols = desc.cols, ld = desc.block_scale_ld();
  // One 128-column block of q becomes one 128-row block of q_t; 128x128 tiles keep both sides
  // in cache.
  parallel_for(
      desc.col_tiles(),
      [&](int64_t cb0, int64_t cb1) {
        for (int64_t cb = cb0; cb < cb1; ++cb) {
          const int64_t c0 = cb * kQuantBlock, c1 = std::min(cols, c0 + kQuantBlock);
          for (int64_t rb = 0; rb < desc.row_tiles(); ++rb) {
            const int64_t r0 = rb * kQuantBlock, r1 = std::min(rows, r0 + kQuantBlock);
            scale_inv_t[cb * desc.row_tiles() + rb] = scale_inv[rb * ld + cb];
            for (int64_t c = c0; c < c1; ++c) {
              for (int64_t r = r0; r < r1; ++r) q_t[c * rows + r] = q[r * cols + c];
            }
          }
        }
      },
      grain_for(kQuantBlock * rows));
  return absl::OkStatus();
}

}  // namespace fp8rl
