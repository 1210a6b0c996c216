// Linear forward/backward in F32, BF16, FP8 blockwise and INT4 fake-quant modes
// (model/ops/linear.h).
#include "model/ops/linear.h"

#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "model/ops/gemm_f32.h"
#include "quant/block_quant.h"
#include "quant/gemm_ref.h"
#include "quant/int4.h"

namespace fp8rl {
namespace {

std::vector<float> round_to_bf16(const float* x, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(f32_to_bf16(x[i]));
  return out;
}

// A 1x128-quantized operand: rowwise q [rows, cols] or columnwise q [cols, rows], scales as in
// quant/block_quant.h.
struct Fp8Operand {
  std::vector<uint8_t> q;
  std::vector<float> scale_inv;
};

absl::Status quantize_1x128(const float* x, int64_t rows, int64_t cols, QuantRole role,
                            bool columnwise, Fp8Operand* out) {
  QuantDesc d;
  d.rows = rows;
  d.cols = cols;
  d.src_dtype = DType::kF32;
  d.scale = scale_params_from_env(role);
  d.rowwise = !columnwise;
  d.columnwise = columnwise;
  out->q.resize(size_t(rows * cols));
  out->scale_inv.resize(
      size_t(columnwise ? ceil_div(rows, kQuantBlock) * cols : ceil_div(cols, kQuantBlock) * rows));
  if (columnwise)
    return quantize_1x128_cpu(d, x, nullptr, nullptr, out->q.data(), out->scale_inv.data());
  return quantize_1x128_cpu(d, x, out->q.data(), out->scale_inv.data(), nullptr, nullptr);
}

QuantDesc weight_desc(int64_t out_f, int64_t in_f) {
  QuantDesc d;
  d.rows = out_f;
  d.cols = in_f;
  d.src_dtype = DType::kF32;
  d.scale = scale_params_from_env(QuantRole::kFwdWeight);
  return d;
}

// W [out, in] quantized 128x128 into *w8; with `transposed` the columnwise copy W^T [in, out]
// (bitwise the same tiles) into *transposed as well. Either output may be null.
absl::Status quantize_weight(const float* w, int64_t out_f, int64_t in_f, Fp8Operand* w8,
                             Fp8Operand* transposed) {
  const QuantDesc d = weight_desc(out_f, in_f);
  Fp8Operand local;
  Fp8Operand* q = w8 ? w8 : &local;
  q->q.resize(size_t(out_f * in_f));
  q->scale_inv.resize(size_t(d.row_tiles() * d.col_tiles()));
  FP8RL_RETURN_IF_ERROR(quantize_128x128_cpu(d, w, q->q.data(), q->scale_inv.data()));
  if (!transposed) return absl::OkStatus();
  transposed->q.resize(q->q.size());
  transposed->scale_inv.resize(q->scale_inv.size());
  return transpose_128x128_cpu(d, q->q.data(), q->scale_inv.data(), transposed->q.data(),
                               transposed->scale_inv.data());
}

// D[m, n] (+)= A[m, k] · B[n, k]^T on FP8 operands (gemm_blockscaled_cpu, fp32 output).
absl::Status fp8_gemm(int64_t m, int64_t n, int64_t k, const Fp8Operand& a, const uint8_t* b_q,
                      const float* b_scale_inv, ScaleTile b_tile, bool accumulate, float* d) {
  GemmDesc g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a_tile = ScaleTile::k1x128;
  g.b_tile = b_tile;
  g.out_dtype = DType::kF32;
  g.accumulate = accumulate;
  return gemm_blockscaled_cpu(g, a.q.data(), a.scale_inv.data(), b_q, b_scale_inv, d);
}

absl::Status fp8_gemm(int64_t m, int64_t n, int64_t k, const Fp8Operand& a, const Fp8Operand& b,
                      ScaleTile b_tile, bool accumulate, float* d) {
  return fp8_gemm(m, n, k, a, b.q.data(), b.scale_inv.data(), b_tile, accumulate, d);
}

// The cached FP8 copy of `w` (--fp8-param-gather), or nullptr when the weight is quantized per
// call: no cache, INT4 fake-quant in front, or a weight the cache does not hold.
absl::StatusOr<const Fp8Weight*> cached_fp8_weight(const LinearOptions& o, const LinearShape& s,
                                                   const float* w) {
  if (!o.fp8_weights || o.int4_weights) return nullptr;
  const Fp8Weight* c = o.fp8_weights->find(w);
  if (c == nullptr) return nullptr;
  FP8RL_REQUIRE(c->out == s.out && c->in == s.in, "linear: cached FP8 weight is [", c->out, ", ",
                c->in, "], the call's is [", s.out, ", ", s.in, "]");
  return c;
}

// The weight the forward multiplies by: W itself, or its INT4 fake-quant (into `storage`).
absl::StatusOr<const float*> effective_weight(const LinearOptions& o, const LinearShape& s,
                                              const float* w, std::vector<float>* storage) {
  if (!o.int4_weights) return w;
  Int4Desc d;
  d.rows = s.out;
  d.cols = s.in;
  d.group_size = o.int4_group_size;
  d.src_dtype = DType::kF32;
  storage->resize(size_t(s.out * s.in));
  FP8RL_RETURN_IF_ERROR(int4_fake_quant_cpu(d, w, storage->data()));
  return storage->data();
}

absl::Status check_shape(const LinearShape& s) {
  FP8RL_REQUIRE(s.tokens >= 0 && s.in > 0 && s.out > 0, "linear: bad shape tokens=", s.tokens,
                " in=", s.in, " out=", s.out);
  return absl::OkStatus();
}

}  // namespace

std::string linear_precision_name(LinearPrecision p) {
  switch (p) {
    case LinearPrecision::kF32:
      return "f32";
    case LinearPrecision::kBF16:
      return "bf16";
    case LinearPrecision::kFP8:
      return "fp8";
  }
  return "?";
}

absl::Status linear_forward(const LinearOptions& o, const LinearShape& s, const float* x,
                            const float* w, const float* b, float* y) {
  FP8RL_RETURN_IF_ERROR(check_shape(s));
  std::vector<float> wq;
  FP8RL_ASSIGN_OR_RETURN(const float* weff, effective_weight(o, s, w, &wq));
  switch (o.precision) {
    case LinearPrecision::kF32:
      gemm_nt_f32(s.tokens, s.out, s.in, x, weff, y, false);
      break;
    case LinearPrecision::kBF16: {
      const std::vector<float> xb = round_to_bf16(x, s.tokens * s.in);
      const std::vector<float> wb = round_to_bf16(weff, s.out * s.in);
      gemm_nt_f32(s.tokens, s.out, s.in, xb.data(), wb.data(), y, false);
      break;
    }
    case LinearPrecision::kFP8: {
      Fp8Operand x8;
      FP8RL_RETURN_IF_ERROR(quantize_1x128(x, s.tokens, s.in, QuantRole::kFwdInput, false, &x8));
      FP8RL_ASSIGN_OR_RETURN(const Fp8Weight* cached, cached_fp8_weight(o, s, w));
      if (cached) {
        FP8RL_RETURN_IF_ERROR(fp8_gemm(s.tokens, s.out, s.in, x8, cached->q.data(),
                                       cached->scale_inv.data(), ScaleTile::k128x128, false, y));
        break;
      }
      Fp8Operand w8;
      FP8RL_RETURN_IF_ERROR(quantize_weight(weff, s.out, s.in, &w8, nullptr));
      FP8RL_RETURN_IF_ERROR(fp8_gemm(s.tokens, s.out, s.in, x8, w8, ScaleTile::k128x128, false, y));
      break;
    }
  }
  if (b) {
    for (int64_t t = 0; t < s.tokens; ++t) {
      float* yt = y + t * s.out;
      for (int64_t j = 0; j < s.out; ++j) yt[j] += b[j];
    }
  }
  return absl::OkStatus();
}

absl::Status linear_backward(const LinearOptions& o, const LinearShape& s, const float* x,
                             const float* w, const float* dy, float* dx, float* dw, float* db) {
  FP8RL_RETURN_IF_ERROR(check_shape(s));
  std::vector<float> wq;
  FP8RL_ASSIGN_OR_RETURN(const float* weff, effective_weight(o, s, w, &wq));
  switch (o.precision) {
    case LinearPrecision::kF32:
      if (dx) gemm_nn_f32(s.tokens, s.in, s.out, dy, weff, dx, false);
      gemm_tn_f32(s.out, s.in, s.tokens, dy, x, dw, true);
      break;
    case LinearPrecision::kBF16: {
      const std::vector<float> dyb = round_to_bf16(dy, s.tokens * s.out);
      const std::vector<float> xb = round_to_bf16(x, s.tokens * s.in);
      if (dx) {
        const std::vector<float> wb = round_to_bf16(weff, s.out * s.in);
        gemm_nn_f32(s.tokens, s.in, s.out, dyb.data(), wb.data(), dx, false);
      }
      gemm_tn_f32(s.out, s.in, s.tokens, dyb.data(), xb.data(), dw, true);
      break;
    }
    case LinearPrecision::kFP8: {
      if (dx) {
        Fp8Operand dy8;
        FP8RL_RETURN_IF_ERROR(
            quantize_1x128(dy, s.tokens, s.out, QuantRole::kBwdGrad, false, &dy8));
        FP8RL_ASSIGN_OR_RETURN(const Fp8Weight* cached, cached_fp8_weight(o, s, w));
        if (cached) {
          FP8RL_RETURN_IF_ERROR(fp8_gemm(s.tokens, s.in, s.out, dy8, cached->q_t.data(),
                                         cached->scale_inv_t.data(), ScaleTile::k128x128, false,
                                         dx));
        } else {
          Fp8Operand wt8;
          FP8RL_RETURN_IF_ERROR(quantize_weight(weff, s.out, s.in, nullptr, &wt8));
          FP8RL_RETURN_IF_ERROR(
              fp8_gemm(s.tokens, s.in, s.out, dy8, wt8, ScaleTile::k128x128, false, dx));
        }
      }
      // wgrad: dW[out, in] = dY^T · X with both operands' 1x128 tiles running along tokens.
      Fp8Operand dyt8, xt8;
      FP8RL_RETURN_IF_ERROR(quantize_1x128(dy, s.tokens, s.out, QuantRole::kBwdGrad, true, &dyt8));
      FP8RL_RETURN_IF_ERROR(quantize_1x128(x, s.tokens, s.in, QuantRole::kFwdInput, true, &xt8));
      FP8RL_RETURN_IF_ERROR(
          fp8_gemm(s.out, s.in, s.tokens, dyt8, xt8, ScaleTile::k1x128, true, dw));
      break;
    }
  }
  if (db) {
    for (int64_t t = 0; t < s.tokens; ++t) {
      const float* dyt = dy + t * s.out;
      for (int64_t j = 0; j < s.out; ++j) db[j] += dyt[j];
    }
  }
  return absl::OkStatus();
}

absl::Status Fp8WeightCache::set(float* w, int64_t out_f, int64_t in_f) {
  FP8RL_REQUIRE(w != nullptr && out_f > 0 && in_f > 0, "fp8 weight cache: bad weight [", out_f,
                ", ", in_f, "]");
  Fp8Weight e;
  e.out = out_f;
  e.in = in_f;
  Fp8Operand w8, wt8;
  FP8RL_RETURN_IF_ERROR(quantize_weight(w, out_f, in_f, &w8, &wt8));
  FP8RL_RETURN_IF_ERROR(dequantize_128x128_cpu(weight_desc(out_f, in_f), w8.q.data(),
                                               w8.scale_inv.data(), w, DType::kF32));
  e.q = std::move(w8.q);
  e.scale_inv = std::move(w8.scale_inv);
  e.q_t = std::move(wt8.q);
  e.scale_inv_t = std::move(wt8.scale_inv);
  entries_[w] = std::move(e);
  return absl::OkStatus();
}

const Fp8Weight* Fp8WeightCache::find(const float* w) const {
  const auto it = entries_.find(w);
  return it == entries_.end() ? nullptr : &it->second;
}

}  // namespace fp8rl
