// The gRPC Trainer service (services/trainer/trainer_service.h).
#include "services/trainer/trainer_service.h"

#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/hf_config.h"
#include "core/logging.h"
#include "core/status.h"
#include "quant/int4.h"
#include "services/common/grpc_status.h"
#include "services/trainer/sglang_weight_client.h"

namespace fp8rl {
namespace fs = std::filesystem;
namespace {

// Megatron's tracker file: a --load or --ref-load folder with it holds torch_dist checkpoints.
constexpr char kCheckpointTracker[] = "latest_checkpointed_iteration.txt";

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The wire samples as the trainer takes them; the trainer validates the contents.
std::vector<Sample> samples_from_proto(const google::protobuf::RepeatedPtrField<v1::Sample>& in) {
  std::vector<Sample> out(size_t(in.size()));
  for (int i = 0; i < in.size(); ++i) {
    const v1::Sample& p = in[i];
    Sample& s = out[size_t(i)];
    s.tokens.assign(p.tokens().begin(), p.tokens().end());
    s.response_length = p.response_length();
    s.loss_mask.assign(p.loss_mask().begin(), p.loss_mask().end());
    s.advantages.assign(p.advantages().begin(), p.advantages().end());
    s.rollout_log_probs.assign(p.rollout_log_probs().begin(), p.rollout_log_probs().end());
    s.ref_log_probs.assign(p.ref_log_probs().begin(), p.ref_log_probs().end());
  }
  return out;
}

// core DType and fp8rl.v1.DType list the same types in the same order (the wire's 0 is unset).
v1::DType to_proto(DType d) { return static_cast<v1::DType>(int(d) + 1); }

// The format of an HF checkpoint's quantization_config, as slime picks its sync quantizer.
HfExportFormat format_of(const nlohmann::json& config, int64_t* group_size) {
  if (!config.contains("quantization_config")) return HfExportFormat::kBF16;
  const nlohmann::json& q = config["quantization_config"];
  const nlohmann::json::json_pointer method("/quant_method");
  const nlohmann::json::json_pointer group("/config_groups/group_0/weights/group_size");
  if (!q.is_object() || !q.contains(method) || !q.at(method).is_string())
    return HfExportFormat::kBF16;
  if (q.at(method) == "fp8") return HfExportFormat::kFP8Blockwise;
  if (q.at(method) != "compressed-tensors") return HfExportFormat::kBF16;
  if (q.contains(group) && q.at(group).is_number_integer())
    *group_size = q.at(group).get<int64_t>();
  return HfExportFormat::kInt4Packed;
}

}  // namespace

TrainerService::TrainerService(TrainerFlags flags, TrainerSetup setup, TrainerMetrics* metrics)
    : flags_(std::move(flags)), setup_(std::move(setup)), metrics_(metrics) {}

absl::Status TrainerService::load() {
  const auto t0 = std::chrono::steady_clock::now();
  FP8RL_ASSIGN_OR_RETURN(const ModelConfig config, load_model_config(flags_.model_path));
  default_format_ = format_of(config.raw, &default_group_size_);
  FP8RL_ASSIGN_OR_RETURN(Decoder policy, Decoder::load(flags_.model_path, setup_.decoder));
  std::optional<Decoder> reference;
  if (!flags_.ref_load.empty()) {
    FP8RL_ASSIGN_OR_RETURN(reference, load_reference());
  }
  FP8RL_ASSIGN_OR_RETURN(Trainer trainer,
                         Trainer::create(std::move(policy), std::move(reference), setup_.trainer));
  if (!flags_.load.empty()) {
    if (fs::exists(fs::path(flags_.load) / kCheckpointTracker)) {
      auto it = load_checkpoint(&trainer, flags_.load, 0);
      if (!it.ok()) return annotate(it.status(), absl::StrCat("--load ", flags_.load));
      FP8RL_RETURN_IF_ERROR(trainer.sync_params_from_optimizer());
      FP8RL_LOG_INFO("trainer: resumed from {} at iteration {}", flags_.load, *it);
    } else {
      FP8RL_LOG_WARN("trainer: no {} in --load {}: starting from --model-path", kCheckpointTracker,
                     flags_.load);
    }
  }
  const int64_t step = trainer.optimizer().steps();
  {
    std::lock_guard<std::mutex> lock(model_mu_);
    trainer_.emplace(std::move(trainer));
  }
  {
    std::lock_guard<std::mutex> lock(snapshot_mu_);
    if (snapshot_.state == State::kLoading) snapshot_.state = State::kReady;
    snapshot_.step = step;
  }
  metrics_->on_model_loaded(step);
  FP8RL_LOG_INFO("trainer: {} loaded ({}, {}) in {:.2f} s, step {}", flags_.model_path,
                 setup_.precision, flags_.ref_load.empty() ? "no reference" : "reference loaded",
                 seconds_since(t0), step);
  return absl::OkStatus();
}

absl::StatusOr<Decoder> TrainerService::load_reference() const {
  const std::string& dir = flags_.ref_load;
  if (fs::exists(fs::path(dir) / "config.json")) {
    auto ref = Decoder::load(dir, setup_.decoder);
    if (!ref.ok()) return annotate(ref.status(), absl::StrCat("--ref-load ", dir));
    return ref;
  }
  // A torch_dist checkpoint holds the weights of a model shaped like --model-path: load that
  // model, then the checkpoint's weights into it through a throwaway trainer.
  FP8RL_REQUIRE(fs::exists(fs::path(dir) / kCheckpointTracker), "--ref-load ", dir,
                " has neither config.json (HF) nor ", kCheckpointTracker, " (torch_dist)");
  FP8RL_ASSIGN_OR_RETURN(Decoder base, Decoder::load(flags_.model_path, setup_.decoder));
  TrainerOptions options = setup_.trainer;
  options.fp8_param_gather = false;
  options.cuda = false;  // only its host parameters are wanted
  FP8RL_ASSIGN_OR_RETURN(Trainer holder, Trainer::create(std::move(base), std::nullopt, options));
  auto it = load_checkpoint(&holder, dir, 0);
  if (!it.ok()) return annotate(it.status(), absl::StrCat("--ref-load ", dir));
  return std::move(holder.policy());
}

void TrainerService::drain() {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  snapshot_.state = State::kDraining;
}

void TrainerService::wait_idle() { std::lock_guard<std::mutex> lock(model_mu_); }

bool TrainerService::ready() const {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  return snapshot_.state == State::kReady;
}

template <class Fn>
grpc::Status TrainerService::with_trainer(const char* method, Fn&& fn) {
  absl::Status st;
  {
    std::lock_guard<std::mutex> lock(model_mu_);
    State state;
    {
      std::lock_guard<std::mutex> snap(snapshot_mu_);
      state = snapshot_.state;
    }
    if (state == State::kReady) {
      st = fn(*trainer_);
    } else {
      st = absl::UnavailableError(state == State::kLoading ? "trainer: the model is still loading"
                                                           : "trainer: shutting down");
    }
  }
  if (!st.ok()) FP8RL_LOG_WARN("trainer: {} failed: {}", method, st.ToString());
  metrics_->on_request(method, absl::StatusCodeToString(st.code()));
  return to_grpc_status(st);
}

grpc::Status TrainerService::Train(grpc::ServerContext*, const v1::TrainRequest* request,
                                   v1::TrainResponse* response) {
  return with_trainer("Train", [&](Trainer& t) { return train(t, *request, response); });
}

absl::Status TrainerService::train(Trainer& t, const v1::TrainRequest& request,
                                   v1::TrainResponse* response) {
  FP8RL_REQUIRE(request.micro_batch_size() >= 0, "micro_batch_size: ", request.micro_batch_size());
  const std::vector<Sample> samples = samples_from_proto(request.samples());
  TrainConfig config = setup_.train;
  if (request.micro_batch_size() > 0) config.micro_batch_size = request.micro_batch_size();
  int64_t tokens = 0;
  for (const Sample& s : samples) tokens += int64_t(s.tokens.size());

  metrics_->on_train_begin();
  auto result = t.train(samples, config);
  metrics_->on_train_end();
  if (!result.ok()) return result.status();
  last_global_batch_size_ = int64_t(samples.size());

  const int64_t step = t.optimizer().steps();
  response->set_step(step);
  response->set_update_skipped(result->skipped);
  response->set_skip_reason(result->skip_reason);
  for (const auto& [name, value] : result->metrics) (*response->mutable_metrics())[name] = value;
  metrics_->on_train(*result, tokens, int64_t(samples.size()), step);
  {
    std::lock_guard<std::mutex> lock(snapshot_mu_);
    snapshot_.step = step;
    snapshot_.last_metrics = result->metrics;
  }
  if (result->skipped) {
    FP8RL_LOG_WARN("trainer: rollout {}: update skipped ({})", request.rollout_id(),
                   result->skip_reason);
  } else if (flags_.save_interval > 0 && step % flags_.save_interval == 0) {
    // The step is applied whatever happens to the checkpoint; a failed save is logged and counted
    // (fp8rl_checkpoint_save_failures_total), not reported as a failed step.
    v1::SaveCheckpointResponse saved;
    const absl::Status st = save(t, flags_.save, &saved);
    if (!st.ok()) FP8RL_LOG_ERROR("trainer: --save-interval save failed: {}", st.ToString());
  }
  return absl::OkStatus();
}

grpc::Status TrainerService::ComputeLogProbs(grpc::ServerContext*,
                                             const v1::ComputeLogProbsRequest* request,
                                             v1::ComputeLogProbsResponse* response) {
  return with_trainer("ComputeLogProbs", [&](Trainer& t) -> absl::Status {
    const LogProbModel model =
        request->reference_model() ? LogProbModel::kReference : LogProbModel::kPolicy;
    FP8RL_ASSIGN_OR_RETURN(const std::vector<ResponseTokenStats> stats,
                           t.compute_token_stats(samples_from_proto(request->samples()), model,
                                                 setup_.train.micro_batch_size));
    for (const ResponseTokenStats& s : stats) {
      v1::SampleLogProbs* out = response->add_samples();
      out->mutable_log_probs()->Add(s.log_probs.begin(), s.log_probs.end());
      if (request->return_entropy())
        out->mutable_entropy()->Add(s.entropy.begin(), s.entropy.end());
    }
    return absl::OkStatus();
  });
}

grpc::Status TrainerService::SyncWeights(grpc::ServerContext*,
                                         const v1::SyncWeightsRequest* request,
                                         v1::SyncWeightsResponse* response) {
  return with_trainer("SyncWeights",
                      [&](Trainer& t) { return sync_weights(t, *request, response); });
}

absl::Status TrainerService::sync_weights(Trainer& t, const v1::SyncWeightsRequest& request,
                                          v1::SyncWeightsResponse* response) {
  switch (request.transport()) {
    case v1::SYNC_TRANSPORT_DISK:
      break;
    case v1::SYNC_TRANSPORT_GRPC:
      return absl::UnimplementedError(
          "SyncWeights: transport SYNC_TRANSPORT_GRPC (WeightSync stream) is not available yet; "
          "use SYNC_TRANSPORT_DISK");
    case v1::SYNC_TRANSPORT_NCCL:
      return absl::UnimplementedError(
          "SyncWeights: transport SYNC_TRANSPORT_NCCL (SGLang's /update_weights_from_distributed) "
          "is not available yet; use SYNC_TRANSPORT_DISK");
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("transport: ", v1::SyncTransport_Name(request.transport()),
                       " is not a transport; SYNC_TRANSPORT_DISK is available"));
  }
  for (int i = 0; i < request.targets_size(); ++i) {
    const absl::Status st = check_rollout_url(request.targets(i).http_url());
    if (!st.ok()) return annotate(st, absl::StrCat("targets[", i, "].http_url"));
  }
  HfExportOptions o;
  o.source_dir = flags_.model_path;
  switch (request.format()) {
    case v1::WEIGHT_FORMAT_UNSPECIFIED:
      o.format = default_format_;
      break;
    case v1::WEIGHT_FORMAT_BF16:
      o.format = HfExportFormat::kBF16;
      break;
    case v1::WEIGHT_FORMAT_FP8_BLOCKWISE:
      o.format = HfExportFormat::kFP8Blockwise;
      break;
    case v1::WEIGHT_FORMAT_INT4_PACKED:
      o.format = HfExportFormat::kInt4Packed;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("format: ", request.format(), " is unknown"));
  }
  FP8RL_REQUIRE(request.int4_group_size() >= 0, "int4_group_size: ", request.int4_group_size());
  o.int4_group_size = request.int4_group_size() > 0 ? request.int4_group_size()
                      : default_group_size_ > 0     ? default_group_size_
                                                    : int4_group_size_from_env();

  int64_t version;
  {
    std::lock_guard<std::mutex> lock(snapshot_mu_);
    version = snapshot_.weight_version + 1;
  }
  std::string path = request.disk_path();
  const bool managed = path.empty();
  if (managed) {
    FP8RL_REQUIRE(!flags_.update_weight_disk_dir.empty(),
                  "disk_path: empty and the trainer has no --update-weight-disk-dir");
    path = (fs::path(flags_.update_weight_disk_dir) / absl::StrCat("weights_v", version)).string();
  }
  std::error_code ec;
  const fs::path abs = fs::absolute(path, ec);
  if (!ec) path = abs.lexically_normal().string();
  // The trainer's own folder of this version may be left from an earlier run (versions restart
  // at 1); a caller's disk_path is never replaced.
  if (managed) fs::remove_all(path, ec);

  o.save_dir = path;

  const auto t0 = std::chrono::steady_clock::now();
  FP8RL_RETURN_IF_ERROR(t.sync_to_host());  // a device optimizer's masters into policy()
  auto report = export_hf_checkpoint(t.policy(), o);
  if (!report.ok()) return annotate(report.status(), absl::StrCat("disk_path ", path));
  const double export_seconds = seconds_since(t0);
  const auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < request.targets_size(); ++i) {
    const absl::Status st = update_weights_from_disk(request.targets(i).http_url(), path, version,
                                                     flags_.update_weight_timeout);
    if (!st.ok()) return annotate(st, absl::StrCat("targets[", i, "]"));
  }
  const double transfer_seconds = seconds_since(t1);

  {
    std::lock_guard<std::mutex> lock(snapshot_mu_);
    snapshot_.weight_version = version;
  }
  // Every target now serves this version: the trainer's previous folder is no longer read (one
  // sync per step would otherwise fill the disk).
  if (managed) {
    if (!last_managed_path_.empty()) fs::remove_all(last_managed_path_, ec);
    last_managed_path_ = path;
  }
  response->set_weight_version(version);
  response->set_bytes_sent(report->bytes);
  response->set_export_seconds(export_seconds);
  response->set_transfer_seconds(transfer_seconds);
  for (const TensorSpec& spec : report->tensors) {
    v1::TensorMeta* m = response->add_tensors();
    m->set_name(spec.name);
    m->set_dtype(to_proto(spec.dtype));
    m->mutable_shape()->Add(spec.shape.begin(), spec.shape.end());
    m->set_nbytes(spec.nbytes());
  }
  metrics_->on_weight_sync(version, report->bytes, export_seconds, transfer_seconds);
  FP8RL_LOG_INFO("trainer: weights v{} ({}) at {}: export {:.2f} s, {} target(s) {:.2f} s", version,
                 hf_export_format_name(o.format), path, export_seconds, request.targets_size(),
                 transfer_seconds);
  return absl::OkStatus();
}

