// SGLang's HTTP endpoints over the scheduler (services/rollout/rollout_server.h).
#include "services/rollout/rollout_server.h"

#include <chrono>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/hf_config.h"
#include "core/logging.h"
#include "core/status.h"
#if defined(FP8RL_WITH_CUDA)
#include "inference/cuda/cuda_kv_model.h"
#endif
#include "services/rollout/rollout_http.h"

namespace fp8rl {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

constexpr const char* kFlushMessage =
    "Cache flushed.\nPlease check backend logs for more details. (When there are running or "
    "waiting requests, the operation will not be performed.)\n";

std::optional<PauseMode> pause_mode(const std::string& m) {
  if (m == "abort") return PauseMode::kAbort;
  if (m == "retract") return PauseMode::kRetract;
  if (m == "in_place") return PauseMode::kInPlace;
  return std::nullopt;
}

}  // namespace

void reply(httplib::Response& res, int status, const ojson& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

std::optional<nlohmann::json> parse_body(const httplib::Request& req, httplib::Response& res,
                                         bool empty_is_object) {
  if (empty_is_object && req.body.empty()) return nlohmann::json::object();
  nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
  if (body.is_discarded()) {
    reply(res, 400, error_response(400, "JSON decode error: the body is not valid JSON."));
    return std::nullopt;
  }
  return body;
}

RolloutServer::RolloutServer(RolloutOptions options)
    : options_(std::move(options)),
      metrics_(
          &registry_,
          options_.served_model_name.empty() ? options_.model_path : options_.served_model_name,
          [this] {
            return state_.load(std::memory_order_acquire) == State::kLoading ? SchedulerLoad{}
                                                                             : scheduler_->load();
          }),
      http_({options_.host, options_.port, options_.http_threads, size_t(options_.max_body_bytes),
             "rollout"}),
      model_path_(options_.model_path) {
  add_routes();
}

RolloutServer::~RolloutServer() {
  http_.stop();
  if (scheduler_) scheduler_->stop();
}

absl::Status RolloutServer::start() { return http_.start(); }

absl::StatusOr<std::unique_ptr<KvModel>> RolloutServer::cuda_backend(
    const Decoder& host, int64_t* max_total_tokens) const {
#if defined(FP8RL_WITH_CUDA)
  const ModelConfig& c = host.config();
  CudaDecoderOptions o;
  o.linear = host.options().linear;
  o.device = options_.gpu_id;
  o.gradients = false;
  FP8RL_REQUIRE(o.linear.precision != LinearPrecision::kF32,
                "--device cuda: the CUDA engine runs bfloat16 or fp8 linears, not --dtype float32");
  absl::StatusOr<CudaDecoder> dec = CudaDecoder::create(c, host.params(), o);
  if (!dec.ok()) return annotate(dec.status(), "--device cuda");
  const int64_t per_token = CudaKvModel::bytes_per_token(c);
  if (*max_total_tokens <= 0) {
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) != cudaSuccess)
      return absl::InternalError("--device cuda: cudaMemGetInfo failed");
    const int64_t context =
        options_.context_length > 0
            ? std::min<int64_t>(options_.context_length, c.max_position_embeddings)
            : c.max_position_embeddings;
    *max_total_tokens = std::min(int64_t(double(free) * options_.mem_fraction_static) / per_token,
                                 options_.max_running_requests * context);
    FP8RL_REQUIRE(*max_total_tokens > 0, "--device cuda: no device memory left for the KV cache (",
                  free >> 20, " MiB free, --mem-fraction-static ", options_.mem_fraction_static,
                  ")");
  }
  CudaKvModelOptions kv;
  kv.max_total_tokens = *max_total_tokens;
  kv.max_sequences = options_.max_running_requests;
  absl::StatusOr<std::unique_ptr<CudaKvModel>> m = CudaKvModel::create(*std::move(dec), &host, kv);
  if (!m.ok()) return annotate(m.status(), "--device cuda");
  FP8RL_LOG_INFO("rollout: CUDA engine on GPU {}: weights {} MiB, KV pool {} MiB ({} tokens)",
                 options_.gpu_id, (*m)->decoder().weight_bytes() >> 20, (*m)->pool_bytes() >> 20,
                 *max_total_tokens);
  return std::unique_ptr<KvModel>(*std::move(m));
