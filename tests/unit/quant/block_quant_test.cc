// Blockwise FP8 quantizers (quant/block_quant.h): bitwise against a scalar tile reference, layout
// identities (columnwise = rowwise of the transpose, 128x128 transpose), error bounds, edges.
#include "quant/block_quant.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tests/catch.h"
#include "tests/unit/quant/quant_test_util.h"

using namespace fp8rl;
using namespace fp8rl::testing;

namespace {

const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// The rule written as plainly as possible: amax over the tile's elements (NaN if any is NaN),
// TE's scale, q = e4m3(x * scale), scale_inv = 1 / scale. Tiles are tr x tc; the scale grid is
// row-major [ceil(rows/tr), ceil(cols/tc)].
struct Reference {
  std::vector<uint8_t> q;
  std::vector<float> scale_inv;
  int64_t grid_cols = 0;
};

Reference reference(const Matrix& m, int64_t tr, int64_t tc, const ScaleParams& p) {
  Reference ref;
  ref.q.resize(size_t(m.rows * m.cols));
  ref.grid_cols = ceil_div(m.cols, tc);
  ref.scale_inv.resize(size_t(ceil_div(m.rows, tr) * ref.grid_cols));
  const float vfi = m.dtype == DType::kF32 ? kF32MaxFinite : kBF16MaxFinite;
  for (int64_t gr = 0; gr < ceil_div(m.rows, tr); ++gr) {
    for (int64_t gc = 0; gc < ref.grid_cols; ++gc) {
      float amax = 0.f;
      bool nan = false;
      const int64_t r1 = std::min(m.rows, (gr + 1) * tr), c1 = std::min(m.cols, (gc + 1) * tc);
      for (int64_t r = gr * tr; r < r1; ++r) {
        for (int64_t c = gc * tc; c < c1; ++c) {
          nan |= std::isnan(m.at(r, c));
          if (!std::isnan(m.at(r, c))) amax = std::max(amax, std::fabs(m.at(r, c)));
        }
      }
      const float scale =
          compute_scale_from_amax(nan ? kNaN : amax, kE4M3Max, p.power_2, p.amax_eps, vfi);
      ref.scale_inv[size_t(gr * ref.grid_cols + gc)] = 1.0f / scale;
      for (int64_t r = gr * tr; r < r1; ++r) {
        for (int64_t c = gc * tc; c < c1; ++c)
          ref.q[size_t(r * m.cols + c)] = f32_to_e4m3(m.at(r, c) * scale);
      }
    }
  }
  return ref;
}

QuantDesc desc_for(const Matrix& m, const ScaleParams& p) {
  QuantDesc d;
  d.rows = m.rows;
  d.cols = m.cols;
  d.src_dtype = m.dtype;
  d.scale = p;
  return d;
}

Matrix transposed(const Matrix& m) {
  Matrix t = m;
  t.rows = m.cols;
  t.cols = m.rows;
  for (int64_t r = 0; r < m.rows; ++r) {
    for (int64_t c = 0; c < m.cols; ++c) {
      t.f32[size_t(c * m.rows + r)] = m.f32[size_t(r * m.cols + c)];
      if (m.dtype == DType::kBF16) t.bf16[size_t(c * m.rows + r)] = m.bf16[size_t(r * m.cols + c)];
    }
  }
  return t;
}

std::vector<uint8_t> transpose_bytes(const std::vector<uint8_t>& q, int64_t rows, int64_t cols) {
  std::vector<uint8_t> t(q.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) t[size_t(c * rows + r)] = q[size_t(r * cols + c)];
  }
  return t;
}

Matrix from_values(int64_t rows, int64_t cols, std::vector<float> v, DType dtype = DType::kF32) {
  Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.dtype = dtype;
  m.f32 = std::move(v);
  if (dtype == DType::kBF16) {
    for (float& x : m.f32) {
      m.bf16.push_back(f32_to_bf16(x));
      x = bf16_to_f32(m.bf16.back());
    }
  }
  return m;
}

}  // namespace

