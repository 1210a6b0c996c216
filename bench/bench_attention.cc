// bench_attention: the flash attention kernels (model/cuda/attention.h) at the model benchmark's
// shapes (Qwen3-0.6B/1.7B: 16 q heads, 8 kv heads, head_dim 128, 4096-token sequences) against
// the cuBLASLt BF16 GEMM (quant/cuda/block_scaled_gemm.h) of the same FLOP count, timed in
// alternating rounds of the same run. Causal FLOPs: forward 4 * sum(L^2) / 2 * q_heads *
// head_dim, backward 2.5x that. Inputs are random, rotate between two sets (each larger than L2
// at the Qwen3 shapes), CUDA-event median of many steps. Prints a table and writes JSON. A tool:
// aborts on CUDA errors.
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/bench_fill.h"
#include "bench/bench_harness.h"
#include "core/cuda/cuda_check.h"
#include "core/cuda/device_runtime.h"
#include "core/status.h"
#include "model/cuda/attention.h"
#include "quant/cuda/block_scaled_gemm.h"

namespace fp8rl::bench {
namespace {

#define BENCH_CUDA(expr) FP8RL_CHECK((expr) == cudaSuccess)

// A device allocation owned by the benchmark.
class Mem {
 public:
  explicit Mem(size_t bytes) { BENCH_CUDA(cudaMalloc(&p_, bytes ? bytes : 16)); }
  ~Mem() { (void)cudaFree(p_); }
  Mem(const Mem&) = delete;
  Mem& operator=(const Mem&) = delete;
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

struct Options {
  std::string json = "bench_attention.json";
  int iters = 20;
  int warmup = 3;
  bool quick = false;  // small shapes: a smoke test of the harness, not a measurement
  std::string only;    // run only the problems whose name contains this (profiling one shape)
};

struct Problem {
  std::string name;
  std::vector<int32_t> lens;
  int64_t q_heads, kv_heads, head_dim;
};

// The BF16 GEMM baseline: an n^3 problem (n a multiple of 128) of about `flops`, autotuned.
class GemmBaseline {
 public:
  GemmBaseline(DeviceRuntime& rt, double flops) : gemm_(&rt) {
    n_ = std::max<int64_t>(128, int64_t(std::lround(std::cbrt(flops / 2) / 128)) * 128);
    desc_.m = desc_.n = desc_.k = n_;
    cudaStream_t s = rt.stream();
    for (int i = 0; i < 2; ++i) {
      a_[i] = std::make_unique<Mem>(size_t(n_ * n_) * 2);
      b_[i] = std::make_unique<Mem>(size_t(n_ * n_) * 2);
      d_[i] = std::make_unique<Mem>(size_t(n_ * n_) * 2);
      BENCH_CUDA(fill_random(a_[i]->get(), uint64_t(n_ * n_), true, 300 + i, 1.f, s));
      BENCH_CUDA(fill_random(b_[i]->get(), uint64_t(n_ * n_), true, 400 + i, 0.05f, s));
    }
    absl::StatusOr<GemmAlgoInfo> algo =
        gemm_.autotune(desc_, a_[0]->get<uint16_t>(), b_[0]->get<uint16_t>(), d_[0]->get(), s);
    FP8RL_CHECK_OK(algo.status());
    algo_ = algo->to_string();
  }
  absl::Status step(int i, cudaStream_t s) {
    return gemm_.run(desc_, a_[i % 2]->get<uint16_t>(), b_[i % 2]->get<uint16_t>(),
                     d_[i % 2]->get(), s);
  }
  double flops() const { return 2.0 * double(n_) * double(n_) * double(n_); }
  std::string name() const { return absl::StrCat("bf16 gemm ", n_, "^3"); }
  const std::string& algo() const { return algo_; }