#else
  (void)host, (void)max_total_tokens;
  return absl::InvalidArgumentError("--device cuda: this fp8rl was built without CUDA");
#endif
}

absl::Status RolloutServer::load() {
  const auto t0 = std::chrono::steady_clock::now();
  FP8RL_ASSIGN_OR_RETURN(const ModelConfig config, load_model_config(options_.model_path));
  DecoderOptions decoder;
  // SGLang's --dtype auto is the checkpoint's torch_dtype: BF16 (or F16) checkpoints run BF16
  // linears, as the trainer does by default; float32 ones run exact float32.
  // The CUDA engine runs bfloat16 at least: auto means bfloat16 there.
  const bool f32 =
      options_.dtype == "float32" ||
      (options_.dtype == "auto" && config.dtype == DType::kF32 && options_.device == "cpu");
  decoder.linear.precision = f32 ? LinearPrecision::kF32 : LinearPrecision::kBF16;
  if (options_.context_length > config.max_position_embeddings)
    FP8RL_LOG_WARN("rollout: --context-length {} is beyond the model's {}: using {}",
                   options_.context_length, config.max_position_embeddings,
                   config.max_position_embeddings);
  const json& quant = config.raw.contains("quantization_config") ? config.raw["quantization_config"]
                                                                 : json(nullptr);
  const bool fp8_checkpoint = quant.is_object() && quant.value("quant_method", "") == "fp8";
  if (options_.quantization == "fp8" || (options_.quantization.empty() && fp8_checkpoint))
    decoder.linear.precision = LinearPrecision::kFP8;
  absl::StatusOr<Decoder> model = Decoder::load(options_.model_path, decoder);
  if (!model.ok()) return annotate(model.status(), "--model-path");

  std::optional<Tokenizer> tokenizer;
  if (!options_.skip_tokenizer_init) {
    const std::string path =
        options_.tokenizer_path.empty() ? options_.model_path : options_.tokenizer_path;
    absl::StatusOr<Tokenizer> tok = Tokenizer::load(path);
    if (tok.ok()) {
      tokenizer = *std::move(tok);
    } else if (absl::IsNotFound(tok.status()) && options_.tokenizer_path.empty()) {
      FP8RL_LOG_WARN(
          "rollout: no tokenizer.json in {}: serving token ids only (as "
          "--skip-tokenizer-init)",
          path);
    } else {
      return annotate(tok.status(), "--tokenizer-path");
    }
  }
  EngineOptions engine;
  engine.default_seed =
      options_.random_seed >= 0 ? uint64_t(options_.random_seed) : uint64_t(std::random_device{}());
  engine.context_length = options_.context_length;
  SchedulerOptions sched;
  sched.max_running_requests = options_.max_running_requests;
  sched.max_total_tokens = options_.max_total_tokens;
  sched.weight_version = options_.weight_version;
  auto host = std::make_unique<Decoder>(*std::move(model));
  std::unique_ptr<KvModel> backend;
  if (options_.device == "cuda") {
    FP8RL_ASSIGN_OR_RETURN(backend, cuda_backend(*host, &sched.max_total_tokens));
  }
  scheduler_ = std::make_unique<Scheduler>(std::move(host), std::move(backend),
                                           std::move(tokenizer), engine, sched, &metrics_);
  scheduler_->start();
  state_.store(State::kReady, std::memory_order_release);
  FP8RL_LOG_INFO(
      "rollout: ready in {:.1f} s: {} ({} layers, vocab {}, context {}, linears {}, tokenizer "
      "{}), max_running_requests {}, max_total_num_tokens {}",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
      options_.model_path, config.num_hidden_layers, config.vocab_size,
      scheduler_->limits().context_length,
      linear_precision_name(scheduler_->decoder_options().linear.precision),
      scheduler_->tokenizer() ? "yes" : "no", options_.max_running_requests,
      scheduler_->max_total_tokens());
  return absl::OkStatus();
}

