// Prometheus series of `fp8rl trainer` (services/trainer/trainer_metrics.h).
#include "services/trainer/trainer_metrics.h"

namespace fp8rl {
namespace {

// slime's train/ metrics (and perf step_time, tokens/s): gauges present from the first scrape.
constexpr const char* kTrainMetrics[] = {
    "loss",      "pg_loss", "pg_clipfrac",       "ppo_kl",    "entropy_loss",
    "kl_loss",   "tis",     "tis_clipfrac",      "tis_abs",   "train_rollout_logprob_abs_diff",
    "grad_norm", "lr",      "global_batch_size", "step_time", "tokens_per_second"};

Gauge& train_gauge(MetricsRegistry* r, const std::string& name) {
  return r->gauge("fp8rl_train_" + name, "slime's train/" + name + " of the last step");
}

}  // namespace

TrainerMetrics::TrainerMetrics(MetricsRegistry* r)
    : registry_(r),
      in_progress_(r->gauge("fp8rl_train_in_progress", "1 while a Train call runs")),
      step_(r->gauge("fp8rl_train_step", "Optimizer steps taken (the checkpoint iteration)")),
      steps_(r->counter("fp8rl_train_steps_total", "Train calls that applied an update")),
      skipped_steps_(r->counter("fp8rl_train_skipped_steps_total",
                                "Train calls whose update was skipped (non-finite loss or "
                                "gradient norm)")),
      tokens_(r->counter("fp8rl_train_tokens_total", "Tokens forwarded by Train calls")),
      samples_(r->counter("fp8rl_train_samples_total", "Samples trained on")),
      step_seconds_(r->histogram("fp8rl_train_step_seconds", "Wall time of a train step",
                                 {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600})),
      weight_version_(r->gauge("fp8rl_weight_version", "Weight version of the last sync")),
      syncs_(r->counter("fp8rl_weight_syncs_total", "Completed SyncWeights calls")),
      sync_seconds_(r->histogram("fp8rl_weight_sync_seconds",
                                 "Wall time of a weight sync (export + transfer)",
                                 default_latency_buckets())),
      sync_bytes_(r->gauge("fp8rl_weight_sync_bytes", "Tensor bytes of the last weight sync")),
      checkpoints_(r->counter("fp8rl_checkpoint_saves_total", "Checkpoints saved")),
      checkpoint_failures_(
          r->counter("fp8rl_checkpoint_save_failures_total", "Checkpoint saves that failed")),
      checkpoint_seconds_(
          r->gauge("fp8rl_checkpoint_save_seconds", "Wall time of the last checkpoint save")),
      checkpoint_bytes_(r->gauge("fp8rl_checkpoint_bytes", "Bytes of the last checkpoint")) {
  for (const char* name : kTrainMetrics) train_gauge(r, name);
}

void TrainerMetrics::on_model_loaded(int64_t step) { step_.set(double(step)); }

void TrainerMetrics::on_train_begin() { in_progress_.set(1); }

void TrainerMetrics::on_train_end() { in_progress_.set(0); }

void TrainerMetrics::on_train(const TrainResult& result, int64_t tokens, int64_t samples,
                              int64_t step) {
  for (const auto& [name, value] : result.metrics) train_gauge(registry_, name).set(value);
  (result.skipped ? skipped_steps_ : steps_).inc();
  tokens_.inc(double(tokens));
  samples_.inc(double(samples));
  step_.set(double(step));
  const auto it = result.metrics.find("step_time");
  if (it != result.metrics.end()) step_seconds_.observe(it->second);
}

void TrainerMetrics::on_weight_sync(int64_t weight_version, uint64_t bytes, double export_seconds,
                                    double transfer_seconds) {
  weight_version_.set(double(weight_version));
  syncs_.inc();
  sync_seconds_.observe(export_seconds + transfer_seconds);
  sync_bytes_.set(double(bytes));
}

void TrainerMetrics::on_checkpoint_saved(uint64_t bytes, double seconds) {
  checkpoints_.inc();
  checkpoint_seconds_.set(seconds);
  checkpoint_bytes_.set(double(bytes));
}

void TrainerMetrics::on_checkpoint_failed() { checkpoint_failures_.inc(); }

void TrainerMetrics::on_request(const std::string& method, const std::string& code) {
  registry_
      ->counter("fp8rl_trainer_requests_total", "gRPC calls by method and status code",
                {{"method", method}, {"code", code}})
      .inc();
}

}  // namespace fp8rl
