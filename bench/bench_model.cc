// bench_model throughput|converge|all: the CUDA decoder (model/cuda/cuda_decoder.h) end to end.
//
// throughput: one training forward + backward of random models of Qwen3-0.6B and Qwen3-1.7B shape
// (tied embeddings, vocab 151936) on 2 x 4096-token sequences, FP8 blockwise linears against BF16
// linears, the two decoders resident together and timed step by step in alternation (same clocks
// and temperature). Reports tokens/s, MFU and device memory. MFU = model FLOPs / step time /
// 989e12 (H100 SXM dense BF16 peak), model FLOPs = 6 * tokens * (linear weights + vocab * hidden)
// + 6 * layers * sum over sequences of len^2 * q_heads * head_dim (causal attention: QK^T and PV
// over half the len x len scores, 2 * len^2 * d * heads forward, backward twice the forward).
//
// converge: a synthetic next-token task (a sparse first-order Markov chain over 512 tokens, 4
// successors per token, entropy 1.208 nats) learned by a ~3.5M-parameter Qwen3 for a few hundred
// AdamW steps in BF16 and in FP8, same data and initialisation. The optimizer runs on the host
// over float32 masters (trainer/optimizer.h, the CPU-offload mode): grads_to_host -> step ->
// upload. Reports the final held-out losses and their relative difference (goal <= 1%).
//
// breakdown: the LM head, attention and the projections of a Qwen3-1.7B step timed alone.
//
// profile: one forward + backward of one precision (--precision, --only, --layers) after a warm-up
// step, between cudaProfilerStart and cudaProfilerStop, for `ncu --profile-from-start off`
// (tests/gpu/run.sh RUN_PROFILE=1 sums its kernels' times by kernel).
//
// Prints a table and writes JSON (bench/bench_harness.h). A tool: aborts on errors.
#include <cuda_profiler_api.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_harness.h"
#include "core/random.h"
#include "core/status.h"
#include "model/cuda/attention.h"
#include "model/cuda/cuda_decoder.h"
#include "model/cuda/elementwise_cuda.h"
#include "model/cuda/token_stats_cuda.h"
#include "model/hf_names.h"
#include "model/tiny_model.h"
#include "trainer/optimizer.h"