void RolloutServer::drain() {
  const State was = state_.exchange(State::kDraining, std::memory_order_acq_rel);
  if (was != State::kLoading && scheduler_) {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(int64_t(options_.shutdown_timeout * 1000));
    if (!scheduler_->wait_idle(deadline)) {
      FP8RL_LOG_WARN("rollout: requests still running after {} s: aborting them",
                     options_.shutdown_timeout);
      scheduler_->abort("", true);
      scheduler_->wait_idle(std::chrono::steady_clock::now() + std::chrono::seconds(5));
    }
    // The answers of finished requests are still being written.
    if (generating_.load() > 0)
      FP8RL_LOG_INFO("rollout: waiting for {} answers to be written", generating_.load());
    const auto written = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (generating_.load() > 0 && std::chrono::steady_clock::now() < written)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  http_.stop();
  if (scheduler_) scheduler_->stop();
  FP8RL_LOG_INFO("rollout: stopped");
}

bool RolloutServer::require_ready(httplib::Response& res) const {
  switch (state_.load(std::memory_order_acquire)) {
    case State::kReady:
      return true;
    case State::kLoading:
      reply(res, 503, error_response(503, "The server is loading the model."));
      return false;
    case State::kDraining:
      reply(res, 503, error_response(503, "The server is shutting down."));
      return false;
  }
  return false;
}

void RolloutServer::add_routes() {
  httplib::Server& r = http_.routes();
  r.set_pre_routing_handler([key = options_.api_key.empty() ? "" : "Bearer " + options_.api_key](
                                const httplib::Request& req, httplib::Response& res) {
    // SGLang (uvicorn) never compresses. cpp-httplib would gzip for clients that accept it,
    // which buffers SSE chunks (text/event-stream with a charset counts as compressible) until
    // the stream ends; without the request's Accept-Encoding it sends plain bytes. The request
    // object is not const (httplib hands handlers a const view of its own local).
    const_cast<httplib::Request&>(req).headers.erase("Accept-Encoding");
    // SGLang's add_api_key_middleware: health probes, metrics scrapes and CORS preflights pass.
    if (key.empty() || req.method == "OPTIONS" || absl::StartsWith(req.path, "/health") ||
        absl::StartsWith(req.path, "/metrics") || req.get_header_value("Authorization") == key)
      return httplib::Server::HandlerResponse::Unhandled;
    res.status = 401;
    res.set_content(R"({"error":"Unauthorized"})", "application/json");
    // The body was not read: the connection cannot carry another request.
    res.set_header("Connection", "close");
    return httplib::Server::HandlerResponse::Handled;
  });
  // Errors no handler answered: FastAPI's bodies, and a too-large body as SGLang's 400.
  r.set_error_handler(httplib::Server::HandlerWithResponse(
      [limit = options_.max_body_bytes](const httplib::Request&, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        if (res.status == 413) {
          reply(res, 400,
                value_error_response(absl::StrCat("The request body is larger than the server's "
                                                  "limit of ",
                                                  limit, " bytes (--max-body-bytes).")));
        } else if (res.status == 404) {
          res.set_content(R"({"detail":"Not Found"})", "application/json");
        } else {
          return httplib::Server::HandlerResponse::Unhandled;
        }
        return httplib::Server::HandlerResponse::Handled;
      }));

  const auto generate = [this](const httplib::Request& req, httplib::Response& res) {
    handle_generate(req, res);
  };
  r.Post("/generate", generate);
  r.Put("/generate", generate);

  // /health and /health_generate share SGLang's handler: 503 unless READY and an engine step
  // produces tokens within the timeout.
  const auto health = [this](const httplib::Request&, httplib::Response& res) {
    res.status = 503;
    if (state_.load(std::memory_order_acquire) != State::kReady) return;
    const auto timeout = milliseconds(int64_t(options_.health_check_timeout * 1000));
    if (scheduler_->health_check(timeout)) res.status = 200;
  };
  r.Get("/health", health);
  r.Get("/health_generate", health);
  r.Get("/ping", [](const httplib::Request&, httplib::Response& res) { res.status = 200; });

  const auto model_info = [this](const httplib::Request&, httplib::Response& res) {
    if (require_ready(res)) reply(res, 200, this->model_info());
  };
  r.Get("/get_model_info", model_info);
  r.Get("/model_info", model_info);
  const auto server_info = [this](const httplib::Request&, httplib::Response& res) {
    if (require_ready(res)) reply(res, 200, this->server_info());
  };
  r.Get("/get_server_info", server_info);
  r.Get("/server_info", server_info);
  const auto weight_version = [this](const httplib::Request&, httplib::Response& res) {
    if (!require_ready(res)) return;
    ojson j = ojson::object();
    j["weight_version"] = scheduler_->weight_version();
    reply(res, 200, j);
  };
  r.Get("/get_weight_version", weight_version);
  r.Get("/weight_version", weight_version);
  r.Get("/get_load", [this](const httplib::Request&, httplib::Response& res) {
    if (!require_ready(res)) return;
    const SchedulerLoad l = scheduler_->load();
    ojson one = ojson::object();
    one["dp_rank"] = 0;
    one["num_reqs"] = l.running_reqs + l.queued_reqs;
    one["num_waiting_reqs"] = l.queued_reqs;
    one["num_tokens"] = l.used_tokens;
    reply(res, 200, ojson::array({one}));
  });

  const auto flush = [this](const httplib::Request&, httplib::Response& res) {
    if (!require_ready(res)) return;
    res.status = scheduler_->flush_cache() ? 200 : 400;
    res.set_content(kFlushMessage, "text/plain; charset=utf-8");
  };
  r.Get("/flush_cache", flush);
  r.Post("/flush_cache", flush);

  r.Post("/pause_generation", [this](const httplib::Request& req, httplib::Response& res) {
    if (!require_ready(res)) return;
    const std::optional<json> body = parse_body(req, res, true);
    if (!body) return;
    std::string mode = "abort";
    if (body->is_object() && body->contains("mode") && !(*body)["mode"].is_null()) {
      if (!(*body)["mode"].is_string()) {
        reply(res, 400,
              error_response(400,
                             "mode: Input should be 'abort', 'retract' or "
                             "'in_place'."));
        return;
      }
      mode = (*body)["mode"].get<std::string>();
    }
    const std::optional<PauseMode> m = pause_mode(mode);
    if (!body->is_object() || !m) {
      reply(res, 400,
            error_response(400,
                           "mode: Input should be 'abort', 'retract' or "
                           "'in_place'."));
      return;
    }
    scheduler_->pause(*m);
    ojson j = ojson::object();
    j["message"] = "Generation paused successfully.";
    j["status"] = "ok";
    reply(res, 200, j);
  });
  r.Post("/continue_generation", [this](const httplib::Request& req, httplib::Response& res) {
    if (!require_ready(res)) return;
    if (!parse_body(req, res, true)) return;
    scheduler_->resume();
    ojson j = ojson::object();
    j["message"] = "Generation continued successfully.";
    j["status"] = "ok";
    reply(res, 200, j);
  });

  r.Post("/abort_request", [this](const httplib::Request& req, httplib::Response& res) {
    if (!require_ready(res)) return;
    const std::optional<json> body = parse_body(req, res, false);
    if (!body) return;
    if (!body->is_object()) {
      reply(res, 400, error_response(400, "body: Input should be an object."));
      return;
    }
    const json rid = body->value("rid", json(nullptr));
    const json all = body->value("abort_all", json(false));
    if (!(rid.is_null() || rid.is_string()) || !all.is_boolean()) {
      reply(res, 400,
            error_response(400, rid.is_null() || rid.is_string()
                                    ? "abort_all: Input should be a valid boolean."
                                    : "rid: Input should be a valid string."));
      return;
    }
    scheduler_->abort(rid.is_string() ? rid.get<std::string>() : "", all.get<bool>());
    res.status = 200;
  });

  r.Post("/update_weights_from_disk", [this](const httplib::Request& req, httplib::Response& res) {
    handle_update_weights_from_disk(req, res);
  });

  if (options_.enable_metrics) {
    r.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(registry_.render(), "text/plain; version=0.0.4; charset=utf-8");
    });
  }
}

