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
  // --fp8-param-gather: the policy's linear weights live on the FP8 128x128 grid (an
  // Fp8WeightCache the FP8 GEMMs read without quantizing the weight per call); after every
  // optimizer step they are set to the FP8 round trip of the optimizer's fp32 masters. Needs the
  // policy's linears in LinearPrecision::kFP8 without INT4 fake-quant.
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
  // policy's in vocabulary size, or fp8_param_gather is set for a policy not in FP8.
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
  // fp8_param_gather), as a step does. Checkpoint loaders call it after restoring the optimizer.
  absl::Status sync_params_from_optimizer();

  Decoder& policy() { return policy_; }
  const Decoder& policy() const { return policy_; }
  AdamW& optimizer() { return optimizer_; }
  const AdamW& optimizer() const { return optimizer_; }
  const TrainerOptions& options() const { return options_; }

 private:
  Trainer(Decoder policy, std::optional<Decoder> reference, AdamW optimizer,
          const TrainerOptions& options);
  absl::Status validate(const std::vector<Sample>& samples, const TrainConfig& config) const;
  // Re-quantizes every linear weight of the policy into fp8_weights_ (fp8_param_gather only).
  absl::Status refresh_fp8_params();

  Decoder policy_;
  std::optional<Decoder> reference_;
  AdamW optimizer_;
  TrainerOptions options_;
  DecoderParams grads_;  // reused across steps, zeroed at the start of each
  // fp8_param_gather: the FP8 copies the policy's linears read (shared with its LinearOptions).
  std::shared_ptr<Fp8WeightCache> fp8_weights_;
};

}  // namespace fp8rl
