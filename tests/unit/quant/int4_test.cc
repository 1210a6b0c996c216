// INT4 group fake-quant and pack-quantized packing (quant/int4.h): grid properties, bit layout,
// round trip, non-finite handling, environment knobs.
#include "quant/int4.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "core/env.h"
#include "tests/catch.h"
#include "tests/unit/quant/quant_test_util.h"

using namespace fp8rl;
using namespace fp8rl::testing;

namespace {

Int4Desc int4_desc(const Matrix& m, int64_t group_size) {
  Int4Desc d;
  d.rows = m.rows;
  d.cols = m.cols;
  d.group_size = group_size;
  d.src_dtype = m.dtype;
  return d;
}

float out_value(const std::vector<float>& f, const std::vector<uint16_t>& b, DType t, size_t i) {
  return t == DType::kF32 ? f[i] : bf16_to_f32(b[i]);
}

}  // namespace

TEST_CASE("fake-quant lands on the bf16-scaled [-7, 7] grid", "[quant][int4]") {
  const DType dtype = GENERATE(DType::kF32, DType::kBF16);
  const int64_t g = GENERATE(32, 128);
  uint64_t seed = 500;
  for (const Shape2& s : quant_shapes()) {
    INFO("shape " << s.rows << "x" << s.cols << " group " << g);
    const Matrix m = random_matrix(s.rows, s.cols, dtype, seed++, /*edges=*/false);
    const Int4Desc d = int4_desc(m, g);
    const size_t n = size_t(s.rows * s.cols);
    std::vector<float> yf(n);
    std::vector<uint16_t> yb(n);
    REQUIRE(int4_fake_quant_cpu(d, m.data(),
                                dtype == DType::kF32 ? static_cast<void*>(yf.data()) : yb.data())
                .ok());
    std::vector<int32_t> packed(size_t(s.rows * d.packed_cols()));
    std::vector<uint16_t> scale(size_t(s.rows * d.groups()));
    REQUIRE(int4_pack_cpu(d, m.data(), packed.data(), scale.data()).ok());
    for (int64_t r = 0; r < s.rows; ++r) {
      for (int64_t gi = 0; gi < d.groups(); ++gi) {
        const float sc = bf16_to_f32(scale[size_t(r * d.groups() + gi)]);
        float amax = 0;
        for (int64_t c = gi * g; c < std::min(s.cols, (gi + 1) * g); ++c)
          amax = std::max(amax, std::fabs(m.at(r, c)));
        REQUIRE(sc == bf16_to_f32(f32_to_bf16(std::max(amax / 7.f, kInt4MinScale))));
        int max_level = 0;
        for (int64_t c = gi * g; c < std::min(s.cols, (gi + 1) * g); ++c) {
          const size_t i = size_t(r * s.cols + c);
          const float x = m.f32[i];
          const float level = std::nearbyint(x / sc);
          const float want = std::min(7.f, std::max(-7.f, level)) * sc;
          const float y = out_value(yf, yb, dtype, i);
          const float want_out = dtype == DType::kF32 ? want : bf16_to_f32(f32_to_bf16(want));
          if (bits_of(y) != bits_of(want_out))
            FAIL("fake-quant differs at (" << r << ", " << c << "): " << x << " -> " << y
                                           << ", want " << want_out);
          max_level = std::max(max_level, int(std::fabs(std::min(7.f, std::max(-7.f, level)))));
        }
        if (amax / 7.f > kInt4MinScale) CHECK(max_level == 7);  // the amax element hits the edge
      }
    }
  }
}

TEST_CASE("unpack(pack(x)) equals the fake-quant of x", "[quant][int4]") {
  const DType dtype = GENERATE(DType::kF32, DType::kBF16);
  const int64_t g = GENERATE(32, 128);
  uint64_t seed = 600;
  for (const Shape2& s : quant_shapes()) {
    INFO("shape " << s.rows << "x" << s.cols << " group " << g);
    const Matrix m = random_matrix(s.rows, s.cols, dtype, seed++, /*edges=*/false);
    const Int4Desc d = int4_desc(m, g);
    const size_t n = size_t(s.rows * s.cols);
    std::vector<uint16_t> y(2 * n), back(2 * n);  // room for either dtype
    std::vector<int32_t> packed(size_t(s.rows * d.packed_cols()));
    std::vector<uint16_t> scale(size_t(s.rows * d.groups()));
    REQUIRE(int4_fake_quant_cpu(d, m.data(), y.data()).ok());
    REQUIRE(int4_pack_cpu(d, m.data(), packed.data(), scale.data()).ok());
    REQUIRE(int4_unpack_cpu(d, packed.data(), scale.data(), back.data(), dtype).ok());
    // Equal as values: the fake-quant keeps the sign of a negative input that rounds to level 0
    // (as torch.round does), the packed nibble cannot.
    for (size_t i = 0; i < n; ++i) {
      const float a =
          dtype == DType::kF32 ? reinterpret_cast<const float*>(y.data())[i] : bf16_to_f32(y[i]);
      const float b = dtype == DType::kF32 ? reinterpret_cast<const float*>(back.data())[i]
                                           : bf16_to_f32(back[i]);
      if (a != b) FAIL("unpack differs from fake-quant at " << i << ": " << b << " vs " << a);
    }
    // Padding nibbles of the last word are zero.
    if (s.cols % 8 != 0) {
      for (int64_t r = 0; r < s.rows; ++r) {
        const uint32_t last = uint32_t(packed[size_t(r * d.packed_cols() + d.packed_cols() - 1)]);
        CHECK((last >> (4 * (s.cols % 8))) == 0u);
      }
    }
  }
}

