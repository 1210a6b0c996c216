// Block-scaled FP8 GEMM reference (quant/gemm_ref.h) against a float64 matmul of the dequantized
// operands, in the fprop, dgrad and wgrad compositions TransformerEngine uses; accumulation.
#include "quant/gemm_ref.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/status.h"
#include "quant/block_quant.h"
#include "tests/catch.h"
#include "tests/unit/quant/quant_test_util.h"

using namespace fp8rl;
using namespace fp8rl::testing;

namespace {

// An e4m3 GEMM operand [rows, k] with its scales and their layout.
struct Operand {
  int64_t rows = 0, k = 0;
  ScaleTile tile = ScaleTile::k1x128;
  int64_t ld = 0;  // 128x128 scale row stride
  std::vector<uint8_t> q;
  std::vector<float> s;

  std::vector<double> dequantized() const {
    std::vector<double> out(size_t(rows * k));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < k; ++c) {
        const float sc = tile == ScaleTile::k1x128 ? s[size_t((c / 128) * rows + r)]
                                                   : s[size_t((r / 128) * ld + c / 128)];
        out[size_t(r * k + c)] = double(e4m3_to_f32(q[size_t(r * k + c)])) * double(sc);
      }
    }
    return out;
  }
};

QuantDesc desc_of(const Matrix& m) {
  QuantDesc d;
  d.rows = m.rows;
  d.cols = m.cols;
  d.src_dtype = m.dtype;
  return d;
}

Operand rowwise_1x128(const Matrix& m) {
  const QuantDesc d = desc_of(m);
  Operand o{m.rows,
            m.cols,
            ScaleTile::k1x128,
            0,
            std::vector<uint8_t>(size_t(m.rows * m.cols)),
            std::vector<float>(size_t(d.col_tiles() * m.rows))};
  FP8RL_CHECK_OK(quantize_1x128_cpu(d, m.data(), o.q.data(), o.s.data(), nullptr, nullptr));
  return o;
}

// The columnwise copy: an operand [cols, rows] whose K is the token dimension.
Operand columnwise_1x128(const Matrix& m) {
  QuantDesc d = desc_of(m);
  d.rowwise = false;
  d.columnwise = true;
  Operand o{m.cols,
            m.rows,
            ScaleTile::k1x128,
            0,
            std::vector<uint8_t>(size_t(m.rows * m.cols)),
            std::vector<float>(size_t(d.row_tiles() * m.cols))};
  FP8RL_CHECK_OK(quantize_1x128_cpu(d, m.data(), nullptr, nullptr, o.q.data(), o.s.data()));
  return o;
}

Operand block_128x128(const Matrix& m, int64_t scale_ld = 0) {
  QuantDesc d = desc_of(m);
  d.scale_ld = scale_ld;
  Operand o{m.rows,
            m.cols,
            ScaleTile::k128x128,
            d.block_scale_ld(),
            std::vector<uint8_t>(size_t(m.rows * m.cols)),
            std::vector<float>(size_t(d.row_tiles() * d.block_scale_ld()))};
  FP8RL_CHECK_OK(quantize_128x128_cpu(d, m.data(), o.q.data(), o.s.data()));
  return o;
}

Operand transposed_128x128(const Operand& w) {
  QuantDesc d;
  d.rows = w.rows;
  d.cols = w.k;
  d.scale_ld = w.ld;
  Operand o{w.k,
            w.rows,
            ScaleTile::k128x128,
            d.row_tiles(),
            std::vector<uint8_t>(w.q.size()),
            std::vector<float>(size_t(d.col_tiles() * d.row_tiles()))};
  FP8RL_CHECK_OK(transpose_128x128_cpu(d, w.q.data(), w.s.data(), o.q.data(), o.s.data()));
  return o;
}