 private:
  Bf16Gemm gemm_;
  Bf16GemmDesc desc_;
  int64_t n_ = 0;
  std::unique_ptr<Mem> a_[2], b_[2], d_[2];
  std::string algo_;
};

void bench_problem(DeviceRuntime& rt, Report& rep, const Options& o, const Problem& pr) {
  cudaStream_t s = rt.stream();
  const int64_t tokens = std::accumulate(pr.lens.begin(), pr.lens.end(), int64_t(0));
  const int64_t max_len = *std::max_element(pr.lens.begin(), pr.lens.end());
  std::vector<int32_t> cu(pr.lens.size() + 1, 0);
  double sum_sq = 0;
  for (size_t i = 0; i < pr.lens.size(); ++i) {
    cu[i + 1] = cu[i] + pr.lens[i];
    sum_sq += double(pr.lens[i]) * double(pr.lens[i]);
  }
  const int64_t nq = tokens * pr.q_heads * pr.head_dim, nkv = tokens * pr.kv_heads * pr.head_dim;
  Mem dcu(cu.size() * 4);
  BENCH_CUDA(cudaMemcpy(dcu.get(), cu.data(), cu.size() * 4, cudaMemcpyHostToDevice));
  AttentionShape sh;
  sh.tokens = tokens, sh.q_heads = pr.q_heads, sh.kv_heads = pr.kv_heads;
  sh.head_dim = pr.head_dim, sh.seqs = int64_t(pr.lens.size()), sh.cu_seqlens = dcu.get<int32_t>();
  sh.scale = 1.f / std::sqrt(float(pr.head_dim));

  struct Set {
    std::unique_ptr<Mem> q, k, v, out, lse, dout, dq, dk, dv;
  };
  Set set[2];
  for (int i = 0; i < 2; ++i) {
    Set& t = set[i];
    t.q = std::make_unique<Mem>(size_t(nq) * 2), t.out = std::make_unique<Mem>(size_t(nq) * 2);
    t.dout = std::make_unique<Mem>(size_t(nq) * 2), t.dq = std::make_unique<Mem>(size_t(nq) * 2);
    t.k = std::make_unique<Mem>(size_t(nkv) * 2), t.v = std::make_unique<Mem>(size_t(nkv) * 2);
    t.dk = std::make_unique<Mem>(size_t(nkv) * 2), t.dv = std::make_unique<Mem>(size_t(nkv) * 2);
    t.lse = std::make_unique<Mem>(size_t(tokens * pr.q_heads) * 4);
    BENCH_CUDA(fill_random(t.q->get(), uint64_t(nq), true, 10 + i, 1.f, s));
    BENCH_CUDA(fill_random(t.k->get(), uint64_t(nkv), true, 20 + i, 1.f, s));
    BENCH_CUDA(fill_random(t.v->get(), uint64_t(nkv), true, 30 + i, 1.f, s));
    BENCH_CUDA(fill_random(t.dout->get(), uint64_t(nq), true, 40 + i, 1.f, s));
  }
  Mem ws(cuda::attention_backward_workspace_bytes(sh, max_len));
  using bf16 = __nv_bfloat16;
  auto fwd = [&](int i) {
    const Set& t = set[i % 2];
    return cuda::attention_forward(sh, max_len, t.q->get<bf16>(), t.k->get<bf16>(),
                                   t.v->get<bf16>(), t.out->get<bf16>(), t.lse->get<float>(), s);
  };
  auto bwd = [&](int i) {
    const Set& t = set[i % 2];
    return cuda::attention_backward(sh, max_len, t.q->get<bf16>(), t.k->get<bf16>(),
                                    t.v->get<bf16>(), t.out->get<bf16>(), t.lse->get<float>(),
                                    t.dout->get<bf16>(), t.dq->get<bf16>(), t.dk->get<bf16>(),
                                    t.dv->get<bf16>(), ws.get(), s);
  };
  for (int i = 0; i < 2; ++i) FP8RL_CHECK_OK(fwd(i));  // out and lse for the backward
  BENCH_CUDA(cudaStreamSynchronize(s));

  const double fwd_flops = 4.0 * sum_sq / 2.0 * double(pr.q_heads) * double(pr.head_dim);
  const std::string lens_desc = pr.lens.size() <= 4
                                    ? absl::StrJoin(pr.lens, "+")
                                    : absl::StrCat(pr.lens.size(), " seqs, max ", max_len);
  const std::string shape =
      absl::StrCat(lens_desc, " tok ", pr.q_heads, "/", pr.kv_heads, "h d", pr.head_dim);
  for (const bool backward : {false, true}) {
    const double flops = fwd_flops * (backward ? 2.5 : 1.0);
    GemmBaseline base(rt, flops);
    absl::StatusOr<std::pair<Timing, Timing>> t = time_interleaved(
        s, o.warmup, o.iters, 3, [&](int i) { return base.step(i, s); },
        backward ? std::function<absl::Status(int)>(bwd) : std::function<absl::Status(int)>(fwd));
    FP8RL_CHECK_OK(t.status());
    const Timing& g = t->first;
    const Timing& a = t->second;
    rep.add(Row{"attention",
                absl::StrCat(backward ? "bwd " : "fwd ", pr.name),
                shape,
                "TFLOP/s",
                a.median_ms,
                flops / a.median_ms / 1e9,
                base.name(),
                base.flops() / g.median_ms / 1e9,
                0,
                {{"flops", flops},
                 {"tokens", tokens},
                 {"min_ms", a.min_ms},
                 {"max_ms", a.max_ms},
                 {"gemm_ms", g.median_ms},
                 {"gemm_algo", base.algo()}}});
  }
}

}  // namespace
}  // namespace fp8rl::bench

int main(int argc, char** argv) {
  using namespace fp8rl::bench;
  Options o;
  CLI::App app{"fp8rl flash attention benchmark: fwd/bwd TFLOP/s vs a BF16 GEMM of equal FLOPs"};
  app.add_option("--json", o.json, "where to write the JSON results");
  app.add_option("--iters", o.iters, "timed steps per measurement (median reported)");
  app.add_option("--warmup", o.warmup, "untimed steps first");
  app.add_flag("--quick", o.quick, "small shapes: a smoke test, not a measurement");
  app.add_option("--only", o.only, "run only the problems whose name contains this");
  CLI11_PARSE(app, argc, argv);
  Report rep;
  fp8rl::DeviceRuntime* rt = open_device("bench_attention", rep);
  if (rt == nullptr) return 77;
  rep.set_meta("iters", o.iters);
  rep.set_meta("warmup", o.warmup);
  rep.set_meta("quick", o.quick);
  std::vector<Problem> problems;
  if (o.quick) {
    problems.push_back({"smoke", {512, 300}, 4, 2, 128});
  } else {
    // The model benchmark's batch: 4 sequences of 4096 tokens; then one, short ones, a ragged mix.
    problems.push_back({"qwen3 4x4096", std::vector<int32_t>(4, 4096), 16, 8, 128});
    problems.push_back({"qwen3 1x4096", {4096}, 16, 8, 128});
    problems.push_back({"qwen3 16x1024", std::vector<int32_t>(16, 1024), 16, 8, 128});
    problems.push_back(
        {"qwen3 ragged", {3000, 17, 4096, 900, 2500, 1, 640, 4096, 1200, 128}, 16, 8, 128});
    problems.push_back({"d64 4x4096", std::vector<int32_t>(4, 4096), 16, 8, 64});
  }
  for (const Problem& p : problems)
    if (o.only.empty() || p.name.find(o.only) != std::string::npos) bench_problem(*rt, rep, o, p);
  FP8RL_CHECK_OK(rep.write_json(o.json));
  rep.print_table(stdout);
  std::printf("bench_attention: %zu rows, JSON in %s\n", rep.rows().size(), o.json.c_str());
  return 0;
}
