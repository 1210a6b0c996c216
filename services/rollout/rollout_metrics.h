// The Prometheus series of `fp8rl rollout` under SGLang's names and labels
// (reference/sglang.md §5), so dashboards and alerts written for SGLang work unchanged: request
// counters and latency histograms labelled {model_name, engine_type}, scheduler gauges labelled
// {model_name, engine_type, tp_rank, pp_rank}. Recorded through one hook per event.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "services/common/metrics.h"

namespace fp8rl {

// What the scheduler gauges read at scrape time (thread-safe snapshot).
struct SchedulerLoad {
  int64_t running_reqs = 0;      // sequences in the batch (paused ones included)
  int64_t queued_reqs = 0;       // sequences waiting for admission
  int64_t used_tokens = 0;       // KV tokens the caches hold
  int64_t max_total_tokens = 0;  // the admission budget of KV tokens
  double gen_throughput = 0.0;   // generated tokens per second over the last interval
};

class RolloutMetrics {
 public:
  // Registers every series in `registry` (which must outlive this) so the first scrape lists
  // them; `load` feeds the scheduler gauges and must be thread-safe.
  RolloutMetrics(MetricsRegistry* registry, const std::string& model_name,
                 std::function<SchedulerLoad()> load);

  // A sample's first token, `seconds` after its request arrived.
  void on_first_token(double seconds);
  // A later token of a sample, `seconds` after its previous one.
  void on_next_token(double seconds);
  // A sample finished (aborted ones included) after `e2e_seconds`.
  void on_finished(int64_t prompt_tokens, int64_t completion_tokens, double e2e_seconds);
  void on_aborted();

 private:
  Counter& prompt_tokens_;
  Counter& generation_tokens_;
  Counter& requests_;
  Counter& aborted_;
  Histogram& ttft_;
  Histogram& itl_;
  Histogram& e2e_;
};

}  // namespace fp8rl