TEST_CASE("quantizers match the scalar tile reference bitwise", "[quant][block]") {
  const DType dtype = GENERATE(DType::kF32, DType::kBF16);
  const bool pow2 = GENERATE(true, false);
  const float eps = GENERATE(0.f, 1e-12f);
  const ScaleParams p{pow2, eps};
  uint64_t seed = 1;
  for (const Shape2& s : quant_shapes()) {
    INFO("shape " << s.rows << "x" << s.cols << " " << std::string(dtype_name(dtype)) << " "
                  << p.to_string());
    const Matrix m = random_matrix(s.rows, s.cols, dtype, seed++);
    QuantDesc d = desc_for(m, p);
    d.columnwise = true;
    const size_t n = size_t(s.rows * s.cols);
    std::vector<uint8_t> q(n), q_t(n);
    std::vector<float> si(size_t(d.col_tiles() * s.rows)), si_t(size_t(d.row_tiles() * s.cols));
    REQUIRE(quantize_1x128_cpu(d, m.data(), q.data(), si.data(), q_t.data(), si_t.data()).ok());

    const Reference row = reference(m, 1, kQuantBlock, p);
    CHECK(first_diff(q, row.q) == -1);
    std::vector<float> row_si(si.size());  // the kernel's layout is [col_tiles, rows]
    for (int64_t r = 0; r < s.rows; ++r) {
      for (int64_t kb = 0; kb < d.col_tiles(); ++kb)
        row_si[size_t(kb * s.rows + r)] = row.scale_inv[size_t(r * row.grid_cols + kb)];
    }
    CHECK(first_diff(si, row_si) == -1);

    const Reference col = reference(m, kQuantBlock, 1, p);
    CHECK(first_diff(q_t, transpose_bytes(col.q, s.rows, s.cols)) == -1);
    CHECK(first_diff(si_t, col.scale_inv) == -1);

    std::vector<uint8_t> q2(n);
    std::vector<float> si2(size_t(d.row_tiles() * d.col_tiles()));
    REQUIRE(quantize_128x128_cpu(d, m.data(), q2.data(), si2.data()).ok());
    const Reference blk = reference(m, kQuantBlock, kQuantBlock, p);
    CHECK(first_diff(q2, blk.q) == -1);
    CHECK(first_diff(si2, blk.scale_inv) == -1);
  }
}

TEST_CASE("rowwise and columnwise copies are independent of each other", "[quant][block]") {
  const Matrix m = random_matrix(130, 257, DType::kBF16, 7);
  QuantDesc d = desc_for(m, ScaleParams{});
  const size_t n = size_t(m.rows * m.cols);
  std::vector<uint8_t> q_both(n), qt_both(n), q_row(n), qt_col(n);
  std::vector<float> s_both(size_t(d.col_tiles() * m.rows)),
      st_both(size_t(d.row_tiles() * m.cols));
  std::vector<float> s_row(s_both.size()), st_col(st_both.size());
  d.columnwise = true;
  REQUIRE(
      quantize_1x128_cpu(d, m.data(), q_both.data(), s_both.data(), qt_both.data(), st_both.data())
          .ok());
  d.columnwise = false;
  REQUIRE(quantize_1x128_cpu(d, m.data(), q_row.data(), s_row.data(), nullptr, nullptr).ok());
  d.rowwise = false;
  d.columnwise = true;
  REQUIRE(quantize_1x128_cpu(d, m.data(), nullptr, nullptr, qt_col.data(), st_col.data()).ok());
  CHECK(first_diff(q_both, q_row) == -1);
  CHECK(first_diff(s_both, s_row) == -1);
  CHECK(first_diff(qt_both, qt_col) == -1);
  CHECK(first_diff(st_both, st_col) == -1);
}