grpc::Status TrainerService::SaveCheckpoint(grpc::ServerContext*,
                                            const v1::SaveCheckpointRequest* request,
                                            v1::SaveCheckpointResponse* response) {
  return with_trainer("SaveCheckpoint", [&](Trainer& t) -> absl::Status {
    const std::string& dir = request->dir().empty() ? flags_.save : request->dir();
    FP8RL_REQUIRE(!dir.empty(), "dir: empty and the trainer has no --save");
    return save(t, dir, response);
  });
}

absl::Status TrainerService::save(Trainer& t, const std::string& dir,
                                  v1::SaveCheckpointResponse* response) {
  const auto t0 = std::chrono::steady_clock::now();
  CheckpointArgs args = setup_.checkpoint;
  args.global_batch_size = last_global_batch_size_;
  FP8RL_RETURN_IF_ERROR(t.sync_to_host());
  auto info = save_checkpoint(t, dir, t.optimizer().steps(), args);
  if (!info.ok()) {
    metrics_->on_checkpoint_failed();
    return annotate(info.status(), absl::StrCat("checkpoint ", dir));
  }
  metrics_->on_checkpoint_saved(info->bytes, seconds_since(t0));
  response->set_path(info->path);
  response->set_iteration(info->iteration);
  response->set_bytes(info->bytes);
  FP8RL_LOG_INFO("trainer: saved {} ({} bytes)", info->path, info->bytes);
  return absl::OkStatus();
}

