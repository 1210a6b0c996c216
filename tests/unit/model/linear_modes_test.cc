// Linear precision modes: FP8 blockwise against dequantize-then-multiply references of the TE
// recipe, BF16 against rounded operands, INT4 fake-quant against F32 on the fake-quant weight, and
// the FP8 weight cache against per-call quantization.
#include <memory>
#include <vector>

#include "core/dtype.h"
#include "model/ops/gemm_f32.h"
#include "model/ops/linear.h"
#include "quant/block_quant.h"
#include "quant/int4.h"
#include "tests/catch.h"
#include "tests/unit/model/grad_check.h"

using namespace fp8rl;
using namespace fp8rl::test;

namespace {

// x [rows, cols] through 1x128 rowwise quantization and back.
std::vector<float> fake_quant_1x128(const std::vector<float>& x, int64_t rows, int64_t cols,
                                    QuantRole role) {
  QuantDesc d;
  d.rows = rows;
  d.cols = cols;
  d.src_dtype = DType::kF32;
  d.scale = scale_params_from_env(role);
  std::vector<uint8_t> q(x.size());
  std::vector<float> s(size_t(d.col_tiles() * rows)), out(x.size());
  REQUIRE(quantize_1x128_cpu(d, x.data(), q.data(), s.data(), nullptr, nullptr).ok());
  REQUIRE(dequantize_1x128_cpu(d, q.data(), s.data(), out.data(), DType::kF32).ok());
  return out;
}

std::vector<float> fake_quant_128x128(const std::vector<float>& w, int64_t rows, int64_t cols) {
  QuantDesc d;
  d.rows = rows;
  d.cols = cols;
  d.src_dtype = DType::kF32;
  d.scale = scale_params_from_env(QuantRole::kFwdWeight);
  std::vector<uint8_t> q(w.size());
  std::vector<float> s(size_t(d.row_tiles() * d.col_tiles())), out(w.size());
  REQUIRE(quantize_128x128_cpu(d, w.data(), q.data(), s.data()).ok());
  REQUIRE(dequantize_128x128_cpu(d, q.data(), s.data(), out.data(), DType::kF32).ok());
  return out;
}

std::vector<float> transposed(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<float> t(x.size());
  transpose_f32(rows, cols, x.data(), t.data());
  return t;
}

}  // namespace

TEST_CASE("fp8 linear follows TE's blockwise recipe", "[model][linear]") {
  Rng rng(11);
  const LinearShape s{130, 200, 150};  // ragged against 128 on every side
  auto x = random_vector(s.tokens * s.in, rng), w = random_vector(s.out * s.in, rng, 0.05);
  auto dy = random_vector(s.tokens * s.out, rng, 1e-3);
  LinearOptions fp8;
  fp8.precision = LinearPrecision::kFP8;

  std::vector<float> y(size_t(s.tokens * s.out)), ref(y.size());
  REQUIRE(linear_forward(fp8, s, x.data(), w.data(), nullptr, y.data()).ok());
  const auto xq = fake_quant_1x128(x, s.tokens, s.in, QuantRole::kFwdInput);
  const auto wq = fake_quant_128x128(w, s.out, s.in);
  gemm_nt_f32(s.tokens, s.out, s.in, xq.data(), wq.data(), ref.data(), false);
  CHECK(rel_norm_error(y.data(), ref.data(), int64_t(y.size())) < 1e-5);

  std::vector<float> dx(x.size()), dw(w.size(), 1.f), dx_ref(x.size()), dw_ref(w.size(), 1.f);
  REQUIRE(
      linear_backward(fp8, s, x.data(), w.data(), dy.data(), dx.data(), dw.data(), nullptr).ok());
  // dgrad: dY 1x128 along out, W 128x128 (its transpose is bitwise the same blocks).
  const auto dyq = fake_quant_1x128(dy, s.tokens, s.out, QuantRole::kBwdGrad);
  gemm_nn_f32(s.tokens, s.in, s.out, dyq.data(), wq.data(), dx_ref.data(), false);
  CHECK(rel_norm_error(dx.data(), dx_ref.data(), int64_t(dx.size())) < 1e-5);
  // wgrad: both operands in 1x128 tiles along tokens, i.e. rowwise tiles of their transposes.
  const auto dytq =
      fake_quant_1x128(transposed(dy, s.tokens, s.out), s.out, s.tokens, QuantRole::kBwdGrad);
  const auto xtq =
      fake_quant_1x128(transposed(x, s.tokens, s.in), s.in, s.tokens, QuantRole::kFwdInput);
  gemm_nt_f32(s.out, s.in, s.tokens, dytq.data(), xtq.data(), dw_ref.data(), true);
  CHECK(rel_norm_error(dw.data(), dw_ref.data(), int64_t(dw.size())) < 1e-5);

  // And close to the exact product (FP8 E4M3 has a 3-bit mantissa).
  LinearOptions f32;
  REQUIRE(linear_forward(f32, s, x.data(), w.data(), nullptr, ref.data()).ok());
  CHECK(rel_norm_error(y.data(), ref.data(), int64_t(y.size())) < 5e-2);
}