GemmDesc gemm_desc(const Operand& a, const Operand& b, DType out) {
  GemmDesc g;
  g.m = a.rows;
  g.n = b.rows;
  g.k = a.k;
  g.a_tile = a.tile;
  g.b_tile = b.tile;
  g.a_scale_ld = a.tile == ScaleTile::k128x128 ? a.ld : 0;
  g.b_scale_ld = b.tile == ScaleTile::k128x128 ? b.ld : 0;
  g.out_dtype = out;
  return g;
}

// D as float64, whichever dtype the GEMM wrote.
std::vector<double> run_gemm(const GemmDesc& g, const Operand& a, const Operand& b) {
  std::vector<float> f(size_t(g.m * g.n));
  std::vector<uint16_t> h(f.size());
  void* d = g.out_dtype == DType::kF32 ? static_cast<void*>(f.data()) : h.data();
  FP8RL_CHECK_OK(gemm_blockscaled_cpu(g, a.q.data(), a.s.data(), b.q.data(), b.s.data(), d));
  std::vector<double> out(f.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = g.out_dtype == DType::kF32 ? f[i] : bf16_to_f32(h[i]);
  }
  return out;
}

// D[i][j] = sum_k A[i][k] * B[j][k] over the dequantized operands, in float64.
std::vector<double> reference(const Operand& a, const Operand& b) {
  const std::vector<double> da = a.dequantized(), db = b.dequantized();
  std::vector<double> d(size_t(a.rows * b.rows), 0.0);
  for (int64_t i = 0; i < a.rows; ++i) {
    for (int64_t j = 0; j < b.rows; ++j) {
      double s = 0;
      for (int64_t k = 0; k < a.k; ++k) s += da[size_t(i * a.k + k)] * db[size_t(j * a.k + k)];
      d[size_t(i * b.rows + j)] = s;
    }
  }
  return d;
}

void check_close(const GemmDesc& g, const Operand& a, const Operand& b) {
  INFO(g.to_string());
  const double err = rel_frobenius(run_gemm(g, a, b), reference(a, b));
  CHECK(err <= (g.out_dtype == DType::kF32 ? 1e-5 : 4e-3));
}

struct GemmShape {
  int64_t m, n, k;
};

std::vector<GemmShape> gemm_shapes() {
  return {{1, 1, 1},     {3, 130, 300}, {64, 192, 256}, {130, 257, 384},
          {17, 64, 129}, {0, 5, 128},   {5, 0, 128},    {4, 6, 0}};
}

}  // namespace

TEST_CASE("fprop, dgrad and wgrad match a float64 matmul", "[quant][gemm]") {
  const DType out = GENERATE(DType::kF32, DType::kBF16);
  uint64_t seed = 700;
  for (const GemmShape& s : gemm_shapes()) {
    INFO("M=" << s.m << " N=" << s.n << " K=" << s.k);
    const Matrix x = random_matrix(s.m, s.k, DType::kBF16, seed++, false);   // activations
    const Matrix w = random_matrix(s.n, s.k, DType::kF32, seed++, false);    // weights
    const Matrix dy = random_matrix(s.m, s.n, DType::kBF16, seed++, false);  // output grads
    const Operand xq = rowwise_1x128(x), wq = block_128x128(w, round_up(ceil_div(s.k, 128), 4));
    // fprop Y = X W^T; TE's own operand order (A = W) too.
    check_close(gemm_desc(xq, wq, out), xq, wq);
    check_close(gemm_desc(wq, xq, out), wq, xq);
    // dgrad dX = dY W: B is the 128x128 transpose of W.
    const Operand dyq = rowwise_1x128(dy), wt = transposed_128x128(wq);
    check_close(gemm_desc(dyq, wt, out), dyq, wt);
    // wgrad dW = dY^T X: both columnwise, K is the token dimension.
    const Operand dyc = columnwise_1x128(dy), xc = columnwise_1x128(x);
    check_close(gemm_desc(dyc, xc, out), dyc, xc);
  }
}