TEST_CASE("columnwise 1x128 equals rowwise 1x128 of the transpose", "[quant][block]") {
  const DType dtype = GENERATE(DType::kF32, DType::kBF16);
  uint64_t seed = 100;
  for (const Shape2& s : quant_shapes()) {
    INFO("shape " << s.rows << "x" << s.cols);
    const Matrix m = random_matrix(s.rows, s.cols, dtype, seed++);
    const Matrix t = transposed(m);
    QuantDesc d = desc_for(m, ScaleParams{false, 1e-12f});
    d.rowwise = false;
    d.columnwise = true;
    const size_t n = size_t(s.rows * s.cols);
    std::vector<uint8_t> q_t(n), q_ref(n);
    std::vector<float> si_t(size_t(d.row_tiles() * s.cols)), si_ref(si_t.size());
    REQUIRE(quantize_1x128_cpu(d, m.data(), nullptr, nullptr, q_t.data(), si_t.data()).ok());
    QuantDesc dt = desc_for(t, d.scale);
    REQUIRE(quantize_1x128_cpu(dt, t.data(), q_ref.data(), si_ref.data(), nullptr, nullptr).ok());
    CHECK(first_diff(q_t, q_ref) == -1);
    CHECK(first_diff(si_t, si_ref) == -1);
  }
}

TEST_CASE("transpose_128x128 is bitwise a transpose of data and scales", "[quant][block]") {
  uint64_t seed = 200;
  for (const Shape2& s : quant_shapes()) {
    INFO("shape " << s.rows << "x" << s.cols);
    const Matrix m = random_matrix(s.rows, s.cols, DType::kBF16, seed++);
    QuantDesc d = desc_for(m, ScaleParams{});
    d.scale_ld = round_up(d.col_tiles(), 4);  // cuBLASLt's padded layout
    const size_t n = size_t(s.rows * s.cols);
    std::vector<uint8_t> q(n), q_t(n);
    std::vector<float> si(size_t(d.row_tiles() * d.scale_ld), -1.f);
    std::vector<float> si_t(size_t(d.col_tiles() * d.row_tiles()));
    REQUIRE(quantize_128x128_cpu(d, m.data(), q.data(), si.data()).ok());
    REQUIRE(transpose_128x128_cpu(d, q.data(), si.data(), q_t.data(), si_t.data()).ok());
    CHECK(first_diff(q_t, transpose_bytes(q, s.rows, s.cols)) == -1);
    for (int64_t rb = 0; rb < d.row_tiles(); ++rb) {
      for (int64_t cb = 0; cb < d.scale_ld; ++cb) {
        const float v = si[size_t(rb * d.scale_ld + cb)];
        if (cb < d.col_tiles()) {
          CHECK(bits_of(si_t[size_t(cb * d.row_tiles() + rb)]) == bits_of(v));
        } else {
          CHECK(v == -1.f);  // padding entries are not written
        }
      }
    }
  }
}

