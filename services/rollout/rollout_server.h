// `fp8rl rollout`: an HTTP server that speaks SGLang's API (reference/sglang.md §1) over fp8rl's
// own engine. Lifecycle LOADING → READY → DRAINING: the port answers from the start (/health 503
// until the model is loaded), and a drain refuses new work, lets what runs finish (bounded) and
// stops.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "services/common/http_server.h"
#include "services/common/metrics.h"
#include "services/rollout/rollout_metrics.h"
#include "services/rollout/scheduler.h"

namespace fp8rl {

// Every flag of `fp8rl rollout`; the names are SGLang's launch_server flags where one exists.
struct RolloutOptions {
  std::string model_path;
  std::string tokenizer_path;  // empty: model_path
  std::string host = "127.0.0.1";
  int port = 30000;
  std::string api_key;            // non-empty: Authorization: Bearer <key> required
  bool enable_metrics = false;    // /metrics
  std::string served_model_name;  // empty: model_path
  int64_t random_seed = -1;       // default seed of requests without sampling_seed; -1: random
  int64_t context_length = 0;     // 0: the model's max_position_embeddings
  int64_t max_running_requests = 64;
  int64_t max_total_tokens = 0;  // 0: max_running_requests * context length
  bool skip_tokenizer_init = false;
  int64_t stream_interval = 1;
  bool incremental_streaming_output = false;  // SGLang's --stream-output
  std::string weight_version = "default";
  // Linears: auto (bfloat16 unless the checkpoint is float32), float32, bfloat16.
  std::string dtype = "auto";
  std::string quantization;  // "" (from the checkpoint's quantization_config) or fp8
  // cpu, or cuda: the CUDA engine (BF16/FP8 linears, paged KV cache, decode as CUDA graphs).
  std::string device = "cpu";
  int gpu_id = 0;
  // cuda without max_total_tokens: this share of the device memory left after the weights
  // becomes the KV pool.
  double mem_fraction_static = 0.85;
  // fp8rl's own:
  int http_threads = 128;  // requests served at once (streams hold one each)
  int64_t max_body_bytes = int64_t(64) << 20;
  double health_check_timeout = 20.0;  // SGLang's SGLANG_HEALTH_CHECK_TIMEOUT
  double shutdown_timeout = 30.0;      // how long a drain waits for running requests
};

class RolloutServer {
 public:
  explicit RolloutServer(RolloutOptions options);
  ~RolloutServer();

  // Binds host:port and serves (LOADING: /health 503). Unavailable when the port is taken.
  absl::Status start();
  // Loads the model (and tokenizer) and turns READY; the error names the flag or file otherwise.
  absl::Status load();
  // DRAINING: /health and new requests get 503, running requests get shutdown_timeout to finish
  // (then are aborted), the HTTP server and the scheduler stop.
  void drain();
  int port() const { return http_.port(); }

 private:
  enum class State { kLoading, kReady, kDraining };

  void add_routes();
  // --device cuda: the CUDA engine over `host`'s weights; sizes the KV pool when
  // *max_total_tokens is 0 and writes what it chose there.
  absl::StatusOr<std::unique_ptr<KvModel>> cuda_backend(const Decoder& host,
                                                        int64_t* max_total_tokens) const;
  void handle_generate(const httplib::Request& req, httplib::Response& res);
  void handle_update_weights_from_disk(const httplib::Request& req, httplib::Response& res);
  // Answers 503 and returns false unless READY.
  bool require_ready(httplib::Response& res) const;
  nlohmann::ordered_json model_info() const;
  nlohmann::ordered_json server_info() const;

  const RolloutOptions options_;
  std::atomic<State> state_{State::kLoading};
  MetricsRegistry registry_;
  RolloutMetrics metrics_;
  HttpServer http_;
  // Set by load() before state_ turns READY (release); handlers read it once READY (acquire).
  std::unique_ptr<Scheduler> scheduler_;
  std::atomic<int64_t> generating_{0};  // /generate calls whose answer is not fully written
  std::mutex update_mu_;                // one weight update at a time
  mutable std::mutex info_mu_;
  std::string model_path_;  // the folder of the weights served (changes with updates)
};

}  // namespace fp8rl
