// The gRPC Trainer service of `fp8rl trainer` (proto/fp8rl/v1/trainer.proto) and its lifecycle:
// LOADING until the model is loaded, READY, then DRAINING after a shutdown signal. Calls that use
// the model run one at a time under one lock; Status answers from a snapshot at any time.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "fp8rl/v1/trainer.grpc.pb.h"
#include "services/trainer/trainer_flags.h"
#include "services/trainer/trainer_metrics.h"
#include "trainer/hf_export.h"
#include "trainer/train_step.h"

namespace fp8rl {

class TrainerService final : public v1::Trainer::Service {
 public:
  // `metrics` must outlive the service. Starts in LOADING.
  TrainerService(TrainerFlags flags, TrainerSetup setup, TrainerMetrics* metrics);

  // Loads the policy from --model-path, the reference from --ref-load, resumes from the latest
  // checkpoint in --load when there is one, and becomes READY. Errors name the path.
  absl::Status load();
  // DRAINING: calls still waiting for the model are refused with UNAVAILABLE; the one holding it
  // finishes. Thread-safe.
  void drain();
  // Blocks until no call holds the model; after drain(), the step in flight has then finished.
  void wait_idle();
  // READY (for /readyz). Thread-safe.
  bool ready() const;

  grpc::Status Train(grpc::ServerContext*, const v1::TrainRequest* request,
                     v1::TrainResponse* response) override;
  grpc::Status ComputeLogProbs(grpc::ServerContext*, const v1::ComputeLogProbsRequest* request,
                               v1::ComputeLogProbsResponse* response) override;
  grpc::Status SyncWeights(grpc::ServerContext*, const v1::SyncWeightsRequest* request,
                           v1::SyncWeightsResponse* response) override;
  grpc::Status SaveCheckpoint(grpc::ServerContext*, const v1::SaveCheckpointRequest* request,
                              v1::SaveCheckpointResponse* response) override;
  grpc::Status LoadCheckpoint(grpc::ServerContext*, const v1::LoadCheckpointRequest* request,
                              v1::LoadCheckpointResponse* response) override;
  grpc::Status Status(grpc::ServerContext*, const v1::StatusRequest* request,
                      v1::StatusResponse* response) override;

 private:
  enum class State { kLoading, kReady, kDraining };
  // What Status reports, updated after every call that changes it.
  struct Snapshot {
    State state = State::kLoading;
    int64_t step = 0;
    int64_t weight_version = 0;
    std::map<std::string, double> last_metrics;
  };

  // Runs fn(trainer) under the model lock when READY (UNAVAILABLE otherwise), logs a failure and
  // records the outcome under `method`.
  template <class Fn>
  grpc::Status with_trainer(const char* method, Fn&& fn);

  absl::Status train(Trainer& t, const v1::TrainRequest& request, v1::TrainResponse* response);
  absl::Status sync_weights(Trainer& t, const v1::SyncWeightsRequest& request,
                            v1::SyncWeightsResponse* response);
  absl::Status save(Trainer& t, const std::string& dir, v1::SaveCheckpointResponse* response);
  absl::StatusOr<Decoder> load_reference() const;

  TrainerFlags flags_;
  TrainerSetup setup_;
  TrainerMetrics* metrics_;
  // The format SyncWeights uses when the request leaves it unspecified: --model-path's own
  // (its quantization_config), as slime's sync follows --hf-checkpoint's.
  HfExportFormat default_format_ = HfExportFormat::kBF16;
  int64_t default_group_size_ = 0;  // INT4: from that config; 0: OPEN_TRAINING_INT4_GROUP_SIZE

  std::mutex model_mu_;                 // held by every call that uses the trainer
  std::optional<Trainer> trainer_;      // set once by load()
  int64_t last_global_batch_size_ = 1;  // samples of the last Train, recorded in checkpoints
  std::string last_managed_path_;  // the last sync's folder under --update-weight-disk-dir

  mutable std::mutex snapshot_mu_;
  Snapshot snapshot_;
};

}  // namespace fp8rl