TEST_CASE("dequantized values are within the E4M3 error bound", "[quant][block]") {
  const DType dtype = GENERATE(DType::kF32, DType::kBF16);
  const bool pow2 = GENERATE(true, false);
  uint64_t seed = 300;
  for (const Shape2& s : quant_shapes()) {
    INFO("shape " << s.rows << "x" << s.cols << " pow2=" << pow2);
    const Matrix m = random_matrix(s.rows, s.cols, dtype, seed++, /*edges=*/false);
    const QuantDesc d = desc_for(m, ScaleParams{pow2, 0.f});
    const size_t n = size_t(s.rows * s.cols);
    std::vector<uint8_t> q(n), q2(n);
    std::vector<float> si(size_t(d.col_tiles() * s.rows)),
        si2(size_t(d.row_tiles() * d.col_tiles()));
    std::vector<float> out(n), out2(n);
    std::vector<uint16_t> out_bf16(n);
    REQUIRE(quantize_1x128_cpu(d, m.data(), q.data(), si.data(), nullptr, nullptr).ok());
    REQUIRE(dequantize_1x128_cpu(d, q.data(), si.data(), out.data(), DType::kF32).ok());
    REQUIRE(dequantize_1x128_cpu(d, q.data(), si.data(), out_bf16.data(), DType::kBF16).ok());
    REQUIRE(quantize_128x128_cpu(d, m.data(), q2.data(), si2.data()).ok());
    REQUIRE(dequantize_128x128_cpu(d, q2.data(), si2.data(), out2.data(), DType::kF32).ok());
    for (int64_t r = 0; r < s.rows; ++r) {
      for (int64_t c = 0; c < s.cols; ++c) {
        const size_t i = size_t(r * s.cols + c);
        const double x = m.f32[i];
        // Half an ulp of E4M3 (1/16 relative) or half the subnormal step, in the tile's scale.
        const double tol_row =
            std::fabs(x) / 16 + std::ldexp(si[size_t((c / 128) * s.rows + r)], -10);
        const double tol_blk =
            std::fabs(x) / 16 + std::ldexp(si2[size_t((r / 128) * d.col_tiles() + c / 128)], -10);
        if (!(std::fabs(out[i] - x) <= tol_row * (1 + 1e-6)))
          FAIL("rowwise error at (" << r << ", " << c << "): " << x << " -> " << out[i]);
        if (!(std::fabs(out2[i] - x) <= tol_blk * (1 + 1e-6)))
          FAIL("128x128 error at (" << r << ", " << c << "): " << x << " -> " << out2[i]);
        if (out_bf16[i] != f32_to_bf16(out[i])) FAIL("bf16 dequant differs at " << i);
      }
    }
  }
}

TEST_CASE("all-zero tiles get scale 1 and zero payload", "[quant][block]") {
  const Matrix m = from_values(3, 300, std::vector<float>(900, 0.f));
  QuantDesc d = desc_for(m, ScaleParams{true, 0.f});
  d.columnwise = true;
  std::vector<uint8_t> q(900, 0xAA), q_t(900, 0xAA), q2(900, 0xAA);
  std::vector<float> si(9), si_t(300), si2(3);
  REQUIRE(quantize_1x128_cpu(d, m.data(), q.data(), si.data(), q_t.data(), si_t.data()).ok());
  REQUIRE(quantize_128x128_cpu(d, m.data(), q2.data(), si2.data()).ok());
  for (uint8_t b : q) CHECK(b == 0);
  for (uint8_t b : q_t) CHECK(b == 0);
  for (uint8_t b : q2) CHECK(b == 0);
  for (float s : si) CHECK(s == 1.f);
  for (float s : si_t) CHECK(s == 1.f);
  for (float s : si2) CHECK(s == 1.f);
  // With eps the zero tile gets the eps scale instead (LoongForge's recommended 1e-12).
  d.scale.amax_eps = 1e-12f;
  REQUIRE(quantize_1x128_cpu(d, m.data(), q.data(), si.data(), q_t.data(), si_t.data()).ok());
  CHECK(si[0] == 1.f / compute_scale_from_amax(1e-12f, kE4M3Max, true, 0.f, kF32MaxFinite));
  for (uint8_t b : q) CHECK(b == 0);
}