grpc::Status TrainerService::LoadCheckpoint(grpc::ServerContext*,
                                            const v1::LoadCheckpointRequest* request,
                                            v1::LoadCheckpointResponse* response) {
  return with_trainer("LoadCheckpoint", [&](Trainer& t) -> absl::Status {
    const std::string& dir = request->dir().empty() ? flags_.load : request->dir();
    FP8RL_REQUIRE(!dir.empty(), "dir: empty and the trainer has no --load");
    FP8RL_REQUIRE(request->iteration() >= 0, "iteration: ", request->iteration());
    auto it = load_checkpoint(&t, dir, request->iteration());
    if (!it.ok()) return annotate(it.status(), absl::StrCat("checkpoint ", dir));
    // The loader sets the weights to the masters; FP8 parameters go back onto their grid.
    FP8RL_RETURN_IF_ERROR(t.sync_params_from_optimizer());
    response->set_iteration(*it);
    std::lock_guard<std::mutex> lock(snapshot_mu_);
    snapshot_.step = t.optimizer().steps();
    return absl::OkStatus();
  });
}

grpc::Status TrainerService::Status(grpc::ServerContext*, const v1::StatusRequest*,
                                    v1::StatusResponse* response) {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  switch (snapshot_.state) {
    case State::kLoading:
      response->set_state("LOADING");
      break;
    case State::kReady:
      response->set_state("READY");
      break;
    case State::kDraining:
      response->set_state("DRAINING");
      break;
  }
  response->set_step(snapshot_.step);
  response->set_weight_version(snapshot_.weight_version);
  response->set_model_path(flags_.model_path);
  response->set_precision(setup_.precision);
  for (const auto& [name, value] : snapshot_.last_metrics)
    (*response->mutable_last_metrics())[name] = value;
  metrics_->on_request("Status", "OK");
  return grpc::Status::OK;
}

}  // namespace fp8rl