TEST_CASE("accumulate adds to D and rounds once", "[quant][gemm]") {
  const Matrix x = random_matrix(70, 300, DType::kBF16, 800, false);
  const Matrix w = random_matrix(90, 300, DType::kBF16, 801, false);
  const Operand xq = rowwise_1x128(x), wq = block_128x128(w);
  GemmDesc g = gemm_desc(xq, wq, DType::kF32);
  const size_t n = size_t(g.m * g.n);
  std::vector<float> fresh(n);
  REQUIRE(gemm_blockscaled_cpu(g, xq.q.data(), xq.s.data(), wq.q.data(), wq.s.data(), fresh.data())
              .ok());

  std::vector<float> d0(n), d(n);
  std::vector<uint16_t> h0(n), h(n);
  for (size_t i = 0; i < n; ++i) {
    d0[i] = float(i % 13) - 6.5f;
    h0[i] = f32_to_bf16(d0[i] * 3.3f);
  }
  d = d0;
  g.accumulate = true;
  REQUIRE(
      gemm_blockscaled_cpu(g, xq.q.data(), xq.s.data(), wq.q.data(), wq.s.data(), d.data()).ok());
  h = h0;
  g.out_dtype = DType::kBF16;
  REQUIRE(
      gemm_blockscaled_cpu(g, xq.q.data(), xq.s.data(), wq.q.data(), wq.s.data(), h.data()).ok());
  for (size_t i = 0; i < n; ++i) {
    // F32 D without accumulation is exactly the fp32 accumulator, so these are bitwise.
    if (bits_of(d[i]) != bits_of(d0[i] + fresh[i])) FAIL("f32 accumulate differs at " << i);
    if (h[i] != f32_to_bf16(bf16_to_f32(h0[i]) + fresh[i]))
      FAIL("bf16 accumulate differs at " << i);
  }
}

TEST_CASE("a NaN in an operand poisons only the outputs that read it", "[quant][gemm]") {
  Matrix x = random_matrix(4, 256, DType::kF32, 900, false);
  x.f32[size_t(1 * 256 + 200)] = std::numeric_limits<float>::quiet_NaN();
  const Matrix w = random_matrix(3, 256, DType::kF32, 901, false);
  const Operand xq = rowwise_1x128(x), wq = block_128x128(w);
  const std::vector<double> d = run_gemm(gemm_desc(xq, wq, DType::kBF16), xq, wq);
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 3; ++j) CHECK(std::isnan(d[size_t(i * 3 + j)]) == (i == 1));
  }
}

TEST_CASE("GemmDesc validates and prints itself", "[quant][gemm]") {
  GemmDesc g;
  g.m = 4;
  g.n = 8;
  g.k = 300;
  CHECK(g.validate().ok());
  CHECK(g.to_string() ==
        "GemmDesc{m=4, n=8, k=300, a_tile=1x128, b_tile=128x128, a_scale_ld=0, b_scale_ld=0, "
        "out=bfloat16, accumulate=0}");
  GemmDesc bad = g;
  bad.a_tile = ScaleTile::k128x128;
  CHECK(std::string(bad.validate().message()).find("128x128 x 128x128") != std::string::npos);
  bad = g;
  bad.b_scale_ld = 2;  // ceil(300/128) = 3
  CHECK(std::string(bad.validate().message()).find("b_scale_ld") != std::string::npos);
  bad.b_scale_ld = 4;
  CHECK(bad.validate().ok());
  bad = g;
  bad.out_dtype = DType::kF8E4M3;
  CHECK(!bad.validate().ok());
  bad = g;
  bad.k = -1;
  CHECK(!bad.validate().ok());
  const absl::Status s = gemm_blockscaled_cpu(bad, nullptr, nullptr, nullptr, nullptr, nullptr);
  CHECK(std::string(s.message()).find("gemm_blockscaled_cpu GemmDesc{m=4") == 0);
  CHECK(!gemm_blockscaled_cpu(g, nullptr, nullptr, nullptr, nullptr, nullptr).ok());
}
