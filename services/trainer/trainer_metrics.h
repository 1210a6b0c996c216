// The Prometheus series of `fp8rl trainer`, recorded through one hook per event. slime's train
// metrics become gauges fp8rl_train_<name> (fp8rl_train_loss, fp8rl_train_pg_loss, ...,
// fp8rl_train_grad_norm, fp8rl_train_tokens_per_second, fp8rl_train_step_time).
#pragma once

#include <cstdint>
#include <string>

#include "services/common/metrics.h"
#include "trainer/train_step.h"

namespace fp8rl {

class TrainerMetrics {
 public:
  // Registers every series in `registry` (which must outlive this), so a scrape before the first
  // step already lists them.
  explicit TrainerMetrics(MetricsRegistry* registry);

  // The model is loaded (or resumed) at optimizer step `step`.
  void on_model_loaded(int64_t step);
  // A Train call holds the model from on_train_begin to on_train_end (fp8rl_train_in_progress).
  void on_train_begin();
  void on_train_end();
  // One finished step over `samples` samples of `tokens` tokens (skipped or applied).
  void on_train(const TrainResult& result, int64_t tokens, int64_t samples, int64_t step);
  void on_weight_sync(int64_t weight_version, uint64_t bytes, double export_seconds,
                      double transfer_seconds);
  void on_checkpoint_saved(uint64_t bytes, double seconds);
  void on_checkpoint_failed();
  // Every RPC's outcome: fp8rl_trainer_requests_total{method, code}.
  void on_request(const std::string& method, const std::string& code);

 private:
  MetricsRegistry* registry_;
  Gauge& in_progress_;
  Gauge& step_;
  Counter& steps_;
  Counter& skipped_steps_;
  Counter& tokens_;
  Counter& samples_;
  Histogram& step_seconds_;
  Gauge& weight_version_;
  Counter& syncs_;
  Histogram& sync_seconds_;
  Gauge& sync_bytes_;
  Counter& checkpoints_;
  Counter& checkpoint_failures_;
  Gauge& checkpoint_seconds_;
  Gauge& checkpoint_bytes_;
};

}  // namespace fp8rl
