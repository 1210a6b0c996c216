// The device scalar rules of quant/cuda/device_numerics.cuh against the CPU codecs: the hardware
// E4M3 encoder (+ NaN sign fix-up) over all 2^32 float32 inputs, the hardware bf16 rounding over
// all 2^32 inputs, the hardware E4M3 decoder over all 256 codes, and the x86 NaN rules against
// what this (x86-64) host computes.
#include <cmath>
#include <cstdio>
#include <vector>

#include "core/dtype.h"
#include "core/float8.h"
#include "quant/cuda/device_numerics.cuh"
#include "tests/catch.h"

namespace fp8rl {
namespace {

using namespace cuda_detail;

struct Mismatch {
  unsigned long long count;
  unsigned int first;  // smallest input bits that differ
};

// core/dtype.h f32_to_bf16, the host reference, written for both sides.
__host__ __device__ uint32_t ref_bf16(uint32_t u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) | 0x0040u) & 0xffffu;
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}

__global__ void exhaustive_kernel(Mismatch* e4m3_lo, Mismatch* e4m3_hi, Mismatch* e4m3_scaled,
                                  Mismatch* bf16) {
  const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
  for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (1ull << 32);
       i += stride) {
    const uint32_t u = uint32_t(i);
    const float f = __uint_as_float(u);
    const uint32_t want = f32_to_e4m3(f);  // core/float8.h, the CPU codec
    if ((e4m3x2(f, 0.f) & 0xffu) != want) {
      atomicAdd(&e4m3_lo->count, 1ull);
      atomicMin(&e4m3_lo->first, u);
    }
    if ((e4m3x2(0.f, f) >> 8) != want) {
      atomicAdd(&e4m3_hi->count, 1ull);
      atomicMin(&e4m3_hi->first, u);
    }
    // scale 1: x * 1 == x for every non-NaN x (subnormals kept), so the encoder must agree too.
    if ((e4m3x2_scaled(f, 0.f, 1.0f, true) & 0xffu) != want) {
      atomicAdd(&e4m3_scaled->count, 1ull);
      atomicMin(&e4m3_scaled->first, u);
    }
    // -f would be an arithmetic negation, which canonicalises NaNs on the GPU: flip the bit.
    if (!is_nan(f) && (e4m3x2_scaled(f, 0.f, 1.0f, false) & 0xffu) != want) {
      atomicAdd(&e4m3_scaled->count, 1ull);
      atomicMin(&e4m3_scaled->first, u);
    }
    const uint32_t b = bf16x2_bits(f, __uint_as_float(u ^ 0x80000000u));
    if ((b & 0xffffu) != ref_bf16(u) || (b >> 16) != ref_bf16(u ^ 0x80000000u) ||
        f32_to_bf16_bits(f) != ref_bf16(u)) {
      atomicAdd(&bf16->count, 1ull);
      atomicMin(&bf16->first, u);
    }
  }
}

__global__ void decode_kernel(uint32_t* out) {  // 256 codes -> f32 bits via the hardware path
  const uint32_t b = threadIdx.x;
  const float2 f = e4m3x2_to_f32x2(b | (b << 8));
  out[b] = __float_as_uint(f.x);
  out[256 + b] = __float_as_uint(f.y);
}

__global__ void nan_rules_kernel(const float* a, const float* b, int n, uint32_t* mul,
                                 uint32_t* div) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  mul[i] = __float_as_uint(mul_x86(a[i], b[i]));
  div[i] = __float_as_uint(div_x86(a[i], b[i]));
}

#define CK(expr) REQUIRE((expr) == cudaSuccess)

TEST_CASE("hardware E4M3 encode and bf16 rounding equal the CPU codecs for all 2^32 inputs",
          "[numerics][exhaustive]") {
  Mismatch* m = nullptr;
  CK(cudaMallocManaged(&m, 4 * sizeof(Mismatch)));
  for (int i = 0; i < 4; ++i) m[i] = {0, 0xffffffffu};
  exhaustive_kernel<<<132 * 16, 256>>>(m, m + 1, m + 2, m + 3);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  const char* names[] = {"e4m3x2 low byte", "e4m3x2 high byte", "e4m3x2_scaled(scale=1)", "bf16x2"};
  for (int i = 0; i < 4; ++i) {
    INFO(names[i] << ": " << m[i].count << " mismatches, first input bits 0x" << std::hex
                  << m[i].first);
    CHECK(m[i].count == 0);
  }
  CK(cudaFree(m));
}

TEST_CASE("the E4M3 decoder equals e4m3_to_f32 for all 256 codes (NaN codes: +-480)",
          "[numerics]") {
  uint32_t* out = nullptr;
  CK(cudaMallocManaged(&out, 512 * sizeof(uint32_t)));
  decode_kernel<<<1, 256>>>(out);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  for (int b = 0; b < 256; ++b) {
    const float want = e4m3_to_f32(uint8_t(b));
    for (int h = 0; h < 2; ++h) {
      const float got = f32_from_bits(out[h * 256 + b]);
      INFO("code 0x" << std::hex << b << " half " << h);
      if (std::isnan(want)) {  // documented placeholder; callers check the byte
        CHECK(got == ((b & 0x80) ? -480.f : 480.f));
      } else {
        CHECK(f32_bits(got) == f32_bits(want));
      }
    }
  }
  CK(cudaFree(out));
}

TEST_CASE("mul_x86/div_x86 give the bits this x86 host computes", "[numerics]") {
  const float specials[] = {0.f,
                            -0.f,
                            1.f,
                            -3.5f,
                            1e-40f,
                            448.f,
                            INFINITY,
                            -INFINITY,
                            f32_from_bits(0x7fc00000u),
                            f32_from_bits(0xffc00000u),
                            f32_from_bits(0x7fa00001u),
                            f32_from_bits(0xff812345u),
                            f32_from_bits(0x7f800001u)};
  std::vector<float> a, b;
  for (float x : specials)
    for (float y : specials) a.push_back(x), b.push_back(y);
  const int n = int(a.size());
  float *da, *db;
  uint32_t *dm, *dd;
  CK(cudaMallocManaged(&da, n * 4));
  CK(cudaMallocManaged(&db, n * 4));
  CK(cudaMallocManaged(&dm, n * 4));
  CK(cudaMallocManaged(&dd, n * 4));
  for (int i = 0; i < n; ++i) da[i] = a[i], db[i] = b[i];
  nan_rules_kernel<<<(n + 127) / 128, 128>>>(da, db, n, dm, dd);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  for (int i = 0; i < n; ++i) {
    volatile float x = a[i], y = b[i];
    const float pm = x * y, pd = x / y;
    INFO("a=0x" << std::hex << f32_bits(a[i]) << " b=0x" << f32_bits(b[i]));
    CHECK(dm[i] == f32_bits(pm));
    CHECK(dd[i] == f32_bits(pd));
  }
  CK(cudaFree(da));
  CK(cudaFree(db));
  CK(cudaFree(dm));
  CK(cudaFree(dd));
}

}  // namespace
}  // namespace fp8rl