namespace fp8rl::bench {
namespace {

constexpr double kPeakBf16Flops = 989e12;  // H100 SXM, dense BF16

struct Options {
  std::string mode = "all";
  std::string json = "bench_model.json";
  int iters = 6;
  int warmup = 2;
  int steps = 300;
  bool quick = false;
  std::string only;               // throughput, profile: run only shapes whose name contains this
  int layers = 0;                 // throughput, profile: decoder layers (0: the model's 28)
  std::string precision = "fp8";  // profile
};

template <typename T>
T check(absl::StatusOr<T> v) {
  FP8RL_CHECK_OK(v.status());
  return *std::move(v);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

size_t device_used_bytes() {
  size_t free = 0, total = 0;
  FP8RL_CHECK(cudaMemGetInfo(&free, &total) == cudaSuccess);
  return total - free;
}

// --- throughput -----------------------------------------------------------------------------

double model_flops(const ModelConfig& c, const std::vector<int64_t>& lens) {
  const double h = double(c.hidden_size), q = double(c.num_attention_heads * c.head_dim);
  const double kv = double(c.num_key_value_heads * c.head_dim), i = double(c.intermediate_size);
  const double linear = double(c.num_hidden_layers) * (h * q + 2 * h * kv + q * h + 3 * h * i);
  const double matmul_params = linear + double(c.vocab_size) * h;
  double tokens = 0, sq = 0;
  for (int64_t l : lens) tokens += double(l), sq += double(l) * double(l);
  return 6 * tokens * matmul_params +
         6 * double(c.num_hidden_layers) * sq * double(c.num_attention_heads * c.head_dim);
}

struct ModelShape {
  const char* name;
  int64_t hidden, inter;
  double target;  // FP8 / BF16 throughput goal (0: none)
};
constexpr ModelShape kModelShapes[] = {{"qwen3-0.6b", 1024, 3072, 0},
                                       {"qwen3-1.7b", 2048, 6144, 1.2}};

// One training step's input: 2 x 4096 random tokens (2 x 512 with --quick), next-token targets,
// the mean-NLL gradient.
struct StepInput {
  ModelConfig config;
  std::vector<int64_t> lens;
  PackedBatch batch;
  std::vector<int32_t> targets;
  std::vector<float> dlogprob, dentropy;
};

StepInput step_input(int64_t hidden, int64_t inter, const Options& o) {
  StepInput in;
  in.config = qwen3_small_config(hidden, inter);
  in.lens = {4096, 4096};
  if (o.quick) in.config.num_hidden_layers = 2, in.lens = {512, 512};
  if (o.layers > 0) in.config.num_hidden_layers = o.layers;
  Rng rng(1);
  for (int64_t len : in.lens) {
    for (int64_t i = 0; i < len; ++i)
      in.batch.tokens.push_back(int32_t(rng.next_u64() % uint64_t(in.config.vocab_size)));
    in.batch.cu_seqlens.push_back(int32_t(in.batch.tokens.size()));
  }
  const size_t n = in.batch.tokens.size();
  in.targets.assign(n, -1);
  for (size_t t = 0; t + 1 < n; ++t) in.targets[t] = in.batch.tokens[t + 1];
  in.dlogprob.assign(n, -1.f / float(n));
  in.dentropy.assign(n, 0.f);
  return in;
}

void run_throughput(Report& rep, const Options& o) {
  for (const ModelShape& sh : kModelShapes) {
    if (!o.only.empty() && !absl::StrContains(sh.name, o.only)) continue;
    const StepInput in = step_input(sh.hidden, sh.inter, o);
    const ModelConfig& c = in.config;
    const std::vector<int64_t>& lens = in.lens;
    const PackedBatch& b = in.batch;
    const std::vector<int32_t>& targets = in.targets;
    const std::vector<float>& dlp = in.dlogprob;
    const std::vector<float>& dent = in.dentropy;

    const size_t used0 = device_used_bytes();
    CudaDecoderOptions o16, o8;
    o8.linear.precision = LinearPrecision::kFP8;
    CudaDecoder bf16 = check(CudaDecoder::create_random(c, 7, 0.02, o16));
    CudaDecoder fp8 = check(CudaDecoder::create_random(c, 7, 0.02, o8));
    // Seconds of one step, and of its forward into *fwd_s (both calls synchronise).
    auto step = [&](CudaDecoder& d, std::vector<double>* fwd_s) {
      const auto t0 = std::chrono::steady_clock::now();
      CudaDecoderForward f = check(d.forward(b, targets));
      fwd_s->push_back(seconds_since(t0));
      FP8RL_CHECK_OK(d.backward(f, dlp, dent));
      return seconds_since(t0);
    };
    double loss16 = 0, loss8 = 0;
    std::vector<double> t16, t8, f16, f8;
    for (int i = 0; i < o.warmup; ++i) step(bf16, &f16), step(fp8, &f8);
    f16.clear(), f8.clear();
    for (int i = 0; i < o.iters; ++i) t16.push_back(step(bf16, &f16)), t8.push_back(step(fp8, &f8));
    {  // the losses the two computed on this batch (sanity: the same model, nearly the same loss)
      for (float v : check(bf16.forward(b, targets)).logprob) loss16 -= double(v);
      for (float v : check(fp8.forward(b, targets)).logprob) loss8 -= double(v);
    }
    const size_t used = device_used_bytes();
    const double flops = model_flops(c, lens), tokens = double(b.tokens.size());
    const double s16 = median(t16), s8 = median(t8);
    auto mem = [](const CudaDecoder& d) {
      return nlohmann::json{{"weights", d.weight_bytes()},
                            {"grads", d.grad_bytes()},
                            {"activation_arena", d.arena_bytes()},
                            {"total", d.weight_bytes() + d.grad_bytes() + d.arena_bytes()}};
    };
    const std::string shape =
        absl::StrCat(lens.size(), "x", lens[0], " tok, L", c.num_hidden_layers);
    rep.add(Row{"model",
                absl::StrCat(sh.name, " bf16 fwd+bwd"),
                shape,
                "tok/s",
                s16 * 1e3,
                tokens / s16,
                "bf16",
                tokens / s16,
                0,
                {{"mfu", flops / s16 / kPeakBf16Flops},
                 {"model_flops", flops},
                 {"forward_ms", median(f16) * 1e3},
                 {"step_s_all", t16},
                 {"device_bytes", mem(bf16)},
                 {"loss_per_token", loss16 / tokens}}});
    rep.add(Row{"model",
                absl::StrCat(sh.name, " fp8 fwd+bwd"),
                shape,
                "tok/s",
                s8 * 1e3,
                tokens / s8,
                "bf16",
                tokens / s16,
                o.quick ? 0 : sh.target,
                {{"mfu", flops / s8 / kPeakBf16Flops},
                 {"model_flops", flops},
                 {"forward_ms", median(f8) * 1e3},
                 {"step_s_all", t8},
                 {"device_bytes", mem(fp8)},
                 {"loss_per_token", loss8 / tokens},
                 {"process_device_used_bytes", used},
                 {"process_device_used_before_bytes", used0}}});
    std::printf(
        "%s: bf16 %.1f ms (fwd %.1f, MFU %.3f), fp8 %.1f ms (fwd %.1f, MFU %.3f), ratio %.3f; "
        "memory bf16 %.2f GiB fp8 %.2f GiB; loss/token bf16 %.4f fp8 %.4f\n",
        sh.name, s16 * 1e3, median(f16) * 1e3, flops / s16 / kPeakBf16Flops, s8 * 1e3,
        median(f8) * 1e3, flops / s8 / kPeakBf16Flops, s16 / s8,
        double(mem(bf16)["total"].get<size_t>()) / (1 << 30),
        double(mem(fp8)["total"].get<size_t>()) / (1 << 30), loss16 / tokens, loss8 / tokens);
  }
}

// One step of one precision between cudaProfilerStart/Stop, after a warm-up step.
void run_profile(const Options& o) {
  for (const ModelShape& sh : kModelShapes) {
    if (!o.only.empty() && !absl::StrContains(sh.name, o.only)) continue;
    const StepInput in = step_input(sh.hidden, sh.inter, o);
    CudaDecoderOptions opt;
    opt.linear.precision = o.precision == "fp8" ? LinearPrecision::kFP8 : LinearPrecision::kBF16;
    CudaDecoder d = check(CudaDecoder::create_random(in.config, 7, 0.02, opt));
    for (int i = 0; i < 2; ++i) {
      if (i == 1) FP8RL_CHECK(cudaProfilerStart() == cudaSuccess);
      const CudaDecoderForward f = check(d.forward(in.batch, in.targets));
      FP8RL_CHECK_OK(d.backward(f, in.dlogprob, in.dentropy));
      if (i == 1) FP8RL_CHECK(cudaProfilerStop() == cudaSuccess);
    }
    std::printf("profile: %s %s, %lld layers, one step\n", sh.name, o.precision.c_str(),
                static_cast<long long>(in.config.num_hidden_layers));
  }
}

// --- breakdown ------------------------------------------------------------------------------

// Where a Qwen3-1.7B step's time goes: the parts timed alone at the step's shapes (CUDA-event
// medians): the LM head statistics (forward + backward), attention forward + backward of all
// layers, and the seven projections of all layers (forward, dgrad, wgrad, and in FP8 the operand
// quantizations) in each precision. The rest of a step is norms, RoPE, SwiGLU, casts, copies.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) {
    FP8RL_CHECK(cudaMalloc(&p_, bytes ? bytes : 16) == cudaSuccess);
  }
  ~DeviceBuffer() { (void)cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

// n random bf16 values ~ N(0, std^2), through a float32 scratch of n floats.
void fill_bf16(uint16_t* dst, int64_t n, uint64_t seed, float std, float* scratch, cudaStream_t s) {
  FP8RL_CHECK_OK(fill_normal_cuda(n, scratch, seed, 0.f, std, s));
  FP8RL_CHECK_OK(cast_f32_to_bf16_cuda(n, scratch, dst, s));
}

double median_ms(cudaStream_t s, const Options& o, const std::function<absl::Status(int)>& step) {
  return check(time_steps(s, o.warmup, o.iters, step)).median_ms;
}

void run_breakdown(Report& rep, const Options& o) {
  const ModelConfig c = qwen3_small_config(2048, 6144);
  DeviceRuntime* rt = check(DeviceRuntime::get(0));
  const cudaStream_t s = rt->stream();
  const int64_t T = o.quick ? 1024 : 8192, H = c.hidden_size, V = c.vocab_size, L = 28;
  const int64_t Q = c.num_attention_heads * c.head_dim, KV = c.num_key_value_heads * c.head_dim;
  const int64_t I = c.intermediate_size, widest = std::max({H, Q, I});
  DeviceBuffer scratch(size_t(std::max(V * H, T * widest)) * 4);
  float* f32 = scratch.get<float>();
  auto row = [&](const std::string& name, double ms, nlohmann::json extra) {
    rep.add(Row{"breakdown", name, absl::StrCat(T, " tok, qwen3-1.7b"), "ms", ms, ms, "", 0, 0,
                std::move(extra)});
    std::printf("breakdown %-34s %8.2f ms\n", name.c_str(), ms);
  };

  {  // LM head statistics, vocab chunk as the decoder's default
    const TokenStatsShape ts{T, H, V, CudaDecoderOptions().vocab_chunk};
    DeviceBuffer h(size_t(T * H) * 2), w(size_t(V * H) * 2), dw(size_t(V * H) * 4),
        dh(size_t(T * H) * 4), stats(size_t(T) * 4 * 6), tg(size_t(T) * 4);
    fill_bf16(h.get<uint16_t>(), T * H, 1, 1.f, f32, s);
    fill_bf16(w.get<uint16_t>(), V * H, 2, 0.02f, f32, s);
    std::vector<int32_t> targets(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) targets[size_t(t)] = int32_t((t * 7919) % V);
    FP8RL_CHECK(cudaMemcpy(tg.get(), targets.data(), size_t(T) * 4, cudaMemcpyHostToDevice) ==
                cudaSuccess);
    float* st = stats.get<float>();
    FP8RL_CHECK_OK(fill_normal_cuda(2 * T, st + 4 * T, 3, 0.f, 1e-3f, s));  // dlogprob, dentropy
    ArenaCarver measure;
    TokenStatsScratch::carve(ts, measure);
    DeviceBuffer arena(measure.used());
    ArenaCarver carver(arena.get());
    const TokenStatsScratch sc = TokenStatsScratch::carve(ts, carver);
    Bf16Gemm gemm(rt);
    const double ms = median_ms(s, o, [&](int) {
      FP8RL_RETURN_IF_ERROR(token_stats_forward_cuda(gemm, ts, h.get<uint16_t>(), w.get<uint16_t>(),
                                                     tg.get<int32_t>(), st, st + T, st + 2 * T,
                                                     st + 3 * T, sc, s));
      return token_stats_backward_cuda(gemm, ts, h.get<uint16_t>(), w.get<uint16_t>(),
                                       tg.get<int32_t>(), st + 4 * T, st + 5 * T, st + 2 * T,
                                       st + 3 * T, dh.get<float>(), dw.get<float>(), sc, s);
    });
    row("LM head stats fwd+bwd", ms, {{"gemm_flops", 8.0 * double(T) * double(V) * double(H)}});
  }
  {  // attention, every layer
    AttentionShape as;
    as.tokens = T, as.q_heads = c.num_attention_heads, as.kv_heads = c.num_key_value_heads;
    as.head_dim = c.head_dim, as.seqs = 2, as.scale = float(1.0 / std::sqrt(double(c.head_dim)));
    DeviceBuffer q(size_t(T * Q) * 2), k(size_t(T * KV) * 2), v(size_t(T * KV) * 2),
        out(size_t(T * Q) * 2), dout(size_t(T * Q) * 2), dq(size_t(T * Q) * 2),
        dk(size_t(T * KV) * 2), dv(size_t(T * KV) * 2), lse(size_t(T * Q) * 4), cu(16);
    const std::vector<int32_t> cu_h = {0, int32_t(T / 2), int32_t(T)};
    FP8RL_CHECK(cudaMemcpy(cu.get(), cu_h.data(), 12, cudaMemcpyHostToDevice) == cudaSuccess);
    as.cu_seqlens = cu.get<int32_t>();
    DeviceBuffer ws(cuda::attention_backward_workspace_bytes(as, T / 2));
    for (auto [buf, n, seed] : {std::tuple{&q, T * Q, 4}, std::tuple{&k, T * KV, 5},
                                std::tuple{&v, T * KV, 6}, std::tuple{&dout, T * Q, 7}})
      fill_bf16(buf->template get<uint16_t>(), n, uint64_t(seed), 1.f, f32, s);
    auto nv = [](const DeviceBuffer& b) { return b.get<__nv_bfloat16>(); };
    const double ms = median_ms(s, o, [&](int) {
      FP8RL_RETURN_IF_ERROR(
          cuda::attention_forward(as, T / 2, nv(q), nv(k), nv(v), nv(out), lse.get<float>(), s));
      return cuda::attention_backward(as, T / 2, nv(q), nv(k), nv(v), nv(out), lse.get<float>(),
                                      nv(dout), nv(dq), nv(dk), nv(dv), ws.get(), s);
    });
    row("attention fwd+bwd x28", ms * double(L), {{"per_layer_ms", ms}});
  }
  for (LinearPrecision p : {LinearPrecision::kBF16, LinearPrecision::kFP8}) {
    LinearOptions lo;
    lo.precision = p;
    LinearCuda lin = check(LinearCuda::create(rt, lo));
    const std::pair<int64_t, int64_t> shapes[] = {{Q, H}, {KV, H}, {KV, H}, {H, Q},
                                                  {I, H}, {I, H},  {H, I}};
    std::vector<DeviceLinear> ws(7);
    std::vector<std::unique_ptr<DeviceBuffer>> wmem;
    DeviceBuffer wtmp(size_t(LinearCuda::set_weight_scratch_floats(I, H)) * 4);
    for (size_t i = 0; i < 7; ++i) {
      const auto [out, in] = shapes[i];
      ArenaCarver measure;
      carve_device_linear(p, out, in, measure, &ws[i]);
      wmem.push_back(std::make_unique<DeviceBuffer>(measure.used() + size_t(out * in) * 4));
      ArenaCarver carver(wmem.back()->get());
      carve_device_linear(p, out, in, carver, &ws[i]);
      ws[i].grad = carver.take<float>(out * in);
      FP8RL_CHECK_OK(fill_normal_cuda(out * in, f32, 10 + i, 0.f, 0.02f, s));
      FP8RL_CHECK_OK(lin.set_weight(f32, wtmp.get<float>(), ws[i], s));
    }
    DeviceBuffer x(size_t(T * widest) * 2), dy(size_t(T * widest) * 2), y(size_t(T * widest) * 4),
        dx(size_t(T * widest) * 4), xq(size_t(T * widest)), xs(size_t(T * widest) / 32 + 64),
        xqt(size_t(T * widest)), xst(size_t(T * widest) / 32 + 64), gq(size_t(T * widest)),
        gs(size_t(T * widest) / 32 + 64), gqt(size_t(T * widest)),
        gst(size_t(T * widest) / 32 + 64);
    fill_bf16(x.get<uint16_t>(), T * widest, 20, 1.f, f32, s);
    fill_bf16(dy.get<uint16_t>(), T * widest, 21, 1e-3f, f32, s);
    const double ms = median_ms(s, o, [&](int) {
      for (const DeviceLinear& w : ws) {
        LinearOperand xo, go;
        if (p == LinearPrecision::kBF16) {
          xo.bf16 = x.get<uint16_t>(), go.bf16 = dy.get<uint16_t>();
        } else {
          FP8RL_RETURN_IF_ERROR(lin.quantize(QuantRole::kFwdInput, T, w.in, DType::kBF16, x.get(),
                                             xq.get<uint8_t>(), xs.get<float>(), xqt.get<uint8_t>(),
                                             xst.get<float>(), s));
          FP8RL_RETURN_IF_ERROR(lin.quantize(QuantRole::kBwdGrad, T, w.out, DType::kBF16, dy.get(),
                                             gq.get<uint8_t>(), gs.get<float>(), gqt.get<uint8_t>(),
                                             gst.get<float>(), s));
          xo.q = xq.get<uint8_t>(), xo.scale = xs.get<float>();
          xo.q_t = xqt.get<uint8_t>(), xo.scale_t = xst.get<float>();
          go.q = gq.get<uint8_t>(), go.scale = gs.get<float>();
          go.q_t = gqt.get<uint8_t>(), go.scale_t = gst.get<float>();
        }
        FP8RL_RETURN_IF_ERROR(lin.forward(T, xo, w, y.get(), DType::kBF16, false, s));
        FP8RL_RETURN_IF_ERROR(lin.dgrad(T, go, w, dx.get(), DType::kF32, false, s));
        FP8RL_RETURN_IF_ERROR(lin.wgrad(T, go, xo, w, s));
      }
      return absl::OkStatus();
    });
    row(absl::StrCat("7 linears ", linear_precision_name(p), " x28"), ms * double(L),
        {{"per_layer_ms", ms}, {"includes_fp8_quantization", p == LinearPrecision::kFP8}});
  }
}

// --- converge -------------------------------------------------------------------------------

// A first-order Markov chain: token a is followed by succ[a][j] with probability kProbs[j].
struct MarkovTask {
  static constexpr double kProbs[4] = {0.5, 0.25, 0.15, 0.1};
  int64_t vocab;
  std::vector<std::array<int32_t, 4>> succ;

  MarkovTask(int64_t v, uint64_t seed) : vocab(v), succ(static_cast<size_t>(v)) {
    Rng rng(seed);
    for (auto& s : succ)
      for (int j = 0; j < 4; ++j) {
        int32_t t;
        do t = int32_t(rng.next_u64() % uint64_t(v));
        while (std::find(s.begin(), s.begin() + j, t) != s.begin() + j);
        s[size_t(j)] = t;
      }
  }
  double entropy() const {
    double h = 0;
    for (double p : kProbs) h -= p * std::log(p);
    return h;
  }
  PackedBatch batch(int64_t seqs, int64_t len, Rng& rng) const {
    PackedBatch b;
    for (int64_t s = 0; s < seqs; ++s) {
      int32_t t = int32_t(rng.next_u64() % uint64_t(vocab));
      for (int64_t i = 0; i < len; ++i) {
        b.tokens.push_back(t);
        const double u = rng.uniform();
        int j = 0;
        for (double acc = kProbs[0]; u > acc && j < 3; acc += kProbs[++j]) {
        }
        t = succ[size_t(t)][size_t(j)];
      }
      b.cu_seqlens.push_back(int32_t(b.tokens.size()));
    }
    return b;
  }
};

std::vector<int32_t> next_tokens(const PackedBatch& b) {
  std::vector<int32_t> t(b.tokens.size(), -1);
  for (int64_t s = 0; s < b.num_seqs(); ++s)
    for (int32_t i = b.cu_seqlens[s]; i + 1 < b.cu_seqlens[s + 1]; ++i) t[i] = b.tokens[i + 1];
  return t;
}

// Mean next-token NLL of `b` under `d` (targets only).
double mean_nll(CudaDecoder& d, const PackedBatch& b) {
  const std::vector<int32_t> t = next_tokens(b);
  const CudaDecoderForward f = check(d.forward(b, t));
  double s = 0;
  int64_t n = 0;
  for (size_t i = 0; i < t.size(); ++i)
    if (t[i] >= 0) s -= f.logprob[i], ++n;
  return s / double(n);
}

struct TrainResult {
  std::vector<double> train_loss;
  double eval_loss = 0;
  double seconds = 0;
};

TrainResult train(const ModelConfig& c, LinearPrecision precision, const MarkovTask& task,
                  const Options& o) {
  const auto t0 = std::chrono::steady_clock::now();
  DecoderParams master = DecoderParams::zeros(c);
  Rng init(123);
  for (auto& [name, t] : master.named(c)) {
    const bool norm = absl::StrContains(name, "norm");
    for (int64_t i = 0; i < t->numel(); ++i)
      t->data<float>()[i] = float(norm ? 1.0 : 0.02 * init.normal());
  }
  CudaDecoderOptions opt;
  opt.linear.precision = precision;
  CudaDecoder d = check(CudaDecoder::create(c, master, opt));
  std::vector<std::pair<std::string, Tensor>> named;
  for (auto& [name, t] : master.named(c)) named.emplace_back(name, *t);
  AdamWConfig ac;
  ac.weight_decay = 0.01;
  ac.clip_grad = 1.0;
  AdamW adam = check(AdamW::create(named, ac));
  LrSchedule lr;
  lr.lr = 3e-3, lr.min_lr = 3e-4, lr.warmup_iters = 20, lr.decay_iters = o.steps;
  lr.style = LrDecayStyle::kCosine;
  FP8RL_CHECK_OK(lr.validate());
  DecoderParams grads = DecoderParams::zeros(c);
  std::vector<Tensor*> gptr;
  for (auto& [name, t] : grads.named(c)) gptr.push_back(t);

  Rng data(2024);  // same batches for both precisions
  TrainResult r;
  const int64_t seqs = o.quick ? 4 : 16, len = 256;
  for (int step = 0; step < o.steps; ++step) {
    const PackedBatch b = task.batch(seqs, len, data);
    const std::vector<int32_t> t = next_tokens(b);
    int64_t n = 0;
    for (int32_t v : t) n += v >= 0;
    std::vector<float> dlp(t.size()), dent(t.size(), 0.f);
    for (size_t i = 0; i < t.size(); ++i) dlp[i] = t[i] >= 0 ? -1.f / float(n) : 0.f;
    FP8RL_CHECK_OK(d.zero_grads());
    const CudaDecoderForward f = check(d.forward(b, t));
    double loss = 0;
    for (size_t i = 0; i < t.size(); ++i)
      if (t[i] >= 0) loss -= f.logprob[i];
    r.train_loss.push_back(loss / double(n));
    FP8RL_CHECK_OK(d.backward(f, dlp, dent));
    FP8RL_CHECK_OK(d.grads_to_host(&grads));
    FP8RL_CHECK_OK(adam.step(gptr, lr.lr_at(step)).status());
    FP8RL_CHECK_OK(d.upload(master));
  }
  Rng held_out(99);
  const PackedBatch eval = task.batch(32, len, held_out);
  r.eval_loss = mean_nll(d, eval);
  r.seconds = seconds_since(t0);
  return r;
}

void run_converge(Report& rep, const Options& o) {
  ModelConfig c = tiny_qwen3_config();
  c.hidden_size = 256;
  c.intermediate_size = 768;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.vocab_size = 512;
  c.max_position_embeddings = 512;
  c.tie_word_embeddings = true;
  c.dtype = DType::kF32;
  int64_t params = 0;
  for (const TensorSpec& s : decoder_parameter_specs(c)) params += shape_numel(s.shape);
  const MarkovTask task(c.vocab_size, 5);
  const TrainResult r16 = train(c, LinearPrecision::kBF16, task, o);
  const TrainResult r8 = train(c, LinearPrecision::kFP8, task, o);
  auto tail = [](const std::vector<double>& v) {  // mean of the last 10 steps
    const size_t k = std::min<size_t>(10, v.size());
    double s = 0;
    for (size_t i = v.size() - k; i < v.size(); ++i) s += v[i];
    return s / double(k);
  };
  const double rel = std::fabs(r8.eval_loss - r16.eval_loss) / r16.eval_loss;
  std::printf(
      "converge: %lld params, %d steps, floor %.4f nats; eval loss bf16 %.4f fp8 %.4f "
      "(rel diff %.4f); last-10 train loss bf16 %.4f fp8 %.4f; %.1f s / %.1f s\n",
      (long long)params, o.steps, task.entropy(), r16.eval_loss, r8.eval_loss, rel,
      tail(r16.train_loss), tail(r8.train_loss), r16.seconds, r8.seconds);
  auto curve = [](const std::vector<double>& v) {  // every 10th step
    std::vector<double> out;
    for (size_t i = 0; i < v.size(); i += 10) out.push_back(v[i]);
    return out;
  };
  const std::string shape = absl::StrCat(params, " params, ", o.steps, " steps");
  rep.add(Row{"converge",
              "markov bf16 eval loss",
              shape,
              "nats",
              r16.seconds * 1e3,
              r16.eval_loss,
              "bf16",
              r16.eval_loss,
              0,
              {{"train_loss_last10", tail(r16.train_loss)},
               {"curve", curve(r16.train_loss)},
               {"floor", task.entropy()}}});
  rep.add(Row{"converge",
              "markov fp8 eval loss",
              shape,
              "nats",
              r8.seconds * 1e3,
              r8.eval_loss,
              "bf16",
              r16.eval_loss,
              0,
              {{"train_loss_last10", tail(r8.train_loss)},
               {"curve", curve(r8.train_loss)},
               {"rel_diff_vs_bf16", rel},
               {"within_1pct", rel <= 0.01}}});
}

}  // namespace
}  // namespace fp8rl::bench

int main(int argc, char** argv) {
  using namespace fp8rl::bench;
  Options o;
  CLI::App app{"fp8rl model benchmark: CUDA decoder training throughput and FP8/BF16 convergence"};
  app.add_option("mode", o.mode, "throughput, breakdown, converge, profile or all")
      ->check(CLI::IsMember({"throughput", "breakdown", "converge", "profile", "all"}));
  app.add_option("--json", o.json, "where to write the JSON results");
  app.add_option("--iters", o.iters, "timed steps per precision (median reported)");
  app.add_option("--warmup", o.warmup, "untimed steps first");
  app.add_option("--steps", o.steps, "converge: optimizer steps");
  app.add_flag("--quick", o.quick, "small shapes: a smoke test, not a measurement");
  app.add_option("--only", o.only, "throughput, profile: only shapes whose name contains this");
  app.add_option("--layers", o.layers, "throughput, profile: decoder layers (default the model's)");
  app.add_option("--precision", o.precision, "profile: bf16 or fp8")
      ->check(CLI::IsMember({"bf16", "fp8"}));
  CLI11_PARSE(app, argc, argv);
  Report rep;
  fp8rl::DeviceRuntime* rt = open_device("bench_model", rep);
  if (rt == nullptr) return 77;
  rep.set_meta("iters", o.iters);
  rep.set_meta("warmup", o.warmup);
  rep.set_meta("quick", o.quick);
  rep.set_meta("mfu_formula",
               "(6 * tokens * (linear weights + vocab * hidden) + 6 * layers * sum_seq len^2 * "
               "q_heads * head_dim) / step_seconds / 989e12");
  if (o.mode == "profile") {
    run_profile(o);
    return 0;
  }
  if (o.mode == "converge" || o.mode == "all") run_converge(rep, o);
  if (o.mode == "throughput" || o.mode == "all") run_throughput(rep, o);
  if (o.mode == "breakdown" || o.mode == "all") run_breakdown(rep, o);
  FP8RL_CHECK_OK(rep.write_json(o.json));
  rep.print_table(stdout);
  return 0;
}
