// bench_decode: the generation engine's decode speed on the CUDA backend (inference/cuda/) for
// random models of Qwen3-0.6B and Qwen3-1.7B shape, BF16 and FP8-blockwise linears, at batch 1
// and 64: B prompts of --prompt tokens, greedy, --new tokens each (EOS ignored). Decode tokens/s
// counts the tokens of every step after the first (the first step is the prefill).
//
// Two references, both from the same run on the same device:
//   - HF transformers generate() on a model of the same shape in BF16 (its tokens/s measured by
//     bench/hf_generate.py and passed in with --hf-json): the ratio column;
//   - the bandwidth limit: the bytes a decode step must read (linear weights in their precision,
//     the bf16 LM head, the KV cache at the mean context) over the device-to-device copy
//     bandwidth measured here, giving the most tokens/s the memory system allows.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "bench/bench_harness.h"
#include "core/cuda/cuda_check.h"
#include "core/cuda/device_runtime.h"
#include "core/random.h"
#include "core/status.h"
#include "inference/cuda/cuda_kv_model.h"
#include "inference/engine.h"
#include "model/cuda/cuda_decoder.h"
#include "model/tiny_model.h"

namespace fp8rl::bench {
namespace {

struct Options {
  std::string json = "decode.json";
  std::string hf_json;  // bench/hf_generate.py's output
  int64_t prompt = 128;
  int64_t new_tokens = 128;
  std::vector<int64_t> batches = {1, 64};
  std::string only;
};

template <typename T>
T check(absl::StatusOr<T> v) {
  FP8RL_CHECK_OK(v.status());
  return *std::move(v);
}

// Device-to-device copy bandwidth (bytes read + written per second) over 1 GiB buffers.
double copy_bandwidth(DeviceRuntime* rt) {
  const size_t bytes = size_t(1) << 30;
  void *a = nullptr, *b = nullptr;
  FP8RL_CHECK(cudaMalloc(&a, bytes) == cudaSuccess && cudaMalloc(&b, bytes) == cudaSuccess);
  FP8RL_CHECK(cudaMemsetAsync(a, 0, bytes, rt->stream()) == cudaSuccess);
  const Timing t = check(time_steps(rt->stream(), 3, 20, [&](int) {
    FP8RL_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, rt->stream()));
    return absl::OkStatus();
  }));
  cudaFree(a);
  cudaFree(b);
  return 2.0 * double(bytes) / (t.median_ms * 1e-3);
}

// Bytes one decode step reads: every linear weight in its precision (FP8: one byte and a scale
// per 128x128 block), norms, the bf16 LM head, and K and V of `batch` sequences at `context`.
double step_bytes(const ModelConfig& c, bool fp8, int64_t batch, double context) {
  const double H = double(c.hidden_size), I = double(c.intermediate_size);
  const double Q = double(c.num_attention_heads * c.head_dim);
  const double KV = double(c.num_key_value_heads * c.head_dim);
  const double linear = H * (Q + 2 * KV) + Q * H + 3 * H * I;  // per layer
  const double weight = fp8 ? 1.0 + 4.0 / (128 * 128) : 2.0;
  const double layers = double(c.num_hidden_layers);
  const double head = double(c.vocab_size) * H * 2;
  const double kv = double(batch) * context * layers * 2 * KV * 2;
  return layers * (linear * weight + 2 * H * 4) + head + kv;
}

// tokens/s of HF generate() for (model, batch) from hf_generate.py's JSON, 0 when absent.
double hf_rate(const nlohmann::json& hf, const std::string& model, int64_t batch) {
  if (!hf.contains("results")) return 0;
  for (const auto& r : hf["results"]) {
    if (r.value("model", "") == model && r.value("batch", int64_t(0)) == batch)
      return r.value("decode_tokens_per_s", 0.0);
  }
  return 0;
}

