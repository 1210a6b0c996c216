// The RL train step: rollout samples → micro-batches packed for the decoder → slime's policy loss
// → backward with gradient accumulation → one AdamW step on fp32 masters; and log-prob recompute.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/decoder.h"
#include "trainer/decoder_backend.h"
#include "trainer/losses.h"
#include "trainer/optimizer.h"

namespace fp8rl {

// One rollout sample as slime ships it to the trainer (slime/ray/rollout.py). The response is the
// last response_length tokens; per-response-token fields have response_length entries.
struct Sample {
  std::vector<int32_t> tokens;           // prompt + response
  int64_t response_length = 0;           // >= 1 and < tokens.size() (the prompt is not empty)
  std::vector<float> loss_mask;          // 0 or 1
  std::vector<float> advantages;         // finite
  std::vector<float> rollout_log_probs;  // finite
  std::vector<float> ref_log_probs;      // empty (the reference model computes them) or finite
};

// Per-call settings of a train step (the optimizer's live in TrainerOptions).
struct TrainConfig {
  PolicyLossConfig loss;
  int64_t micro_batch_size = 1;  // samples per forward/backward (--micro-batch-size)
  // --use-rollout-logprobs: the PPO ratio's old log-probs are the rollout's. Otherwise they are
  // the policy's own before this step: train() takes one optimizer step per call, so they equal
  // the (detached) log-probs of the step's own forward, which is what is used.
  bool use_rollout_logprobs = false;
};

struct TrainerOptions {
  AdamWConfig adam;
  LrSchedule lr;
  // --device cuda: the policy and the reference model run on GPU `gpu` (model/cuda/), with BF16
  // or FP8 linears (the policy's precision). The host Decoder keeps the parameters (what exports
  // and checkpoints read); trainer/decoder_backend.h keeps the device copy.
  bool cuda = false;
  int gpu = 0;
  // Megatron's --optimizer-cpu-offload: AdamW's fp32 masters and moments (12 bytes a parameter)
  // in host memory; each step copies the gradients to the host, steps AdamW there and rebuilds
  // the device weights from the new masters, so the host parameters are always current. On the
  // CPU that is where everything lives anyway. Without it on CUDA the masters and moments live on
  // the device (a fused AdamW kernel) and the host copies are refreshed by sync_to_host().
  bool optimizer_cpu_offload = false;
  // --fp8-param-gather: the policy's linear weights live on the FP8 128x128 grid (an
  // Fp8WeightCache the FP8 GEMMs read without quantizing the weight per call); after every
  // optimizer step they are set to the FP8 round trip of the optimizer's fp32 masters. Needs the
  // policy's linears in LinearPrecision::kFP8 without INT4 fake-quant. On CUDA that is the
  // device's own form of FP8 linears (weights quantized 128x128 once per step, from the masters);
  // the host parameters stay the masters there.
  bool fp8_param_gather = false;
};

// A sample's response tokens under a model: log-probs and next-token entropies.
struct ResponseTokenStats {
  std::vector<float> log_probs;
  std::vector<float> entropy;
};

struct TrainResult {
  // slime's train/ names (trainer/losses.h) plus grad_norm, lr, global_batch_size, and
  // perf-style step_time (seconds) and tokens_per_second (all tokens forwarded / step_time).
  std::map<std::string, double> metrics;
  bool skipped = false;     // no update happened
  std::string skip_reason;  // "non-finite loss" or "non-finite gradient norm"
};

enum class LogProbModel { kPolicy, kReference };

// Owns the policy decoder, an optional frozen reference decoder and the optimizer. Not
// thread-safe: one call at a time.
class Trainer {
 public:
  // InvalidArgument when the options are invalid, the reference's config differs from the
  // policy's in vocabulary size, fp8_param_gather is set for a policy not in FP8, or cuda is set
  // with float32 linears or a config the CUDA kernels cannot run; an error from the device (none
  // present, out of memory) for cuda.
  static absl::StatusOr<Trainer> create(Decoder policy, std::optional<Decoder> reference,
                                        const TrainerOptions& options);

  // One optimizer step over all `samples` (the global batch), in micro-batches of
  // config.micro_batch_size with gradients accumulated. Validation comes first: InvalidArgument
  // naming the sample index and field, with model and optimizer untouched, for an empty batch,
  // lengths that disagree, ids outside the vocabulary, sequences longer than the model's
  // positions, non-finite advantages or log-probs, masks other than 0/1, or a KL loss with neither
  // ref_log_probs nor a reference model. A non-finite loss or gradient norm skips the update
  // (skipped, reason set; the metrics computed so far are reported).
  absl::StatusOr<TrainResult> train(const std::vector<Sample>& samples, const TrainConfig& config);

  // Per sample, the log-probs of its response tokens under the policy or the reference model,
  // computed micro_batch_size samples at a time. Only tokens and response_length are read;
  // InvalidArgument naming the sample and field when they are malformed (as in train()).
  // FailedPrecondition for kReference without a reference model.
  absl::StatusOr<std::vector<std::vector<float>>> compute_log_probs(
      const std::vector<Sample>& samples, LogProbModel model, int64_t micro_batch_size) const;
  // The same with the entropies of the response positions.
  absl::StatusOr<std::vector<ResponseTokenStats>> compute_token_stats(
      const std::vector<Sample>& samples, LogProbModel model, int64_t micro_batch_size) const;

  // Copies the optimizer's fp32 masters into the policy's parameters (through the FP8 grid with
  // fp8_param_gather) and the device weights, as a step does; with the optimizer on the device
  // its masters and moments are replaced by the host optimizer's, so the host state must be the
  // one wanted (just restored, or made current by sync_to_host). Checkpoint loaders call it after
  // restoring the optimizer.
  absl::Status sync_params_from_optimizer();
  // With the optimizer on the device (cuda without optimizer_cpu_offload): brings its masters,
  // moments and the parameters to the host optimizer() and policy(), which steps leave stale.
  // Call before reading them (save_checkpoint, exports); a no-op when they are current.
  absl::Status sync_to_host();
  // Whether optimizer() and policy() hold the latest state (false after a device optimizer step
  // until sync_to_host).
  bool host_state_current() const { return host_current_; }
  bool device_optimizer() const { return options_.cuda && !options_.optimizer_cpu_offload; }

  Decoder& policy() { return *policy_; }
  const Decoder& policy() const { return *policy_; }
  AdamW& optimizer() { return optimizer_; }
  const AdamW& optimizer() const { return optimizer_; }
  const TrainerOptions& options() const { return options_; }

 private:
  Trainer(Decoder policy, std::optional<Decoder> reference, AdamW optimizer,
          const TrainerOptions& options);
  // Builds the backends that run the policy (with gradients) and the reference model.
  absl::Status make_backends();
  absl::Status validate(const std::vector<Sample>& samples, const TrainConfig& config) const;
  // Re-quantizes every linear weight of the policy into fp8_weights_ (fp8_param_gather only).
  absl::Status refresh_fp8_params();

  // Behind pointers: the backends refer to them, and a Trainer moves.
  std::unique_ptr<Decoder> policy_;
  std::unique_ptr<Decoder> reference_;  // null without a reference model
  AdamW optimizer_;
  TrainerOptions options_;
  std::unique_ptr<DecoderBackend> policy_backend_, reference_backend_;
  // fp8_param_gather: the FP8 copies the policy's linears read (shared with its LinearOptions).
  std::shared_ptr<Fp8WeightCache> fp8_weights_;
  bool host_current_ = true;
};

}  // namespace fp8rl
