// slime's RL policy loss per response token (PPO clip, dual clip, TIS, KL to a reference, entropy
// bonus) with its reductions and metrics, and the analytic gradients the decoder backward takes.
//
// Per masked response token t of sample i (all arithmetic in double; inputs float):
//   ppo_kl_t = old_t − logp_t;  r_t = exp(−ppo_kl_t) = exp(logp_t − old_t)
//   pg1 = −A·r;  pg2 = −A·clamp(r, 1 − eps_clip, 1 + eps_clip_high);  pg = max(pg1, pg2)
//   pg_clipfrac_t = [pg2 > pg1]
//   dual clip (eps_clip_c = c): for A < 0, pg = min(pg, −A·c)
//   TIS: w = clamp(exp(old − rollout), tis_clip_low, tis_clip), detached; pg *= w;
//        tis_t = exp(old − rollout) (unclipped), tis_clipfrac_t = [w != tis_t],
//        tis_abs_t = |exp(old − rollout) − 1|
//   KL (slime's compute_approx_kl, x = logp − ref): k1 = x; k2 = x²/2; k3 = exp(−x) + x − 1;
//        low_var_kl = clamp(k3, −10, 10)
//   train_rollout_logprob_abs_diff_t = |old − rollout| (whenever rollout log-probs are given)
// Every per-token quantity q is reduced with the same weights (slime's sum_of_sample_mean):
//   per-sample token mean: Σ_i (Σ_t mask·q / max(Σ_t mask, 1)) / denominator,
//                          denominator = number of samples in the global batch
//   token mean:            Σ_t mask·q / denominator, denominator = masked tokens in the batch
// loss = pg_loss − entropy_coef·entropy_loss + kl_loss_coef·kl_loss (kl term with use_kl_loss).
//
// Gradients (what torch autograd gives for slime's code): d pg / d logp = −A·r·w when the
// unclipped branch is selected (pg2 ≤ pg1, and for dual clip pg ≤ −A·c), else 0 (ties of the
// dual clip take the PPO branch; torch would halve them); d k1 = 1, d k2 = x,
// d k3 = 1 − exp(−x), d low_var_kl = 0 where k3 > 10; d loss / d entropy_t =
// −entropy_coef·weight_t.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fp8rl {

// slime's --kl-loss-type.
enum class KlLossType { kK1, kK2, kK3, kLowVarKl };
// slime's default reduction, or --calculate-per-token-loss.
enum class LossAggregation { kPerSampleTokenMean, kTokenMean };

// "k1", "k2", "k3", "low_var_kl" (as slime spells them); InvalidArgument for anything else.
absl::StatusOr<KlLossType> parse_kl_loss_type(const std::string& name);

// The loss terms and their coefficients, named after slime's flags.
struct PolicyLossConfig {
  double eps_clip = 0.2;
  std::optional<double> eps_clip_high;        // --eps-clip-high; unset: eps_clip
  std::optional<double> eps_clip_c;           // --eps-clip-c dual clip (> 1); unset: off
  bool use_tis = false;                       // --use-tis
  double tis_clip_low = 0.0;                  // --tis-clip-low
  double tis_clip = 2.0;                      // --tis-clip
  bool use_kl_loss = false;                   // --use-kl-loss
  double kl_loss_coef = 0.0;                  // --kl-loss-coef
  KlLossType kl_loss_type = KlLossType::kK1;  // --kl-loss-type (slime's default k1)
  double entropy_coef = 0.0;                  // --entropy-coef
  LossAggregation aggregation = LossAggregation::kPerSampleTokenMean;

  double clip_high() const { return eps_clip_high.value_or(eps_clip); }
  // InvalidArgument naming the field: negative or non-finite clips, eps_clip_c <= 1,
  // tis_clip_low > tis_clip, negative coefficients.
  absl::Status validate() const;
};

// Per-token inputs of one or more whole samples laid end to end (response tokens only). Sample i
// holds tokens [sample_offsets[i], sample_offsets[i+1]). Spans are borrowed for the call.
struct PolicyLossInputs {
  std::span<const float> log_probs;      // current policy (the values gradients are taken for)
  std::span<const float> entropy;        // current policy's next-token entropy
  std::span<const float> old_log_probs;  // behaviour policy of the PPO ratio
  std::span<const float> advantages;
  std::span<const float> loss_mask;          // 0 or 1
  std::span<const float> rollout_log_probs;  // empty: none (TIS then refused, no abs_diff metric)
  std::span<const float> ref_log_probs;      // empty: none (use_kl_loss then refused)
  std::span<const int64_t> sample_offsets;   // num_samples + 1 entries, from 0 to the token count
  // The reduction's denominator (see the file comment) for the whole global batch, so that
  // micro-batches of it add up; 0 means "this call is the whole batch" and it is counted here.
  double denominator = 0;
};

struct PolicyLossResult {
  double loss = 0;
  std::vector<float> dlog_probs;  // d loss / d log_probs[t]
  std::vector<float> dentropy;    // d loss / d entropy[t]
  // slime's train/ names: loss, pg_loss, pg_clipfrac, ppo_kl, entropy_loss; kl_loss with
  // use_kl_loss; tis, tis_clipfrac, tis_abs with use_tis; train_rollout_logprob_abs_diff with
  // rollout log-probs. Values are reduced as the loss is, so micro-batch results add up.
  std::map<std::string, double> metrics;
};

// The loss of `in` under `config`. InvalidArgument naming the field for spans of the wrong length,
// malformed offsets, a TIS or KL term without its log-probs, or an invalid config. Non-finite
// inputs are not rejected here (the trainer validates samples); they propagate into the loss.
absl::StatusOr<PolicyLossResult> policy_loss(const PolicyLossConfig& config,
                                             const PolicyLossInputs& in);

// Adds each entry of `from` into `into` (micro-batch accumulation of metrics).
void accumulate_metrics(const std::map<std::string, double>& from,
                        std::map<std::string, double>* into);

}  // namespace fp8rl