TEST_CASE("pack layout: q + 8, lowest nibble first", "[quant][int4]") {
  Matrix m;
  m.rows = 1;
  m.cols = 9;
  m.f32 = {7, -7, 0, 1, 2, 3, 4, 5, 6};
  const Int4Desc d = int4_desc(m, 32);
  std::vector<int32_t> packed(2);
  uint16_t scale = 0;
  REQUIRE(int4_pack_cpu(d, m.data(), packed.data(), &scale).ok());
  CHECK(bf16_to_f32(scale) == 1.f);
  CHECK(uint32_t(packed[0]) == 0xDCBA981Fu);  // nibbles 15, 1, 8, 9, 10, 11, 12, 13
  CHECK(packed[1] == 14);
  std::vector<float> out(9);
  REQUIRE(int4_unpack_cpu(d, packed.data(), &scale, out.data(), DType::kF32).ok());
  CHECK(out == m.f32);
}

TEST_CASE("zero groups use the minimum scale", "[quant][int4]") {
  Matrix m;
  m.rows = 2;
  m.cols = 40;
  m.f32.assign(80, 0.f);
  m.f32[79] = 1.f;  // row 1, second group (ragged: 8 elements)
  const Int4Desc d = int4_desc(m, 32);
  std::vector<int32_t> packed(size_t(2 * d.packed_cols()));
  std::vector<uint16_t> scale(4);
  REQUIRE(int4_pack_cpu(d, m.data(), packed.data(), scale.data()).ok());
  CHECK(scale[0] == f32_to_bf16(kInt4MinScale));
  CHECK(scale[2] == f32_to_bf16(kInt4MinScale));
  CHECK(scale[3] == f32_to_bf16(1.f / 7.f));
  CHECK(uint32_t(packed[0]) == 0x88888888u);
}

TEST_CASE("non-finite values: fake-quant propagates, pack refuses", "[quant][int4]") {
  Matrix m;
  m.rows = 2;
  m.cols = 64;
  m.f32.assign(128, 0.5f);
  m.f32[64 + 40] = std::numeric_limits<float>::quiet_NaN();
  m.f32[3] = std::numeric_limits<float>::infinity();
  const Int4Desc d = int4_desc(m, 32);
  std::vector<float> y(128);
  REQUIRE(int4_fake_quant_cpu(d, m.data(), y.data()).ok());
  for (int c = 0; c < 64; ++c) {
    INFO("column " << c);
    // An inf makes the scale inf and 0 * inf is NaN: the whole group is NaN, as in torch.
    CHECK(std::isnan(y[c]) == (c < 32));
    CHECK(std::isnan(y[64 + c]) == (c >= 32));
  }
  std::vector<int32_t> packed(16);
  std::vector<uint16_t> scale(4);
  const absl::Status s = int4_pack_cpu(d, m.data(), packed.data(), scale.data());
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()).find("row 0, column 3") != std::string::npos);
  m.f32[3] = 0.f;
  const absl::Status s2 = int4_pack_cpu(d, m.data(), packed.data(), scale.data());
  CHECK(std::string(s2.message()).find("row 1, column 40") != std::string::npos);
}

TEST_CASE("Int4Desc validates and prints itself", "[quant][int4]") {
  Int4Desc d;
  d.rows = 2;
  d.cols = 200;
  CHECK(d.validate().ok());
  CHECK(d.groups() == 2);
  CHECK(d.packed_cols() == 25);
  CHECK(d.to_string() == "Int4Desc{rows=2, cols=200, group_size=128, src=bfloat16}");
  Int4Desc bad = d;
  bad.group_size = 0;
  CHECK(std::string(bad.validate().message()).find("group_size") != std::string::npos);
  bad = d;
  bad.src_dtype = DType::kI32;
  CHECK(!bad.validate().ok());
  bad = d;
  bad.cols = -1;
  CHECK(!int4_fake_quant_cpu(bad, nullptr, nullptr).ok());
  std::vector<int32_t> packed(50);
  std::vector<uint16_t> scale(4), out(400);
  CHECK(!int4_unpack_cpu(d, packed.data(), scale.data(), out.data(), DType::kF16).ok());
}

TEST_CASE("INT4 knobs come from slime's environment variables", "[quant][int4][env]") {
  ::unsetenv("OPEN_TRAINING_INT4_GROUP_SIZE");
  ::unsetenv("OPEN_TRAINING_INT4_FAKE_QAT_FLAG");
  env_reset_cache_for_testing();
  CHECK(int4_group_size_from_env() == 128);
  CHECK(!int4_fake_qat_from_env());
  ::setenv("OPEN_TRAINING_INT4_GROUP_SIZE", "32", 1);
  ::setenv("OPEN_TRAINING_INT4_FAKE_QAT_FLAG", "1", 1);
  env_reset_cache_for_testing();
  CHECK(int4_group_size_from_env() == 32);
  CHECK(int4_fake_qat_from_env());
  ::unsetenv("OPEN_TRAINING_INT4_GROUP_SIZE");
  ::unsetenv("OPEN_TRAINING_INT4_FAKE_QAT_FLAG");
  env_reset_cache_for_testing();
}
