// Tensor allocation, views and conversions on the CPU.
#include "core/tensor.h"
#include "tests/catch.h"

using namespace fp8rl;

TEST_CASE("tensor basics", "[tensor]") {
  Tensor t = Tensor::zeros(DType::kBF16, {3, 5});
  CHECK(t.numel() == 15);
  CHECK(t.nbytes() == 30);
  CHECK(t.dim(-1) == 5);
  CHECK(t.to_string() == "bfloat16[3, 5] cpu");
  t.data<uint16_t>()[7] = f32_to_bf16(2.5f);
  Tensor c = t.clone();
  t.data<uint16_t>()[7] = 0;
  CHECK(c.item_as_float(7) == 2.5f);
  auto r = c.reshape({15});
  REQUIRE(r.ok());
  CHECK(r->item_as_float(7) == 2.5f);
  CHECK(!c.reshape({4, 4}).ok());
  auto f = c.to_f32();
  REQUIRE(f.ok());
  CHECK(f->data<float>()[7] == 2.5f);
}

TEST_CASE("zero-size and negative shapes", "[tensor]") {
  Tensor t = Tensor::empty(DType::kF32, {0, 128});
  CHECK(t.numel() == 0);
  CHECK(!Tensor::empty_on(DType::kF32, {-1, 2}, Device::cpu()).ok());
}
