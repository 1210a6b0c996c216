// SGLang's metric families (services/rollout/rollout_metrics.h).
#include "services/rollout/rollout_metrics.h"

#include <memory>
#include <utility>
#include <vector>

namespace fp8rl {
namespace {

// SGLang's TokenizerMetricsCollector buckets (srt/metrics/collector.py).
const std::vector<double> kTtftBuckets = {0.1, 0.2, 0.4, 0.6, 0.8, 1,  2,   4,   6,
                                          8,   10,  20,  40,  60,  80, 100, 200, 400};
const std::vector<double> kE2eBuckets = {0.1, 0.2, 0.4, 0.6, 0.8, 1,   2,   4,   6,    8,    10,
                                         20,  40,  60,  80,  100, 200, 400, 600, 1200, 1800, 2400};
const std::vector<double> kItlBuckets = {0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025,
                                         0.030, 0.035, 0.040, 0.060, 0.080, 0.100, 0.200, 0.400,
                                         0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000};

}  // namespace

RolloutMetrics::RolloutMetrics(MetricsRegistry* r, const std::string& model_name,
                               std::function<SchedulerLoad()> load)
    : prompt_tokens_(r->counter("sglang:prompt_tokens_total", "Number of prefill tokens processed.",
                                {{"model_name", model_name}, {"engine_type", "unified"}})),
      generation_tokens_(r->counter("sglang:generation_tokens_total",
                                    "Number of generation tokens processed.",
                                    {{"model_name", model_name}, {"engine_type", "unified"}})),
      requests_(r->counter("sglang:num_requests_total", "Number of requests processed.",
                           {{"model_name", model_name}, {"engine_type", "unified"}})),
      aborted_(r->counter("sglang:num_aborted_requests_total", "Number of requests aborted.",
                          {{"model_name", model_name}, {"engine_type", "unified"}})),
      ttft_(r->histogram("sglang:time_to_first_token_seconds",
                         "Histogram of time to first token in seconds.", kTtftBuckets,
                         {{"model_name", model_name}, {"engine_type", "unified"}})),
      itl_(r->histogram("sglang:inter_token_latency_seconds",
                        "Histogram of inter-token latency in seconds.", kItlBuckets,
                        {{"model_name", model_name}, {"engine_type", "unified"}})),
      e2e_(r->histogram("sglang:e2e_request_latency_seconds",
                        "Histogram of End-to-end request latency in seconds", kE2eBuckets,
                        {{"model_name", model_name}, {"engine_type", "unified"}})) {
  // No prefix cache: no prompt token is ever cached, but the series exists as in SGLang.
  r->counter("sglang:cached_tokens_total", "Number of cached prompt tokens.",
             {{"model_name", model_name}, {"engine_type", "unified"}});
  const MetricLabels labels = {
      {"model_name", model_name}, {"engine_type", "unified"}, {"tp_rank", "0"}, {"pp_rank", "0"}};
  // One snapshot feeds every gauge of a scrape only approximately (each reads its own); the
  // values are gauges, so a scrape racing a step is fine.
  auto shared = std::make_shared<std::function<SchedulerLoad()>>(std::move(load));
  const auto gauge = [&](const char* name, const char* help, double (*pick)(const SchedulerLoad&)) {
    r->gauge_fn(name, help, labels, [shared, pick] { return pick((*shared)()); });
  };
  gauge("sglang:num_running_reqs", "The number of running requests.",
        [](const SchedulerLoad& l) { return double(l.running_reqs); });
  gauge("sglang:num_used_tokens", "The number of used tokens.",
        [](const SchedulerLoad& l) { return double(l.used_tokens); });
  gauge("sglang:token_usage", "The token usage.", [](const SchedulerLoad& l) {
    return l.max_total_tokens > 0 ? double(l.used_tokens) / double(l.max_total_tokens) : 0.0;
  });
  gauge("sglang:gen_throughput", "The generation throughput (token/s).",
        [](const SchedulerLoad& l) { return l.gen_throughput; });
  gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.",
        [](const SchedulerLoad& l) { return double(l.queued_reqs); });
  gauge("sglang:cache_hit_rate", "The prefix cache hit rate.",
        [](const SchedulerLoad&) { return 0.0; });  // no prefix cache
  gauge("sglang:max_total_num_tokens", "Maximum total number of tokens in the KV cache pool.",
        [](const SchedulerLoad& l) { return double(l.max_total_tokens); });
}

void RolloutMetrics::on_first_token(double seconds) { ttft_.observe(seconds); }

void RolloutMetrics::on_next_token(double seconds) { itl_.observe(seconds); }

void RolloutMetrics::on_finished(int64_t prompt_tokens, int64_t completion_tokens,
                                 double e2e_seconds) {
  prompt_tokens_.inc(double(prompt_tokens));
  generation_tokens_.inc(double(completion_tokens));
  requests_.inc();
  e2e_.observe(e2e_seconds);
}

void RolloutMetrics::on_aborted() { aborted_.inc(); }

}  // namespace fp8rl
