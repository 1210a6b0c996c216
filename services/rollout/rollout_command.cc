// `fp8rl rollout`: the SGLang-compatible rollout server. Flags are checked before anything
// starts (exit 2); the port answers while the model loads (/health 503), the server turns READY,
// and SIGTERM or SIGINT drains it: /health 503, running requests finish (bounded by
// --shutdown-timeout), exit 0.
#include "core/hf_config.h"
#include "core/logging.h"
#include "services/cli/commands.h"
#include "services/common/signals.h"
#include "services/rollout/rollout_server.h"

namespace fp8rl {
namespace {

// Exit codes as `fp8rl trainer`'s: 0 after a drain, 1 when serving fails (a port taken, weights
// that do not load), 2 for flags fp8rl cannot run with.
constexpr int kExitServeError = 1;
constexpr int kExitBadFlags = 2;

int run_rollout(const RolloutOptions& o) {
  if (absl::StatusOr<ModelConfig> config = load_model_config(o.model_path); !config.ok()) {
    FP8RL_LOG_ERROR("fp8rl rollout: --model-path: {}", config.status().ToString());
    return kExitBadFlags;
  }
  // Before any thread starts, so only wait_for_shutdown_signal() sees SIGTERM/SIGINT.
  block_shutdown_signals();
  RolloutServer server(o);
  if (const absl::Status st = server.start(); !st.ok()) {
    FP8RL_LOG_ERROR("fp8rl rollout: {}", st.ToString());
    return kExitServeError;
  }
  if (const absl::Status st = server.load(); !st.ok()) {
    FP8RL_LOG_ERROR("fp8rl rollout: loading failed: {}", st.ToString());
    server.drain();
    return kExitServeError;
  }
  const int sig = wait_for_shutdown_signal();
  FP8RL_LOG_INFO("fp8rl rollout: signal {}: draining", sig);
  server.drain();
  return 0;
}

}  // namespace

void register_rollout(CLI::App& app, int& rc) {
  auto o = std::make_shared<RolloutOptions>();
  CLI::App* sub = app.add_subcommand(
      "rollout",
      "Serve SGLang's HTTP API (/generate, /health, /health_generate, /get_model_info, "
      "/get_server_info, /flush_cache, /pause_generation, /continue_generation, /abort_request, "
      "/update_weights_from_disk, /metrics) with fp8rl's engine");
  sub->add_option("--model-path", o->model_path,
                  "HF checkpoint folder: BF16, FP8 blockwise or INT4 pack-quantized")
      ->required();
  sub->add_option("--tokenizer-path", o->tokenizer_path,
                  "Folder or file of tokenizer.json (default: --model-path)");
  sub->add_option("--host", o->host);
  sub->add_option("--port", o->port)->check(CLI::Range(0, 65535));
  sub->add_option("--api-key", o->api_key,
                  "Require 'Authorization: Bearer <key>' (except /health* and /metrics)");
  sub->add_flag("--enable-metrics", o->enable_metrics, "Serve Prometheus metrics at /metrics");
  sub->add_option("--served-model-name", o->served_model_name,
                  "model_name label of the metrics (default: --model-path)");
  sub->add_option("--random-seed", o->random_seed,
                  "Seed of requests without sampling_seed (-1: random)");
  sub->add_option("--context-length", o->context_length,
                  "Longest prompt + max_new_tokens (0 or more than the model's: its "
                  "max_position_embeddings)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--max-running-requests", o->max_running_requests,
                  "Sequences decoded at once; more wait in the queue")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-total-tokens", o->max_total_tokens,
                  "KV tokens running sequences may reserve (prompt + max_new_tokens each); 0: "
                  "max-running-requests x context length")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--skip-tokenizer-init", o->skip_tokenizer_init,
                "No tokenizer: input_ids only, responses without text");
  sub->add_option("--stream-interval", o->stream_interval, "Tokens per streamed chunk")
      ->check(CLI::PositiveNumber);
  sub->add_flag("--incremental-streaming-output,--stream-output", o->incremental_streaming_output,
                "Streamed chunks carry only what is new (default: cumulative)");
  sub->add_option("--weight-version", o->weight_version,
                  "weight_version reported until an update sets another");
  sub->add_option("--dtype", o->dtype,
                  "Linear layers: auto (the checkpoint's torch_dtype: bfloat16 unless float32), "
                  "float32, bfloat16")
      ->check(CLI::IsMember({"auto", "float32", "bfloat16"}));
  sub->add_option("--quantization", o->quantization,
                  "fp8: FP8 blockwise linears (default: when the checkpoint is FP8)")
      ->check(CLI::IsMember({"", "fp8"}));
  sub->add_option("--device", o->device, "cpu, or cuda: the CUDA engine")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  sub->add_option("--gpu-id", o->gpu_id, "The GPU --device cuda runs on")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--mem-fraction-static", o->mem_fraction_static,
                  "--device cuda without --max-total-tokens: the share of the free device memory "
                  "(after the weights) the KV cache takes")
      ->check(CLI::Range(0.01, 0.99));
  sub->add_option("--http-threads", o->http_threads,
                  "HTTP requests served at once (a stream holds one until it ends)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-body-bytes", o->max_body_bytes,
                  "Larger request bodies get SGLang's 400 error")
      ->check(CLI::PositiveNumber);
  sub->add_option("--health-check-timeout", o->health_check_timeout,
                  "Seconds /health waits for an engine step (SGLANG_HEALTH_CHECK_TIMEOUT)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--shutdown-timeout", o->shutdown_timeout,
                  "Seconds a SIGTERM drain lets running requests finish before aborting them")
      ->check(CLI::NonNegativeNumber);
  sub->callback([o, &rc] { rc = run_rollout(*o); });
}

}  // namespace fp8rl
