// DType names and the float32 <-> bfloat16 / float16 conversions.
#include <cmath>

#include "core/dtype.h"
#include "tests/catch.h"

using namespace fp8rl;

TEST_CASE("safetensors dtype names round-trip", "[dtype]") {
  for (DType t : kAllDTypes) {
    auto back = dtype_from_safetensors_name(safetensors_dtype_name(t));
    REQUIRE(back.ok());
    CHECK(*back == t);
  }
  CHECK(!dtype_from_safetensors_name("F128").ok());
  CHECK(dtype_size(DType::kBF16) == 2);
  CHECK(dtype_size(DType::kI64) == 8);
}

TEST_CASE("bf16 rounding is nearest-even and keeps NaN", "[dtype]") {
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1 + 2^-7: ties to even (1.0).
  CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);
  // 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6: ties to even (1+2^-6).
  CHECK(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  CHECK(f32_to_bf16(INFINITY) == 0x7f80);
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = bf16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    REQUIRE(f32_to_bf16(f) == h);
  }
}

TEST_CASE("f16 conversions are exact on every half value", "[dtype]") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) {
      CHECK(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    REQUIRE(f32_to_f16(f) == h);
  }
  CHECK(f16_to_f32(0x3c00) == 1.0f);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(f32_to_f16(65520.0f) == 0x7c00);      // rounds up to inf
  CHECK(f32_to_f16(65519.0f) == 0x7bff);      // 65504
  CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0);  // halfway to the smallest subnormal: even (0)
}