void run(Report& rep, const Options& o, DeviceRuntime* rt, const nlohmann::json& hf) {
  const double bandwidth = copy_bandwidth(rt);
  rep.set_meta("copy_bandwidth_GBps", bandwidth / 1e9);
  std::printf("device copy bandwidth %.0f GB/s\n", bandwidth / 1e9);
  struct Shape {
    const char* name;
    int64_t hidden, inter;
  };
  for (const Shape& sh : {Shape{"qwen3-0.6b", 1024, 3072}, Shape{"qwen3-1.7b", 2048, 6144}}) {
    if (!o.only.empty() && std::string(sh.name).find(o.only) == std::string::npos) continue;
    const ModelConfig c = qwen3_small_config(sh.hidden, sh.inter);
    for (LinearPrecision precision : {LinearPrecision::kBF16, LinearPrecision::kFP8}) {
      CudaDecoderOptions opt;
      opt.linear.precision = precision;
      opt.gradients = false;
      const int64_t max_batch = *std::max_element(o.batches.begin(), o.batches.end());
      std::unique_ptr<CudaKvModel> model =
          check(CudaKvModel::create(check(CudaDecoder::create_random(c, 1, 0.02, opt)), nullptr,
                                    {max_batch * (o.prompt + o.new_tokens), max_batch, 64}));
      for (int64_t batch : o.batches) {
        Engine engine(model.get(), nullptr);
        Rng rng(static_cast<uint64_t>(batch));
        const auto requests = [&] {
          std::vector<GenerateRequest> reqs(static_cast<size_t>(batch));
          for (GenerateRequest& r : reqs) {
            for (int64_t i = 0; i < o.prompt; ++i)
              r.input_ids.push_back(int32_t(rng.next_u64() % uint64_t(c.vocab_size)));
            r.params.temperature = 0;
            r.params.max_new_tokens = o.new_tokens;
            r.params.ignore_eos = true;
          }
          return reqs;
        };
        // A warm-up generation (GEMM plans, workspace), then the timed one.
        for (int pass = 0; pass < 2; ++pass) {
          for (GenerateRequest& r : requests()) check(engine.add_request(std::move(r)));
          const auto t0 = std::chrono::steady_clock::now();
          check(engine.step());  // prefill and the first token
          const auto t1 = std::chrono::steady_clock::now();
          int64_t steps = 0;
          while (engine.has_unfinished()) {
            check(engine.step());
            ++steps;
          }
          const auto t2 = std::chrono::steady_clock::now();
          if (pass == 0) continue;
          const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
          const double decode_s = std::chrono::duration<double>(t2 - t1).count();
          const double rate = double(batch * steps) / decode_s;
          const double context = double(o.prompt) + double(o.new_tokens) / 2;
          const double limit =
              double(batch) /
              (step_bytes(c, precision == LinearPrecision::kFP8, batch, context) / bandwidth);
          const double hf_tps = hf_rate(hf, sh.name, batch);
          rep.add(Row{"decode",
                      absl::StrCat(sh.name, " ", linear_precision_name(precision)),
                      absl::StrCat("batch ", batch, ", ", o.prompt, "+", o.new_tokens, " tok"),
                      "tok/s",
                      decode_s / double(steps) * 1e3,
                      rate,
                      hf_tps > 0 ? "HF generate bf16" : "",
                      hf_tps,
                      0,
                      {{"bandwidth_limit_tok_s", limit},
                       {"fraction_of_bandwidth_limit", rate / limit},
                       {"prefill_ms", prefill_s * 1e3},
                       {"decode_steps", steps},
                       {"weight_bytes_on_device", model->decoder().weight_bytes()},
                       {"kv_pool_bytes", model->pool_bytes()}}});
          std::printf(
              "%s %s batch %lld: %.0f tok/s (%.1f%% of the bandwidth limit %.0f), HF %.0f\n",
              sh.name, linear_precision_name(precision).c_str(), (long long)batch, rate,
              100 * rate / limit, limit, hf_tps);
        }
      }
    }
  }
}

}  // namespace
}  // namespace fp8rl::bench

int main(int argc, char** argv) {
  using namespace fp8rl::bench;
  Options o;
  CLI::App app{"fp8rl decode benchmark: the CUDA generation engine vs HF generate()"};
  app.add_option("--json", o.json, "where to write the JSON results");
  app.add_option("--hf-json", o.hf_json, "bench/hf_generate.py's results (the baseline)");
  app.add_option("--prompt", o.prompt, "prompt tokens per sequence");
  app.add_option("--new", o.new_tokens, "generated tokens per sequence");
  app.add_option("--batch", o.batches, "batch sizes")->delimiter(',');
  app.add_option("--only", o.only, "only shapes whose name contains this");
  CLI11_PARSE(app, argc, argv);
  Report rep;
  fp8rl::DeviceRuntime* rt = open_device("bench_decode", rep);
  if (rt == nullptr) return 77;
  nlohmann::json hf = nlohmann::json::object();
  if (!o.hf_json.empty()) {
    std::ifstream in(o.hf_json);
    if (in) hf = nlohmann::json::parse(in, nullptr, false);
    if (!in.is_open() || hf.is_discarded()) {
      std::printf("no HF results in %s: the HF column stays empty\n", o.hf_json.c_str());
      hf = nlohmann::json::object();
    }
  }
  rep.set_meta("hf", hf);
  run(rep, o, rt, hf);
  FP8RL_CHECK_OK(rep.write_json(o.json));
  rep.print_table(stdout);
  return 0;
}