ojson RolloutServer::model_info() const {
  const Scheduler& sched = *scheduler_;
  ojson j = ojson::object();
  {
    std::lock_guard<std::mutex> lock(info_mu_);
    j["model_path"] = model_path_;
  }
  j["tokenizer_path"] =
      options_.skip_tokenizer_init
          ? ojson(nullptr)
          : ojson(options_.tokenizer_path.empty() ? options_.model_path : options_.tokenizer_path);
  j["is_generation"] = true;
  j["preferred_sampling_params"] = nullptr;
  j["weight_version"] = sched.weight_version();
  j["has_image_understanding"] = false;
  j["has_audio_understanding"] = false;
  j["model_type"] = sched.config().model_type;
  const json& raw = sched.config().raw;
  j["architectures"] =
      raw.contains("architectures") ? ojson::parse(raw["architectures"].dump()) : ojson(nullptr);
  return j;
}

ojson RolloutServer::server_info() const {
  const Scheduler& sched = *scheduler_;
  const SchedulerLoad l = sched.load();
  const RolloutOptions& o = options_;
  ojson j = ojson::object();
  // ServerArgs fields (SGLang's names), then the scheduler's info.
  {
    std::lock_guard<std::mutex> lock(info_mu_);
    j["model_path"] = model_path_;
  }
  j["tokenizer_path"] = o.tokenizer_path.empty() ? o.model_path : o.tokenizer_path;
  j["skip_tokenizer_init"] = o.skip_tokenizer_init || sched.tokenizer() == nullptr;
  j["host"] = o.host;
  j["port"] = port();
  j["served_model_name"] = o.served_model_name.empty() ? o.model_path : o.served_model_name;
  j["dtype"] = o.dtype;
  j["quantization"] = o.quantization.empty() ? ojson(nullptr) : ojson(o.quantization);
  j["context_length"] = sched.limits().context_length;
  j["max_running_requests"] = o.max_running_requests;
  j["max_total_tokens"] = sched.max_total_tokens();
  j["random_seed"] = o.random_seed >= 0 ? ojson(o.random_seed) : ojson(nullptr);
  j["stream_interval"] = o.stream_interval;
  j["stream_output"] = o.incremental_streaming_output;
  j["incremental_streaming_output"] = o.incremental_streaming_output;
  j["enable_metrics"] = o.enable_metrics;
  j["weight_version"] = sched.weight_version();
  j["tp_size"] = 1;
  j["dp_size"] = 1;
  j["pp_size"] = 1;
  j["device"] = "cpu";
  j["status"] = "ready";
  j["max_total_num_tokens"] = l.max_total_tokens;
  j["max_req_input_len"] = sched.limits().context_length - 1;
  ojson state = ojson::object();
  state["last_gen_throughput"] = l.gen_throughput;
  ojson memory = ojson::object();
  memory["token_capacity"] = l.max_total_tokens;
  memory["used_tokens"] = l.used_tokens;
  state["memory_usage"] = std::move(memory);
  j["internal_states"] = ojson::array({state});
  j["version"] = "fp8rl-0.1.0";
  return j;
}

}  // namespace fp8rl
