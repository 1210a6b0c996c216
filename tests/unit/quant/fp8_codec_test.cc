// E4M3 and E8M0 scalar codecs (core/float8.h): every code, ties, saturation, subnormals.
#include <cmath>
#include <limits>

#include "core/dtype.h"
#include "core/float8.h"
#include "tests/catch.h"

using namespace fp8rl;

namespace {
const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();
}  // namespace

TEST_CASE("every E4M3 code decodes and re-encodes to itself", "[fp8][e4m3]") {
  for (int code = 0; code < 256; ++code) {
    INFO("code 0x" << std::hex << code);
    const float v = e4m3_to_f32(uint8_t(code));
    if ((code & 0x7F) == 0x7F) {
      CHECK(std::isnan(v));
      CHECK(std::signbit(v) == bool(code & 0x80));
    } else {
      CHECK(std::isfinite(v));
    }
    // NaN codes come back as the NaN of the same sign, so every code is a fixed point.
    CHECK(f32_to_e4m3(v) == uint8_t(code));
  }
}

TEST_CASE("E4M3 decodes to the OCP values", "[fp8][e4m3]") {
  CHECK(e4m3_to_f32(0x00) == 0.f);
  CHECK(std::signbit(e4m3_to_f32(0x80)));
  CHECK(e4m3_to_f32(0x01) == std::ldexp(1.f, -9));  // smallest subnormal
  CHECK(e4m3_to_f32(0x07) == 7 * std::ldexp(1.f, -9));
  CHECK(e4m3_to_f32(0x08) == std::ldexp(1.f, -6));  // smallest normal
  CHECK(e4m3_to_f32(0x38) == 1.f);
  CHECK(e4m3_to_f32(0x7E) == 448.f);
  CHECK(e4m3_to_f32(0xFE) == -448.f);
  // Positive codes are strictly increasing.
  for (int code = 1; code < 0x7F; ++code)
    CHECK(e4m3_to_f32(uint8_t(code - 1)) < e4m3_to_f32(uint8_t(code)));
}

TEST_CASE("E4M3 rounds to nearest, ties to even", "[fp8][e4m3]") {
  for (int code = 0; code < 0x7E; ++code) {
    INFO("between codes " << code << " and " << code + 1);
    const float lo = e4m3_to_f32(uint8_t(code)), hi = e4m3_to_f32(uint8_t(code + 1));
    const float mid = (lo + hi) / 2;  // exact: fewer than 24 significant bits
    const uint8_t even = uint8_t(code % 2 == 0 ? code : code + 1);
    CHECK(f32_to_e4m3(mid) == even);
    CHECK(f32_to_e4m3(-mid) == uint8_t(even | 0x80));
    CHECK(f32_to_e4m3(std::nextafter(mid, 0.f)) == uint8_t(code));
    CHECK(f32_to_e4m3(std::nextafter(mid, kInf)) == uint8_t(code + 1));
  }
  CHECK(f32_to_e4m3(1.0625f) == f32_to_e4m3(1.f));    // tie -> even mantissa 000
  CHECK(f32_to_e4m3(1.1875f) == f32_to_e4m3(1.25f));  // tie -> even mantissa 010
}

TEST_CASE("E4M3 saturates to +-448 and keeps NaN", "[fp8][e4m3]") {
  for (float v : {448.f, 449.f, 463.99f, 464.f, 465.f, 480.f, 1e30f, 3.4e38f, kInf}) {
    INFO(v);
    CHECK(f32_to_e4m3(v) == 0x7E);
    CHECK(f32_to_e4m3(-v) == 0xFE);
  }
  CHECK(f32_to_e4m3(kNaN) == 0x7F);
  CHECK(f32_to_e4m3(-kNaN) == 0xFF);
  CHECK(f32_to_e4m3(f32_from_bits(0x7f800001u)) == 0x7F);  // signalling NaN
  CHECK(f32_to_e4m3(f32_from_bits(0xffffffffu)) == 0xFF);
  CHECK(f32_to_e4m3(416.f) == 0x7D);  // 416 is the code below 448: no saturation there
}

TEST_CASE("E4M3 subnormals", "[fp8][e4m3]") {
  const float u = std::ldexp(1.f, -9);  // subnormal step
  CHECK(f32_to_e4m3(0.f) == 0x00);
  CHECK(f32_to_e4m3(-0.f) == 0x80);
  CHECK(f32_to_e4m3(u) == 0x01);
  CHECK(f32_to_e4m3(u / 2) == 0x00);     // tie -> 0 (even)
  CHECK(f32_to_e4m3(-u / 2) == 0x80);    // keeps the sign
  CHECK(f32_to_e4m3(1.5f * u) == 0x02);  // tie between 1 and 2 -> 2
  CHECK(f32_to_e4m3(2.5f * u) == 0x02);  // tie between 2 and 3 -> 2
  CHECK(f32_to_e4m3(7.5f * u) == 0x08);  // tie between the largest subnormal and 2^-6
  CHECK(f32_to_e4m3(std::ldexp(1.f, -10) * 1.0001f) == 0x01);
  CHECK(f32_to_e4m3(std::numeric_limits<float>::denorm_min()) == 0x00);
  CHECK(f32_to_e4m3(std::ldexp(1.f, -7)) == 0x04);
}

TEST_CASE("every E8M0 code decodes to 2^(e-127) and re-encodes", "[fp8][e8m0]") {
  for (int code = 0; code < 255; ++code) {
    INFO("code " << code);
    const float v = e8m0_to_f32(uint8_t(code));
    CHECK(v == std::ldexp(1.f, code - 127));
    CHECK(f32_to_e8m0(v) == uint8_t(code));
  }
  CHECK(std::isnan(e8m0_to_f32(0xFF)));
}

TEST_CASE("E8M0 encode rounds to the nearest power of two, ties away", "[fp8][e8m0]") {
  CHECK(f32_to_e8m0(1.f) == 127);
  CHECK(f32_to_e8m0(1.5f) == 128);  // half an exponent step rounds up
  CHECK(f32_to_e8m0(std::nextafter(1.5f, 0.f)) == 127);
  CHECK(f32_to_e8m0(3.f) == 129);
  CHECK(f32_to_e8m0(0.75f) == 127);
  CHECK(f32_to_e8m0(std::ldexp(1.f, 127)) == 254);
  CHECK(f32_to_e8m0(std::ldexp(1.5f, 127)) == kE8M0NaN);  // rounds above 2^127
  CHECK(f32_to_e8m0(std::ldexp(1.f, -127)) == 0);
  CHECK(f32_to_e8m0(std::ldexp(1.f, -130)) == 0);  // below 2^-127 clamps to 0x00
  CHECK(f32_to_e8m0(std::ldexp(1.5f, -127)) == 1);
  CHECK(f32_to_e8m0(std::ldexp(1.25f, -127)) == 1);  // ml_dtypes: any subnormal above 2^-127
  for (float v : {0.f, -0.f, -1.f, kInf, -kInf, kNaN}) {
    INFO(v);
    CHECK(f32_to_e8m0(v) == kE8M0NaN);
  }
}
