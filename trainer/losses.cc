// slime's policy loss, its reductions, metrics and analytic gradients (trainer/losses.h).
#include "trainer/losses.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace fp8rl {
namespace {

constexpr double kLowVarKlClamp = 10.0;

// Value and d/dlogp of slime's compute_approx_kl for x = logp − ref.
struct KlTerm {
  double value = 0, grad = 0;
};
KlTerm approx_kl(KlLossType type, double x) {
  switch (type) {
    case KlLossType::kK1:
      return {x, 1.0};
    case KlLossType::kK2:
      return {0.5 * x * x, x};
    case KlLossType::kK3:
    case KlLossType::kLowVarKl: {
      const double k3 = std::exp(-x) + x - 1.0;
      if (type == KlLossType::kLowVarKl && std::abs(k3) > kLowVarKlClamp)
        return {std::clamp(k3, -kLowVarKlClamp, kLowVarKlClamp), 0.0};
      return {k3, 1.0 - std::exp(-x)};
    }
  }
  return {};
}

absl::Status check_length(std::span<const float> s, size_t n, const char* field) {
  FP8RL_REQUIRE(s.size() == n, "policy loss: ", field, " has ", s.size(), " entries for ", n,
                " tokens");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<KlLossType> parse_kl_loss_type(const std::string& name) {
  if (name == "k1") return KlLossType::kK1;
  if (name == "k2") return KlLossType::kK2;
  if (name == "k3") return KlLossType::kK3;
  if (name == "low_var_kl") return KlLossType::kLowVarKl;
  return absl::InvalidArgumentError(
      absl::StrCat("kl_loss_type: '", name, "' is not one of k1, k2, k3, low_var_kl"));
}

absl::Status PolicyLossConfig::validate() const {
  FP8RL_REQUIRE(std::isfinite(eps_clip) && eps_clip >= 0, "eps_clip: ", eps_clip);
  FP8RL_REQUIRE(std::isfinite(clip_high()) && clip_high() >= 0, "eps_clip_high: ", clip_high());
  FP8RL_REQUIRE(!eps_clip_c || (std::isfinite(*eps_clip_c) && *eps_clip_c > 1.0),
                "eps_clip_c: ", eps_clip_c.value_or(0), " must be > 1");
  FP8RL_REQUIRE(tis_clip_low >= 0 && tis_clip_low <= tis_clip, "tis_clip_low ", tis_clip_low,
                " and tis_clip ", tis_clip);
  FP8RL_REQUIRE(std::isfinite(kl_loss_coef) && kl_loss_coef >= 0, "kl_loss_coef: ", kl_loss_coef);
  FP8RL_REQUIRE(std::isfinite(entropy_coef) && entropy_coef >= 0, "entropy_coef: ", entropy_coef);
  return absl::OkStatus();
}

absl::StatusOr<PolicyLossResult> policy_loss(const PolicyLossConfig& config,
                                             const PolicyLossInputs& in) {
  FP8RL_RETURN_IF_ERROR(config.validate());
  const size_t n = in.log_probs.size();
  FP8RL_RETURN_IF_ERROR(check_length(in.entropy, n, "entropy"));
  FP8RL_RETURN_IF_ERROR(check_length(in.old_log_probs, n, "old_log_probs"));
  FP8RL_RETURN_IF_ERROR(check_length(in.advantages, n, "advantages"));
  FP8RL_RETURN_IF_ERROR(check_length(in.loss_mask, n, "loss_mask"));
  const bool has_rollout = !in.rollout_log_probs.empty();
  if (has_rollout)
    FP8RL_RETURN_IF_ERROR(check_length(in.rollout_log_probs, n, "rollout_log_probs"));
  FP8RL_REQUIRE(!config.use_tis || has_rollout, "policy loss: use_tis needs rollout_log_probs");
  if (config.use_kl_loss) {
    FP8RL_RETURN_IF_ERROR(check_length(in.ref_log_probs, n, "ref_log_probs"));
  }
  const auto& off = in.sample_offsets;
  FP8RL_REQUIRE(!off.empty() && off.front() == 0 && size_t(off.back()) == n,
                "policy loss: sample_offsets must run from 0 to the token count ", n);
  for (size_t i = 0; i + 1 < off.size(); ++i) {
    FP8RL_REQUIRE(off[i + 1] >= off[i], "policy loss: sample_offsets decrease at sample ", i);
  }

  // weight[t]: the reduction's factor for token t, so that every reduced quantity is Σ w·q.
  const bool per_sample = config.aggregation == LossAggregation::kPerSampleTokenMean;
  double denominator = in.denominator;
  if (denominator <= 0) {
    denominator = 0;
    if (per_sample) {
      denominator = double(off.size() - 1);
    } else {
      for (float m : in.loss_mask) denominator += m;
    }
  }
  std::vector<double> weight(n, 0.0);
  for (size_t i = 0; i + 1 < off.size(); ++i) {
    double mask_sum = 0;
    for (int64_t t = off[i]; t < off[i + 1]; ++t) mask_sum += in.loss_mask[t];
    const double scale =
        per_sample ? std::max(mask_sum, 1.0) * denominator : std::max(denominator, 1.0);
    for (int64_t t = off[i]; t < off[i + 1]; ++t) weight[t] = in.loss_mask[t] / scale;
  }

  const double lo = 1.0 - config.eps_clip, hi = 1.0 + config.clip_high();
  PolicyLossResult out;
  out.dlog_probs.assign(n, 0.0f);
  out.dentropy.assign(n, 0.0f);
  double pg_loss = 0, clipfrac = 0, ppo_kl = 0, entropy = 0, kl_loss = 0;
  double tis = 0, tis_clipfrac = 0, tis_abs = 0, abs_diff = 0;
  for (size_t t = 0; t < n; ++t) {
    const double w = weight[t];
    if (w == 0) continue;
    const double logp = in.log_probs[t], old = in.old_log_probs[t], a = in.advantages[t];
    const double kl = old - logp;
    const double ratio = std::exp(-kl);
    const double pg1 = -a * ratio;
    const double pg2 = -a * std::clamp(ratio, lo, hi);
    double pg = std::max(pg1, pg2);
    bool unclipped = !(pg2 > pg1);
    if (config.eps_clip_c && a < 0) {
      const double pg3 = -a * *config.eps_clip_c;
      if (pg3 < pg) {
        pg = pg3;
        unclipped = false;
      }
    }
    double tis_weight = 1.0;
    if (has_rollout) {
      const double diff = old - in.rollout_log_probs[t];
      abs_diff += w * std::abs(diff);
      if (config.use_tis) {
        const double raw = std::exp(diff);
        tis_weight = std::clamp(raw, config.tis_clip_low, config.tis_clip);
        tis += w * raw;
        tis_clipfrac += w * (tis_weight != raw ? 1.0 : 0.0);
        tis_abs += w * std::abs(raw - 1.0);
      }
    }
    pg_loss += w * pg * tis_weight;
    clipfrac += w * (pg2 > pg1 ? 1.0 : 0.0);
    ppo_kl += w * kl;
    entropy += w * in.entropy[t];
    double dlogp = unclipped ? -a * ratio * tis_weight : 0.0;
    if (config.use_kl_loss) {
      const KlTerm k = approx_kl(config.kl_loss_type, logp - in.ref_log_probs[t]);
      kl_loss += w * k.value;
      dlogp += config.kl_loss_coef * k.grad;
    }
    out.dlog_probs[t] = float(w * dlogp);
    out.dentropy[t] = float(-config.entropy_coef * w);
  }

  out.loss = pg_loss - config.entropy_coef * entropy;
  if (config.use_kl_loss) out.loss += config.kl_loss_coef * kl_loss;
  auto& m = out.metrics;
  m["loss"] = out.loss;
  m["pg_loss"] = pg_loss;
  m["pg_clipfrac"] = clipfrac;
  m["ppo_kl"] = ppo_kl;
  m["entropy_loss"] = entropy;
  if (config.use_kl_loss) m["kl_loss"] = kl_loss;
  if (config.use_tis) {
    m["tis"] = tis;
    m["tis_clipfrac"] = tis_clipfrac;
    m["tis_abs"] = tis_abs;
  }
  if (has_rollout) m["train_rollout_logprob_abs_diff"] = abs_diff;
  return out;
}

void accumulate_metrics(const std::map<std::string, double>& from,
                        std::map<std::string, double>* into) {
  for (const auto& [name, value] : from) (*into)[name] += value;
}

}  // namespace fp8rl