TEST_CASE("inf, NaN and values above 448 in a tile", "[quant][block]") {
  std::vector<float> v(3 * 128);
  for (int c = 0; c < 128; ++c) v[c] = v[128 + c] = v[256 + c] = float(c) / 8;
  v[0] = kNaN;          // row 0: a NaN makes amax NaN, so the tile is not scaled
  v[128 + 5] = -kInf;   // row 1: an inf makes amax inf, scale 1 again
  v[256 + 9] = 1000.f;  // row 2: above 448 but finite: scaled normally
  const Matrix m = from_values(3, 128, v);
  const QuantDesc d = desc_for(m, ScaleParams{true, 0.f});
  std::vector<uint8_t> q(v.size());
  std::vector<float> si(3);
  REQUIRE(quantize_1x128_cpu(d, m.data(), q.data(), si.data(), nullptr, nullptr).ok());
  CHECK(si[0] == 1.f);
  CHECK(q[0] == 0x7F);
  CHECK(q[1] == f32_to_e4m3(0.125f));
  CHECK(si[1] == 1.f);
  CHECK(q[128 + 5] == 0xFE);
  CHECK(q[128 + 127] == f32_to_e4m3(127.f / 8));
  CHECK(si[2] == 4.f);  // 448/1000 = 0.448 -> 0.25 in power-of-2 mode
  CHECK(q[256 + 9] == f32_to_e4m3(250.f));
  CHECK(e4m3_to_f32(q[256 + 9]) * si[2] == 1024.f);  // 250 rounds to 256 in E4M3
  // NaN keeps its sign; a NaN in a 128x128 block unscales the whole block.
  std::vector<float> w(128 * 2, 300.f);
  w[200] = -kNaN;
  const Matrix mw = from_values(2, 128, w);
  std::vector<uint8_t> qw(w.size());
  float sw = 0;
  REQUIRE(quantize_128x128_cpu(desc_for(mw, ScaleParams{}), mw.data(), qw.data(), &sw).ok());
  CHECK(sw == 1.f);
  CHECK(qw[200] == 0xFF);
  CHECK(qw[0] == f32_to_e4m3(300.f));
}

TEST_CASE("a large matrix split over threads matches the reference", "[quant][block]") {
  const Matrix m = random_matrix(1024, 1152, DType::kBF16, 400);
  QuantDesc d = desc_for(m, ScaleParams{});
  d.columnwise = true;
  const size_t n = size_t(m.rows * m.cols);
  std::vector<uint8_t> q(n), q_t(n);
  std::vector<float> si(size_t(d.col_tiles() * m.rows)), si_t(size_t(d.row_tiles() * m.cols));
  REQUIRE(quantize_1x128_cpu(d, m.data(), q.data(), si.data(), q_t.data(), si_t.data()).ok());
  CHECK(first_diff(q, reference(m, 1, kQuantBlock, d.scale).q) == -1);
  CHECK(first_diff(q_t, transpose_bytes(reference(m, kQuantBlock, 1, d.scale).q, m.rows, m.cols)) ==
        -1);
}

TEST_CASE("QuantDesc validates and prints itself", "[quant][block]") {
  QuantDesc d;
  d.rows = 4;
  d.cols = 300;
  CHECK(d.validate().ok());
  CHECK(d.to_string() ==
        "QuantDesc{rows=4, cols=300, src=bfloat16, pow2=1, eps=0, rowwise=1, columnwise=0, "
        "scale_ld=0}");
  QuantDesc bad = d;
  bad.rows = -1;
  CHECK(bad.validate().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(bad.validate().message()).find("rows") != std::string::npos);
  bad = d;
  bad.src_dtype = DType::kF8E4M3;
  CHECK(!bad.validate().ok());
  bad = d;
  bad.rowwise = false;
  CHECK(!bad.validate().ok());
  bad = d;
  bad.scale_ld = 2;  // ceil(300/128) = 3
  CHECK(std::string(bad.validate().message()).find("scale_ld") != std::string::npos);
  bad.scale_ld = 3;
  CHECK(bad.validate().ok());
  bad.scale.amax_eps = -1.f;
  CHECK(!bad.validate().ok());

  // The functions validate first and name themselves and the desc.
  bad = d;
  bad.cols = -3;
  const absl::Status s = quantize_128x128_cpu(bad, nullptr, nullptr, nullptr);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()).find("quantize_128x128_cpu QuantDesc{rows=4, cols=-3") == 0);
  CHECK(!quantize_1x128_cpu(d, nullptr, nullptr, nullptr, nullptr, nullptr).ok());
  std::vector<uint8_t> q(1200);
  std::vector<float> si(12), out(1200);
  CHECK(!dequantize_1x128_cpu(d, q.data(), si.data(), out.data(), DType::kF8E4M3).ok());
  // Empty problems need no buffers.
  d.rows = 0;
  CHECK(quantize_1x128_cpu(d, nullptr, nullptr, nullptr, nullptr, nullptr).ok());
}
