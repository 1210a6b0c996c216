// AdamW on fp32 master weights (torch.optim.AdamW's update), global-norm gradient clipping, and
// Megatron's learning-rate schedules (--lr-warmup-iters, --lr-decay-iters, --lr-decay-style).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace fp8rl {

// Megatron's --lr-decay-style (the subset fp8rl implements).
enum class LrDecayStyle { kConstant, kLinear, kCosine };

// "constant", "linear", "cosine"; InvalidArgument otherwise.
absl::StatusOr<LrDecayStyle> parse_lr_decay_style(const std::string& name);

// Megatron's OptimizerParamScheduler.get_lr with steps counted in iterations:
//   step <= warmup_iters (warmup_iters > 0): warmup_init + (lr − warmup_init)·step/warmup_iters
//   constant style: lr;  step > decay_iters: min_lr
//   else ratio = (step − warmup_iters)/(decay_iters − warmup_iters),
//        linear: min_lr + (1 − ratio)·(lr − min_lr)
//        cosine: min_lr + ½(cos(π·ratio) + 1)·(lr − min_lr)
// `step` is the number of optimizer steps already taken, so with warmup the first step runs at
// warmup_init (0 by default), as in Megatron.
struct LrSchedule {
  double lr = 1e-6;          // --lr (peak)
  double min_lr = 0.0;       // --min-lr
  double warmup_init = 0.0;  // --lr-warmup-init
  int64_t warmup_iters = 0;  // --lr-warmup-iters
  int64_t decay_iters = 0;   // --lr-decay-iters (needed unless the style is constant)
  LrDecayStyle style = LrDecayStyle::kConstant;

  // InvalidArgument naming the field: negative or non-finite rates, min_lr > lr, negative
  // iteration counts, decay_iters <= warmup_iters for a decaying style.
  absl::Status validate() const;
  double lr_at(int64_t step) const;
};

// torch.optim.AdamW's hyper-parameters (Megatron's --adam-beta1/--adam-beta2/--adam-eps,
// --weight-decay, --clip-grad; defaults as Megatron's).
struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // not applied to 1-D parameters (norms, biases), as Megatron
  double clip_grad = 1.0;      // global L2 norm; 0 disables clipping

  absl::Status validate() const;
};

// What one AdamW::step did.
struct OptimizerStepResult {
  double grad_norm = 0;  // global L2 norm of the gradients before clipping
  bool skipped = false;  // the norm was not finite: nothing changed
};

// The global L2 norm of `grads` (double accumulation in fixed blocks, so the value does not
// depend on the thread count); when clip_grad > 0 and the norm exceeds it the gradients are
// scaled in place by clip_grad / (norm + 1e-6), Megatron's clip_grad_norm. Non-finite norms
// leave the gradients as they are.
double clip_grad_norm(const std::vector<Tensor*>& grads, double clip_grad);

// AdamW over named float32 parameters with fp32 master copies it owns. Not thread-safe.
class AdamW {
 public:
  // `params` are the model's tensors (float32, CPU; shared, not copied: step() writes the updated
  // master weights back into them). The masters start as copies of the params, moments at zero.
  static absl::StatusOr<AdamW> create(std::vector<std::pair<std::string, Tensor>> params,
                                      const AdamWConfig& config);

  // One update at learning rate `lr` from `grads` (same order and shapes as the params; clipped
  // in place). A non-finite gradient norm skips the step: masters, moments, params and the step
  // count are untouched. InvalidArgument for mismatched gradients, also leaving state untouched.
  // For every element (step count k after increment):
  //   p -= lr·wd·p;  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
  //   p -= lr/(1−β1^k) · m / (sqrt(v)/sqrt(1−β2^k) + eps)
  absl::StatusOr<OptimizerStepResult> step(const std::vector<Tensor*>& grads, double lr);

  int64_t steps() const { return steps_; }
  const AdamWConfig& config() const { return config_; }

  // Every state tensor by name: "<param>.master", "<param>.exp_avg", "<param>.exp_avg_sq"
  // (float32, shared with the optimizer: writing into them restores state). With set_steps and
  // sync_params a checkpoint reader restores the optimizer exactly.
  std::vector<std::pair<std::string, Tensor>> named_state() const;
  void set_steps(int64_t steps) { steps_ = steps; }
  // Copies every master into its parameter.
  void sync_params();

 private:
  struct Slot {
    std::string name;
    Tensor param, master, exp_avg, exp_avg_sq;
    bool decay = true;
  };
  AdamW(std::vector<Slot> slots, const AdamWConfig& config)
      : slots_(std::move(slots)), config_(config) {}

  std::vector<Slot> slots_;
  AdamWConfig config_;
  int64_t steps_ = 0;
};

}  // namespace fp8rl
