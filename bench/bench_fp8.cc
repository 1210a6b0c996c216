// bench_fp8 quant|gemm|all: the quant/cuda kernels at >= 64 MiB against a device-to-device copy,
// and the block-scaled FP8 GEMMs (fprop, dgrad, wgrad of 8192^3 and Qwen3 linears at 16k tokens)
// against the BF16 cuBLASLt GEMM of the same shape, all measured in the same run. Inputs are random
// (never zeros), rotate between two sets (each larger than L2), CUDA-event median of many steps.
// Prints a table and writes JSON. A tool: aborts on CUDA errors.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "bench/bench_fill.h"
#include "bench/bench_harness.h"
#include "core/cuda/cuda_check.h"
#include "core/cuda/device_runtime.h"
#include "core/status.h"
#include "quant/block_quant.h"
#include "quant/cuda/amax_cuda.h"
#include "quant/cuda/block_quant_cuda.h"
#include "quant/cuda/block_scaled_gemm.h"
#include "quant/cuda/int4_cuda.h"
#include "quant/cuda/quant_tuning.h"
#include "quant/cuda/weight_export_cuda.h"

namespace fp8rl::bench {
namespace {

#define BENCH_CUDA(expr) FP8RL_CHECK((expr) == cudaSuccess)

// A device allocation owned by the benchmark.
class Mem {
 public:
  explicit Mem(size_t bytes) : bytes_(bytes) { BENCH_CUDA(cudaMalloc(&p_, bytes ? bytes : 16)); }
  ~Mem() { (void)cudaFree(p_); }
  Mem(const Mem&) = delete;
  Mem& operator=(const Mem&) = delete;
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(p_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

struct Options {
  std::string mode = "all";
  std::string json = "bench_fp8.json";
  int iters = 30;
  int warmup = 5;
  bool quick = false;  // small shapes: a smoke test of the harness, not a measurement
  std::string only;    // run only rows whose name contains this (profiling one kernel)
};

double gbs(double bytes, double ms) { return bytes / ms / 1e6; }

// --- quant ----------------------------------------------------------------------------------

void run_quant(DeviceRuntime& rt, Report& rep, const Options& o) {
  const int64_t R = o.quick ? 1024 : 8192, C = o.quick ? 1024 : 8192, n = R * C;
  const std::string shape = absl::StrCat(R, "x", C);
  cudaStream_t s = rt.stream();
  constexpr int kSets = 2;  // each set is >= 64 MiB, larger than the 50 MB L2
  std::vector<std::unique_ptr<Mem>> xb, xf, q, sc, qt, st, out, i4p, i4s, yb;
  const int64_t ld4 = round_up(ceil_div(C, 128), 4);
  for (int i = 0; i < kSets; ++i) {
    xb.push_back(std::make_unique<Mem>(n * 2));
    xf.push_back(std::make_unique<Mem>(n * 4));
    q.push_back(std::make_unique<Mem>(n));
    sc.push_back(std::make_unique<Mem>(std::max(ceil_div(C, 128) * R, ceil_div(R, 128) * ld4) * 4));
    qt.push_back(std::make_unique<Mem>(n));
    st.push_back(std::make_unique<Mem>(ceil_div(R, 128) * C * 4));
    out.push_back(std::make_unique<Mem>(n * 4));
    i4p.push_back(std::make_unique<Mem>(n / 2 + 16));
    i4s.push_back(std::make_unique<Mem>(ceil_div(C, 32) * R * 2));
    yb.push_back(std::make_unique<Mem>(n * 2));
    BENCH_CUDA(fill_random(xb[i]->get(), uint64_t(n), true, 11 + i, 1.f, s));
    BENCH_CUDA(fill_random(xf[i]->get(), uint64_t(n), false, 21 + i, 1.f, s));
  }
  // FP8 sources for dequantize / export: 128x128-quantized copies of xb.
  std::vector<std::unique_ptr<Mem>> q128, s128, q1, s1;
  QuantDesc blk;
  blk.rows = R, blk.cols = C, blk.scale_ld = ld4;
  QuantDesc row;
  row.rows = R, row.cols = C;
  for (int i = 0; i < kSets; ++i) {
    q128.push_back(std::make_unique<Mem>(n));
    s128.push_back(std::make_unique<Mem>(ceil_div(R, 128) * ld4 * 4));
    q1.push_back(std::make_unique<Mem>(n));
    s1.push_back(std::make_unique<Mem>(ceil_div(C, 128) * R * 4));
    FP8RL_CHECK_OK(quantize_128x128_cuda(blk, xb[i]->get(), q128[i]->get<uint8_t>(),
                                         s128[i]->get<float>(), s));
    FP8RL_CHECK_OK(quantize_1x128_cuda(row, xb[i]->get(), q1[i]->get<uint8_t>(),
                                       s1[i]->get<float>(), nullptr, nullptr, s));
  }
  Mem flag(8);  // first non-finite index of the async INT4 exports (the inputs are finite)
  BENCH_CUDA(cudaMemsetAsync(flag.get(), 0xff, 8, s));
  BENCH_CUDA(cudaStreamSynchronize(s));

  // Baseline: cudaMemcpyAsync D2D of the bf16 tensor, bytes read + written. Every kernel is timed
  // in rounds alternating with the copy, and compared with the copy's median of those rounds.
  auto copy_step = [&](int i) {
    FP8RL_CUDA_CHECK(cudaMemcpyAsync(yb[i % kSets]->get(), xb[i % kSets]->get(), size_t(n * 2),
                                     cudaMemcpyDeviceToDevice, s));
    return absl::OkStatus();
  };
  const double copy_bytes = 4.0 * double(n);
  auto add_one = [&](const std::string& name, const std::string& dtype, double bytes, double target,
                     const std::function<absl::Status(int)>& step) {
    if (!o.only.empty() && name.find(o.only) == std::string::npos) return;
    absl::StatusOr<std::pair<Timing, Timing>> t =
        time_interleaved(s, o.warmup, o.iters, 3, copy_step, step);
    FP8RL_CHECK_OK(t.status());
    const Timing& c = t->first;
    const Timing& k = t->second;
    rep.add(Row{"quant",
                name,
                shape + " " + dtype,
                "GB/s",
                k.median_ms,
                gbs(bytes, k.median_ms),
                "D2D copy",
                gbs(copy_bytes, c.median_ms),
                target,
                {{"bytes", bytes},
                 {"min_ms", k.min_ms},
                 {"max_ms", k.max_ms},
                 {"copy_ms", c.median_ms},
                 {"copy_min_ms", c.min_ms},
                 {"copy_max_ms", c.max_ms}}});
  };
  auto add = [&](const std::string& name, const std::string& dtype, double bytes,
                 const std::function<absl::Status(int)>& step) {
    add_one(name, dtype, bytes, 0.85, step);
  };
  // Tile kernels: the shipped grid policy (persistent, target 0.85) and the other one, for the
  // record.
  auto add_tile = [&](const std::string& name, const std::string& dtype, double bytes,
                      const std::function<absl::Status(int)>& step) {
    add_one(name, dtype, bytes, 0.85, step);  // the shipped (auto) policy
    for (auto [policy, tag] : {std::pair{TilePolicy::kPersistent, " [persistent]"},
                               std::pair{TilePolicy::kPerTile, " [1 tile/CTA]"}}) {
      quant_tuning().tile_policy.store(policy);
      add_one(name + tag, dtype, bytes, 0, step);
    }
    quant_tuning().tile_policy.store(TilePolicy::kAuto);
  };
  {
    const Timing copy = [&] {
      absl::StatusOr<Timing> t = time_steps(s, o.warmup, o.iters, copy_step);
      FP8RL_CHECK_OK(t.status());
      return *t;
    }();
    const double copy_gbs = gbs(copy_bytes, copy.median_ms);
    rep.add(Row{"quant",
                "D2D copy (baseline)",
                shape + " bf16",
                "GB/s",
                copy.median_ms,
                copy_gbs,
                "D2D copy",
                copy_gbs,
                0,
                {}});
  }

  const double N = double(n), tiles = double(n) / 128.0;

  add_tile("quantize_1x128 rowwise", "bf16", 2 * N + N + tiles * 4, [&](int i) {
    return quantize_1x128_cuda(row, xb[i % kSets]->get(), q[i % kSets]->get<uint8_t>(),
                               sc[i % kSets]->get<float>(), nullptr, nullptr, s);
  });
  QuantDesc both = row;
  both.columnwise = true;
  add_tile("quantize_1x128 row+col", "bf16", 2 * N + 2 * N + 2 * tiles * 4, [&](int i) {
    return quantize_1x128_cuda(both, xb[i % kSets]->get(), q[i % kSets]->get<uint8_t>(),
                               sc[i % kSets]->get<float>(), qt[i % kSets]->get<uint8_t>(),
                               st[i % kSets]->get<float>(), s);
  });
  QuantDesc rowf = row;
  rowf.src_dtype = DType::kF32;
  add_tile("quantize_1x128 rowwise", "f32", 4 * N + N + tiles * 4, [&](int i) {
    return quantize_1x128_cuda(rowf, xf[i % kSets]->get(), q[i % kSets]->get<uint8_t>(),
                               sc[i % kSets]->get<float>(), nullptr, nullptr, s);
  });
  add_tile("quantize_128x128", "bf16", 2 * N + N, [&](int i) {
    return quantize_128x128_cuda(blk, xb[i % kSets]->get(), q[i % kSets]->get<uint8_t>(),
                                 sc[i % kSets]->get<float>(), s);
  });
  add("dequantize_1x128 -> bf16", "fp8", N + tiles * 4 + 2 * N, [&](int i) {
    return dequantize_1x128_cuda(row, q1[i % kSets]->get<uint8_t>(), s1[i % kSets]->get<float>(),
                                 yb[i % kSets]->get(), DType::kBF16, s);
  });
  add("dequantize_128x128 -> bf16", "fp8", N + 2 * N, [&](int i) {
    return dequantize_128x128_cuda(blk, q128[i % kSets]->get<uint8_t>(),
                                   s128[i % kSets]->get<float>(), yb[i % kSets]->get(),
                                   DType::kBF16, s);
  });
  auto export_desc = [&](ExportSource src, ExportTarget tgt) {
    WeightExportDesc d;
    d.rows = R, d.cols = C, d.source = src, d.target = tgt, d.src_scale_ld = ld4,
    d.dst_scale_ld = ld4;
    return d;
  };
  const std::pair<ExportSource, const char*> sources[] = {
      {ExportSource::kF32, "f32"}, {ExportSource::kBF16, "bf16"}, {ExportSource::kFP8Block, "fp8"}};
  for (const auto& [src, name] : sources) {
    const double in_bytes = src == ExportSource::kF32    ? 4 * N
                            : src == ExportSource::kBF16 ? 2 * N
                                                         : N;
    const WeightExportDesc d8 = export_desc(src, ExportTarget::kFP8Block);
    auto src_ptr = [&, src = src](int i) -> const void* {
      return src == ExportSource::kF32    ? xf[i % kSets]->get()
             : src == ExportSource::kBF16 ? xb[i % kSets]->get()
                                          : q128[i % kSets]->get();
    };
    add_tile("export -> fp8 128x128", name, in_bytes + N, [&, d8](int i) {
      return export_weight_fp8_cuda(d8, src_ptr(i), s128[i % kSets]->get<float>(),
                                    q[i % kSets]->get<uint8_t>(), sc[i % kSets]->get<float>(), s);
    });
    const WeightExportDesc d4 = export_desc(src, ExportTarget::kInt4Packed);
    add("export -> int4 packed", name, in_bytes + N / 2 + tiles * 2, [&, d4](int i) {
      return export_weight_int4_cuda_async(
          d4, src_ptr(i), s128[i % kSets]->get<float>(), i4p[i % kSets]->get<int32_t>(),
          i4s[i % kSets]->get<uint16_t>(), flag.get<unsigned long long>(), s);
    });
    if (src == ExportSource::kBF16)  // with the per-call synchronisation that reports NaN/inf
      add_one("export -> int4 packed (sync)", name, in_bytes + N / 2 + tiles * 2, 0,
              [&, d4](int i) {
                return export_weight_int4_cuda(d4, src_ptr(i), s128[i % kSets]->get<float>(),
                                               i4p[i % kSets]->get<int32_t>(),
                                               i4s[i % kSets]->get<uint16_t>(), s);
              });
  }
  {
    // FP8 -> FP8 with FP32 scales (source and target): every block takes the general
    // dequantize -> bf16 -> requantize path. With power-of-2 scales (the default, the rows above)
    // a block whose new scale is 1 / its source scale is its source bytes (the usual case).
    QuantDesc blkf = blk;
    blkf.scale.power_2 = false;
    std::vector<std::unique_ptr<Mem>> qf, sf;
    for (int i = 0; i < kSets; ++i) {
      qf.push_back(std::make_unique<Mem>(n));
      sf.push_back(std::make_unique<Mem>(ceil_div(R, 128) * ld4 * 4));
      FP8RL_CHECK_OK(
          quantize_128x128_cuda(blkf, xb[i]->get(), qf[i]->get<uint8_t>(), sf[i]->get<float>(), s));
    }
    WeightExportDesc d8 = export_desc(ExportSource::kFP8Block, ExportTarget::kFP8Block);
    d8.scale.power_2 = false;
    add_one("export -> fp8 128x128 [fp32 scales]", "fp8", 2 * N, 0, [&, d8](int i) {
      return export_weight_fp8_cuda(d8, qf[i % kSets]->get(), sf[i % kSets]->get<float>(),
                                    q[i % kSets]->get<uint8_t>(), sc[i % kSets]->get<float>(), s);
    });
  }
  Int4Desc i4;
  i4.rows = R, i4.cols = C;
  add("int4_pack g128 (async)", "bf16", 2 * N + N / 2 + tiles * 2, [&](int i) {
    return int4_pack_cuda_async(i4, xb[i % kSets]->get(), i4p[i % kSets]->get<int32_t>(),
                                i4s[i % kSets]->get<uint16_t>(), flag.get<unsigned long long>(), s);
  });
  add("int4_fake_quant g128", "bf16", 4 * N, [&](int i) {
    return int4_fake_quant_cuda(i4, xb[i % kSets]->get(), yb[i % kSets]->get(), s);
  });
  add("tensor_amax", "bf16", 2 * N, [&](int i) {
    return tensor_amax_cuda(DType::kBF16, xb[i % kSets]->get(), n, sc[i % kSets]->get<float>(), s);
  });
  add("transpose_128x128", "fp8", 2 * N, [&](int i) {
    return transpose_128x128_cuda(blk, q128[i % kSets]->get<uint8_t>(),
                                  s128[i % kSets]->get<float>(), qt[i % kSets]->get<uint8_t>(),
                                  st[i % kSets]->get<float>(), s);
  });
}

// --- gemm -----------------------------------------------------------------------------------

struct Linear {
  const char* name;
  int64_t M, N, K;  // tokens, out_features, in_features
};

// One GEMM problem (m, n, k) in both precisions, two input sets each.
void bench_problem(DeviceRuntime& rt, Report& rep, const Options& o, const std::string& label,
                   int64_t m, int64_t n, int64_t k, ScaleTile bt, double target) {
  if (!o.only.empty() && label.find(o.only) == std::string::npos) return;
  cudaStream_t s = rt.stream();
  constexpr int kSets = 2;
  const int64_t L = ceil_div(k, 128), L4 = round_up(L, 4);
  std::vector<std::unique_ptr<Mem>> a16, b16, aq, as, bq, bs, d;
  for (int i = 0; i < kSets; ++i) {
    a16.push_back(std::make_unique<Mem>(m * k * 2));
    b16.push_back(std::make_unique<Mem>(n * k * 2));
    aq.push_back(std::make_unique<Mem>(m * k));
    bq.push_back(std::make_unique<Mem>(n * k));
    as.push_back(std::make_unique<Mem>(L * m * 4));
    bs.push_back(std::make_unique<Mem>(std::max(L * n, ceil_div(n, 128) * L4) * 4));
    d.push_back(std::make_unique<Mem>(m * n * 2));
    BENCH_CUDA(fill_random(a16[i]->get(), uint64_t(m * k), true, 100 + i, 1.f, s));
    BENCH_CUDA(fill_random(b16[i]->get(), uint64_t(n * k), true, 200 + i, 0.05f, s));
    QuantDesc qa;
    qa.rows = m, qa.cols = k;
    FP8RL_CHECK_OK(quantize_1x128_cuda(qa, a16[i]->get(), aq[i]->get<uint8_t>(),
                                       as[i]->get<float>(), nullptr, nullptr, s));
    QuantDesc qb;
    qb.rows = n, qb.cols = k;
    if (bt == ScaleTile::k1x128) {
      FP8RL_CHECK_OK(quantize_1x128_cuda(qb, b16[i]->get(), bq[i]->get<uint8_t>(),
                                         bs[i]->get<float>(), nullptr, nullptr, s));
    } else {
      qb.scale_ld = L4;
      FP8RL_CHECK_OK(
          quantize_128x128_cuda(qb, b16[i]->get(), bq[i]->get<uint8_t>(), bs[i]->get<float>(), s));
    }
  }
  BENCH_CUDA(cudaStreamSynchronize(s));
  const double flops = 2.0 * double(m) * double(n) * double(k);
  auto tflops = [&](double ms) { return flops / ms / 1e9; };
  const std::string shape = absl::StrCat(m, "x", n, "x", k);

  Bf16Gemm bf16(&rt);
  Bf16GemmDesc bd;
  bd.m = m, bd.n = n, bd.k = k;
  auto bf16_step = [&](int i) {
    return bf16.run(bd, a16[i % kSets]->get<uint16_t>(), b16[i % kSets]->get<uint16_t>(),
                    d[i % kSets]->get(), s);
  };
  BlockScaledGemm fp8(&rt);
  GemmDesc gd;
  gd.m = m, gd.n = n, gd.k = k, gd.a_tile = ScaleTile::k1x128, gd.b_tile = bt;
  gd.b_scale_ld = bt == ScaleTile::k128x128 ? L4 : 0;
  auto fp8_step = [&](int i) {
    return fp8.run(gd, aq[i % kSets]->get<uint8_t>(), as[i % kSets]->get<float>(),
                   bq[i % kSets]->get<uint8_t>(), bs[i % kSets]->get<float>(), d[i % kSets]->get(),
                   s);
  };
  // The heuristic's first choices, then both autotuned and timed in alternating rounds (the FP8
  // and BF16 GEMMs heat the chip differently; alternating gives both the same clocks).
  absl::StatusOr<std::pair<Timing, Timing>> heur =
      time_interleaved(s, o.warmup, o.iters, 2, bf16_step, fp8_step);
  FP8RL_CHECK_OK(heur.status());
  absl::StatusOr<GemmAlgoInfo> bf16_algo =
      bf16.autotune(bd, a16[0]->get<uint16_t>(), b16[0]->get<uint16_t>(), d[0]->get(), s);
  FP8RL_CHECK_OK(bf16_algo.status());
  absl::StatusOr<GemmAlgoInfo> fp8_algo =
      fp8.autotune(gd, aq[0]->get<uint8_t>(), as[0]->get<float>(), bq[0]->get<uint8_t>(),
                   bs[0]->get<float>(), d[0]->get(), s);
  FP8RL_CHECK_OK(fp8_algo.status());
  absl::StatusOr<std::pair<Timing, Timing>> tuned =
      time_interleaved(s, o.warmup, o.iters, 4, bf16_step, fp8_step);
  FP8RL_CHECK_OK(tuned.status());
  const Timing bf16_h = heur->first, fp8_h = heur->second, bf16_t = tuned->first,
               fp8_t = tuned->second;

  const std::string tiles = bt == ScaleTile::k128x128 ? "1x128.128x128" : "1x128.1x128";
  rep.add(Row{"gemm",
              label + " bf16 (baseline)",
              shape,
              "TFLOP/s",
              bf16_t.median_ms,
              tflops(bf16_t.median_ms),
              "bf16 tuned",
              tflops(bf16_t.median_ms),
              0,
              {{"heuristic_ms", bf16_h.median_ms},
               {"min_ms", bf16_t.min_ms},
               {"max_ms", bf16_t.max_ms},
               {"algo", bf16_algo->to_string()}}});
  rep.add(Row{"gemm",
              label + " fp8 " + tiles,
              shape,
              "TFLOP/s",
              fp8_t.median_ms,
              tflops(fp8_t.median_ms),
              "bf16 tuned",
              tflops(bf16_t.median_ms),
              target,
              {{"heuristic_ms", fp8_h.median_ms},
               {"min_ms", fp8_t.min_ms},
               {"max_ms", fp8_t.max_ms},
               {"heuristic_tflops", tflops(fp8_h.median_ms)},
               {"heuristic_ratio_vs_bf16_heuristic", bf16_h.median_ms / fp8_h.median_ms},
               {"algo", fp8_algo->to_string()},
               {"bf16_algo", bf16_algo->to_string()}}});
}

void run_gemm(DeviceRuntime& rt, Report& rep, const Options& o) {
  const Linear big[] = {{"8192^3", 8192, 8192, 8192},
                        {"qwen 9728x2560", 16384, 9728, 2560},
                        {"qwen 2560x9728", 16384, 2560, 9728},
                        {"qwen 6144x4096", 16384, 6144, 4096},
                        {"qwen 4096x12288", 16384, 4096, 12288}};
  const Linear small[] = {{"smoke 1024", 1024, 1024, 1024}};
  const Linear* list = o.quick ? small : big;
  const int count = o.quick ? 1 : 5;
  for (int i = 0; i < count; ++i) {
    const Linear& l = list[i];
    const bool cube = l.M == l.N && l.N == l.K;
    const double fprop_target = o.quick ? 0 : (cube ? 1.55 : 1.4);
    // fprop Y = X W^T; dgrad dX = dY W (B = W^T [K, N], 128x128); wgrad dW = dY^T X (1x128 along
    // M).
    bench_problem(rt, rep, o, absl::StrCat(l.name, " fprop"), l.M, l.N, l.K, ScaleTile::k128x128,
                  fprop_target);
    if (!cube)
      bench_problem(rt, rep, o, absl::StrCat(l.name, " dgrad"), l.M, l.K, l.N, ScaleTile::k128x128,
                    o.quick ? 0 : 1.4);
    bench_problem(rt, rep, o, absl::StrCat(l.name, " wgrad"), l.N, l.K, l.M, ScaleTile::k1x128,
                  o.quick ? 0 : 1.2);
  }
}

}  // namespace
}  // namespace fp8rl::bench

int main(int argc, char** argv) {
  using namespace fp8rl::bench;
  Options o;
  CLI::App app{"fp8rl benchmarks: quant kernels vs D2D copy, block-scaled FP8 GEMMs vs BF16"};
  app.add_option("mode", o.mode, "quant, gemm or all")
      ->check(CLI::IsMember({"quant", "gemm", "all"}));
  app.add_option("--json", o.json, "where to write the JSON results");
  app.add_option("--iters", o.iters, "timed steps per measurement (median reported)");
  app.add_option("--warmup", o.warmup, "untimed steps first");
  app.add_flag("--quick", o.quick, "small shapes: a smoke test, not a measurement");
  app.add_option("--only", o.only, "run only the rows whose name contains this");
  CLI11_PARSE(app, argc, argv);
  Report rep;
  fp8rl::DeviceRuntime* rt = open_device("bench_fp8", rep);
  if (rt == nullptr) return 77;
  rep.set_meta("iters", o.iters);
  rep.set_meta("warmup", o.warmup);
  rep.set_meta("quick", o.quick);
  if (o.mode == "quant" || o.mode == "all") run_quant(*rt, rep, o);
  if (o.mode == "gemm" || o.mode == "all") run_gemm(*rt, rep, o);
  FP8RL_CHECK_OK(rep.write_json(o.json));
  rep.print_table(stdout);
  int missed = 0;
  for (const Row& r : rep.rows()) missed += r.meets_target() ? 0 : 1;
  std::printf("bench_fp8: %zu rows, %d below target, JSON in %s\n", rep.rows().size(), missed,
              o.json.c_str());
  return 0;
}
