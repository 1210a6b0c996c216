// /update_weights_from_disk: load beside the serving weights, check, swap between steps
// (RolloutServer::handle_update_weights_from_disk).
#include <mutex>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/hf_config.h"
#include "core/logging.h"
#include "services/rollout/rollout_http.h"
#include "services/rollout/rollout_server.h"

namespace fp8rl {
namespace {

using json = nlohmann::json;

// The fields of the running model a weight update must keep (everything that fixes a shape or
// the forward's arithmetic).
absl::Status check_same_architecture(const ModelConfig& running, const ModelConfig& incoming) {
  const auto differ = [](const char* field, const auto& have, const auto& got) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json ", field, " is ", got, ", the running model has ", have));
  };
#define FP8RL_SAME(field) \
  if (running.field != incoming.field) return differ(#field, running.field, incoming.field)
  FP8RL_SAME(model_type);
  FP8RL_SAME(vocab_size);
  FP8RL_SAME(hidden_size);
  FP8RL_SAME(intermediate_size);
  FP8RL_SAME(num_hidden_layers);
  FP8RL_SAME(num_attention_heads);
  FP8RL_SAME(num_key_value_heads);
  FP8RL_SAME(head_dim);
  FP8RL_SAME(max_position_embeddings);
  FP8RL_SAME(rms_norm_eps);
  FP8RL_SAME(rope_theta);
  FP8RL_SAME(tie_word_embeddings);
  FP8RL_SAME(attention_bias);
  FP8RL_SAME(qk_norm);
  FP8RL_SAME(hidden_act);
#undef FP8RL_SAME
  return absl::OkStatus();
}
}  // namespace

void RolloutServer::handle_update_weights_from_disk(const httplib::Request& req,
                                                    httplib::Response& res) {
  if (!require_ready(res)) return;
  const std::optional<json> body = parse_body(req, res, false);
  if (!body) return;
  const auto field_error = [&](const std::string& message) {
    reply(res, 400, error_response(400, message));
  };
  if (!body->is_object()) return field_error("body: Input should be an object.");
  const json path = body->value("model_path", json(nullptr));
  if (!path.is_string()) return field_error("model_path: Field required (a string).");
  const json version = body->value("weight_version", json(nullptr));
  if (!version.is_null() && !version.is_string())
    return field_error("weight_version: Input should be a valid string.");
  for (const char* flag : {"abort_all_requests", "flush_cache", "is_async", "torch_empty_cache",
                           "keep_pause", "recapture_cuda_graph"}) {
    const json v = body->value(flag, json(nullptr));
    if (!v.is_null() && !v.is_boolean())
      return field_error(absl::StrCat(flag, ": Input should be a valid boolean."));
  }
  const bool abort_all = body->value("abort_all_requests", json(false)).is_boolean() &&
                         body->value("abort_all_requests", false);

  const auto answer = [&](bool success, const std::string& message, int64_t paused) {
    ojson j = ojson::object();
    j["success"] = success;
    j["message"] = message;
    j["num_paused_requests"] = paused;
    reply(res, success ? 200 : 400, j);
  };
  const std::string model_path = path.get<std::string>();
  std::lock_guard<std::mutex> one_at_a_time(update_mu_);
  Scheduler& sched = *scheduler_;
  // The new weights load completely, beside the ones serving, before anything is swapped.
  absl::StatusOr<ModelConfig> config = load_model_config(model_path);
  if (!config.ok())
    return answer(
        false, absl::StrCat("Failed to get weights iterator: ", config.status().message(), "."), 0);
  absl::Status same = check_same_architecture(sched.config(), *config);
  absl::StatusOr<Decoder> loaded = same.ok() ? Decoder::load(model_path, sched.decoder_options())
                                             : absl::StatusOr<Decoder>(same);
  if (!loaded.ok()) {
    FP8RL_LOG_WARN("rollout: update_weights_from_disk {} refused: {}", model_path,
                   loaded.status().ToString());
    return answer(false,
                  absl::StrCat("Failed to update weights: ", loaded.status().message(),
                               ".\nRolling back to original weights."),
                  0);
  }
  std::optional<std::string> new_version;
  if (version.is_string()) new_version = version.get<std::string>();
  absl::StatusOr<int64_t> paused =
      sched.update_weights(std::move(loaded->params()), new_version, abort_all);
  if (!paused.ok()) return answer(false, std::string(paused.status().message()), 0);
  {
    std::lock_guard<std::mutex> lock(info_mu_);
    model_path_ = model_path;
  }
  std::string message = "Succeeded to update model weights.";
  if (new_version) absl::StrAppend(&message, " Weight version updated to ", *new_version, ".");
  answer(true, message, *paused);
}
}  // namespace fp8rl