TEST_CASE("bf16 linear rounds its operands", "[model][linear]") {
  Rng rng(12);
  const LinearShape s{9, 33, 17};
  auto x = random_vector(s.tokens * s.in, rng), w = random_vector(s.out * s.in, rng);
  auto round = [](std::vector<float> v) {
    for (float& e : v) e = bf16_to_f32(f32_to_bf16(e));
    return v;
  };
  LinearOptions bf16;
  bf16.precision = LinearPrecision::kBF16;
  std::vector<float> y(size_t(s.tokens * s.out)), ref(y.size());
  REQUIRE(linear_forward(bf16, s, x.data(), w.data(), nullptr, y.data()).ok());
  const auto xr = round(x), wr = round(w);
  REQUIRE(linear_forward({}, s, xr.data(), wr.data(), nullptr, ref.data()).ok());
  CHECK(rel_norm_error(y.data(), ref.data(), int64_t(y.size())) < 1e-6);
  REQUIRE(linear_forward({}, s, x.data(), w.data(), nullptr, ref.data()).ok());
  const double err = rel_norm_error(y.data(), ref.data(), int64_t(y.size()));
  CHECK(err > 0);
  CHECK(err < 1e-2);
}

TEST_CASE("int4 fake-quant linear is straight-through", "[model][linear]") {
  Rng rng(13);
  const LinearShape s{7, 64, 10};
  auto x = random_vector(s.tokens * s.in, rng), w = random_vector(s.out * s.in, rng);
  auto dy = random_vector(s.tokens * s.out, rng);
  LinearOptions int4;
  int4.int4_weights = true;
  int4.int4_group_size = 32;
  Int4Desc d;
  d.rows = s.out;
  d.cols = s.in;
  d.group_size = 32;
  d.src_dtype = DType::kF32;
  std::vector<float> wq(w.size());
  REQUIRE(int4_fake_quant_cpu(d, w.data(), wq.data()).ok());

  std::vector<float> y(size_t(s.tokens * s.out)), ref(y.size());
  REQUIRE(linear_forward(int4, s, x.data(), w.data(), nullptr, y.data()).ok());
  REQUIRE(linear_forward({}, s, x.data(), wq.data(), nullptr, ref.data()).ok());
  CHECK(rel_norm_error(y.data(), ref.data(), int64_t(y.size())) == 0);

  std::vector<float> dx(x.size()), dw(w.size(), 0.f), dx_ref(x.size()), dw_ref(w.size(), 0.f);
  REQUIRE(
      linear_backward(int4, s, x.data(), w.data(), dy.data(), dx.data(), dw.data(), nullptr).ok());
  REQUIRE(
      linear_backward({}, s, x.data(), wq.data(), dy.data(), dx_ref.data(), dw_ref.data(), nullptr)
          .ok());
  CHECK(rel_norm_error(dx.data(), dx_ref.data(), int64_t(dx.size())) == 0);
  CHECK(rel_norm_error(dw.data(), dw_ref.data(), int64_t(dw.size())) == 0);
}

TEST_CASE("fp8 weight cache stands in for the per-call weight quantization", "[model][linear]") {
  Rng rng(14);
  const LinearShape s{70, 200, 150};
  auto x = random_vector(s.tokens * s.in, rng), w = random_vector(s.out * s.in, rng, 0.05);
  auto dy = random_vector(s.tokens * s.out, rng, 1e-3);
  LinearOptions per_call;
  per_call.precision = LinearPrecision::kFP8;
  auto cache = std::make_shared<Fp8WeightCache>();
  std::vector<float> grid = w;  // the parameter the cache turns into FP8 grid values
  REQUIRE(cache->set(grid.data(), s.out, s.in).ok());
  CHECK(grid == fake_quant_128x128(w, s.out, s.in));
  REQUIRE(cache->find(grid.data()) != nullptr);
  CHECK(cache->find(w.data()) == nullptr);
  LinearOptions cached = per_call;
  cached.fp8_weights = cache;

  // Quantizing the original weight per call gives the payload the cache holds: bitwise equal.
  std::vector<float> y(size_t(s.tokens * s.out)), y_ref(y.size());
  REQUIRE(linear_forward(cached, s, x.data(), grid.data(), nullptr, y.data()).ok());
  REQUIRE(linear_forward(per_call, s, x.data(), w.data(), nullptr, y_ref.data()).ok());
  CHECK(y == y_ref);
  std::vector<float> dx(x.size()), dw(w.size(), 0.f), dx_ref(x.size()), dw_ref(w.size(), 0.f);
  REQUIRE(
      linear_backward(cached, s, x.data(), grid.data(), dy.data(), dx.data(), dw.data(), nullptr)
          .ok());
  REQUIRE(linear_backward(per_call, s, x.data(), w.data(), dy.data(), dx_ref.data(), dw_ref.data(),
                          nullptr)
              .ok());
  CHECK(dx == dx_ref);
  CHECK(dw == dw_ref);

  // A weight the cache does not hold is quantized per call; a shape that disagrees is an error.
  REQUIRE(linear_forward(cached, s, x.data(), w.data(), nullptr, y.data()).ok());
  CHECK(y == y_ref);
  const LinearShape wrong{s.tokens, s.out, s.in};
  y.resize(size_t(wrong.tokens * wrong.out));
  CHECK(linear_forward(cached, wrong, x.data(), grid.data(), nullptr, y.data()).code() ==
        absl::StatusCode::kInvalidArgument);
}
