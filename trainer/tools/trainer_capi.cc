// fp8rl_trainer_capi: a C ABI over trainer/losses.h for the Python interop tests (ctypes).
//
// Returns 0 on success or an absl::StatusCode value, and then writes the status message,
// NUL-terminated and truncated to `err_len` bytes, into `err` (which may be null). Buffers are
// raw, caller-owned and contiguous.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "trainer/losses.h"

namespace {

int report(const absl::Status& s, char* err, int64_t err_len) {
  return fp8rl::status_to_c(s, err, err_len);
}

}  // namespace

extern "C" {

// PolicyLossConfig's fields; NaN in eps_clip_high / eps_clip_c means unset. kl_loss_type:
// 0 k1, 1 k2, 2 k3, 3 low_var_kl. token_mean: 0 per-sample token mean, 1 token mean.
struct Fp8rlLossConfig {
  double eps_clip, eps_clip_high, eps_clip_c;
  int32_t use_tis;
  double tis_clip_low, tis_clip;
  int32_t use_kl_loss;
  double kl_loss_coef;
  int32_t kl_loss_type;
  double entropy_coef;
  int32_t token_mean;
};

// policy_loss over n tokens of num_samples samples (offsets: num_samples + 1 entries). rollout and
// ref may be null. Writes the loss, dlogp[n], dentropy[n], and the metrics as "name=value\n"
// lines (%.17g) into `metrics` (NUL-terminated, truncated to metrics_len bytes).
int fp8rl_policy_loss(const Fp8rlLossConfig* c, int64_t n, const float* logp, const float* entropy,
                      const float* old, const float* adv, const float* mask, const float* rollout,
                      const float* ref, int64_t num_samples, const int64_t* offsets, double* loss,
                      float* dlogp, float* dentropy, char* metrics, int64_t metrics_len, char* err,
                      int64_t err_len) {
  if (c->kl_loss_type < 0 || c->kl_loss_type > 3)
    return report(absl::InvalidArgumentError(absl::StrCat("kl_loss_type ", c->kl_loss_type)), err,
                  err_len);
  fp8rl::PolicyLossConfig config;
  config.eps_clip = c->eps_clip;
  if (!std::isnan(c->eps_clip_high)) config.eps_clip_high = c->eps_clip_high;
  if (!std::isnan(c->eps_clip_c)) config.eps_clip_c = c->eps_clip_c;
  config.use_tis = c->use_tis != 0;
  config.tis_clip_low = c->tis_clip_low;
  config.tis_clip = c->tis_clip;
  config.use_kl_loss = c->use_kl_loss != 0;
  config.kl_loss_coef = c->kl_loss_coef;
  config.kl_loss_type = static_cast<fp8rl::KlLossType>(c->kl_loss_type);
  config.entropy_coef = c->entropy_coef;
  config.aggregation = c->token_mean ? fp8rl::LossAggregation::kTokenMean
                                     : fp8rl::LossAggregation::kPerSampleTokenMean;
  const size_t len = size_t(n);
  fp8rl::PolicyLossInputs in;
  in.log_probs = {logp, len};
  in.entropy = {entropy, len};
  in.old_log_probs = {old, len};
  in.advantages = {adv, len};
  in.loss_mask = {mask, len};
  if (rollout != nullptr) in.rollout_log_probs = {rollout, len};
  if (ref != nullptr) in.ref_log_probs = {ref, len};
  in.sample_offsets = {offsets, size_t(num_samples + 1)};
  auto r = fp8rl::policy_loss(config, in);
  if (!r.ok()) return report(r.status(), err, err_len);
  *loss = r->loss;
  std::copy(r->dlog_probs.begin(), r->dlog_probs.end(), dlogp);
  std::copy(r->dentropy.begin(), r->dentropy.end(), dentropy);
  std::string text;
  char value[32];
  for (const auto& [name, v] : r->metrics) {
    std::snprintf(value, sizeof(value), "%.17g", v);
    absl::StrAppend(&text, name, "=", value, "\n");
  }
  if (metrics != nullptr && metrics_len > 0) {
    const size_t m = std::min(text.size(), size_t(metrics_len - 1));
    std::memcpy(metrics, text.data(), m);
    metrics[m] = '\0';
  }
  return 0;
}

}  // extern "C"
