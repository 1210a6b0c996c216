// gemm_xcheck OUT_DIR: writes FP8 operands, their scales (our layouts) and BlockScaledGemm's
// output for a set of problems as raw files plus manifest.json, for tests/gpu/torch_xcheck.py to
// recompute with torch._scaled_mm on the same bytes. A tool: aborts on any error.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "core/cuda/device_runtime.h"
#include "core/random.h"
#include "core/status.h"
#include "nlohmann/json.hpp"
#include "quant/block_quant.h"
#include "quant/cuda/block_scaled_gemm.h"

namespace fp8rl {
namespace {

void write_file(const std::string& path, const void* data, size_t bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(data), std::streamsize(bytes));
  FP8RL_CHECK(f.good());
}

std::vector<float> random_matrix(int64_t rows, int64_t cols, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float mag = float(std::ldexp(1.0, int(rng.next_u64() % 9) - 4));
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] = float(rng.normal()) * mag;
  }
  return x;
}

struct Quantized {
  std::vector<uint8_t> q;
  std::vector<float> s;
};

Quantized quantize(int64_t rows, int64_t k, ScaleTile tile, int64_t ld, uint64_t seed) {
  const std::vector<float> x = random_matrix(rows, k, seed);
  QuantDesc d;
  d.rows = rows, d.cols = k, d.src_dtype = DType::kF32, d.scale_ld = ld;
  Quantized out;
  out.q.resize(size_t(rows * k));
  if (tile == ScaleTile::k1x128) {
    out.s.resize(size_t(d.col_tiles() * rows));
    FP8RL_CHECK_OK(quantize_1x128_cpu(d, x.data(), out.q.data(), out.s.data(), nullptr, nullptr));
  } else {
    out.s.assign(size_t(d.row_tiles() * d.block_scale_ld()), 0.f);
    FP8RL_CHECK_OK(quantize_128x128_cpu(d, x.data(), out.q.data(), out.s.data()));
  }
  return out;
}

template <typename T>
T* to_device(const std::vector<T>& v) {
  void* p = nullptr;
  FP8RL_CHECK(cudaMalloc(&p, v.size() * sizeof(T) + 16) == cudaSuccess);
  FP8RL_CHECK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  FP8RL_CHECK(cudaDeviceSynchronize() == cudaSuccess);  // the GEMM runs on a non-blocking stream
  return static_cast<T*>(p);
}

int run(const std::string& dir) {
  absl::StatusOr<DeviceRuntime*> rt = DeviceRuntime::get(0);
  FP8RL_CHECK_OK(rt.status());
  BlockScaledGemm gemm(*rt);
  struct Case {
    const char* name;
    int64_t m, n, k;
    ScaleTile at, bt;
    int64_t ld;  // 128x128 stride (0: compact)
  };
  using T = ScaleTile;
  const Case cases[] = {
      {"fprop_1x128_128x128", 512, 768, 1024, T::k1x128, T::k128x128, 0},
      {"fprop_qwen_like", 1024, 2560, 1024, T::k1x128, T::k128x128, 0},
      {"fprop_L5_padded", 256, 384, 640, T::k1x128, T::k128x128, 8},
      {"fprop_L5_compact", 256, 384, 640, T::k1x128, T::k128x128, 0},
      {"wgrad_1x128_1x128", 768, 512, 1024, T::k1x128, T::k1x128, 0},
      {"a2d_128x128_1x128", 384, 512, 512, T::k128x128, T::k1x128, 0},
  };
  nlohmann::json manifest = nlohmann::json::array();
  uint64_t seed = 1;
  for (const Case& c : cases) {
    GemmDesc d;
    d.m = c.m, d.n = c.n, d.k = c.k, d.a_tile = c.at, d.b_tile = c.bt;
    if (c.at == T::k128x128) d.a_scale_ld = c.ld;
    if (c.bt == T::k128x128) d.b_scale_ld = c.ld;
    const Quantized a = quantize(d.m, d.k, d.a_tile, d.a_scale_ld, seed++);
    const Quantized b = quantize(d.n, d.k, d.b_tile, d.b_scale_ld, seed++);
    uint8_t* da = to_device(a.q);
    uint8_t* db = to_device(b.q);
    float* dsa = to_device(a.s);
    float* dsb = to_device(b.s);
    void* dd = nullptr;
    FP8RL_CHECK(cudaMalloc(&dd, size_t(d.m * d.n) * 2) == cudaSuccess);
    FP8RL_CHECK_OK(gemm.run(d, da, dsa, db, dsb, dd));
    FP8RL_CHECK(cudaStreamSynchronize((*rt)->stream()) == cudaSuccess);
    std::vector<uint16_t> out(size_t(d.m * d.n));
    FP8RL_CHECK(cudaMemcpy(out.data(), dd, out.size() * 2, cudaMemcpyDeviceToHost) == cudaSuccess);
    const std::string base = dir + "/" + c.name;
    write_file(base + ".a.bin", a.q.data(), a.q.size());
    write_file(base + ".sa.bin", a.s.data(), a.s.size() * 4);
    write_file(base + ".b.bin", b.q.data(), b.q.size());
    write_file(base + ".sb.bin", b.s.data(), b.s.size() * 4);
    write_file(base + ".d.bin", out.data(), out.size() * 2);
    const int64_t L = ceil_div(d.k, 128);
    manifest.push_back({{"name", c.name},
                        {"m", d.m},
                        {"n", d.n},
                        {"k", d.k},
                        {"a_tile", c.at == T::k1x128 ? "1x128" : "128x128"},
                        {"b_tile", c.bt == T::k1x128 ? "1x128" : "128x128"},
                        {"a_scale_ld", d.a_scale_ld ? d.a_scale_ld : L},
                        {"b_scale_ld", d.b_scale_ld ? d.b_scale_ld : L},
                        {"desc", d.to_string()}});
    std::printf("gemm_xcheck: %s %s\n", c.name, d.to_string().c_str());
    for (void* p : {static_cast<void*>(da), static_cast<void*>(db), static_cast<void*>(dsa),
                    static_cast<void*>(dsb), dd})
      (void)cudaFree(p);
  }
  std::ofstream(dir + "/manifest.json") << manifest.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace fp8rl

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: gemm_xcheck OUT_DIR\n");
    return 2;
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 77;
  }
  return fp8rl::run(argv[1]);
}
