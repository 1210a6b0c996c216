// Prometheus metrics: counters, gauges (stored or computed at scrape time) and histograms, grouped
// into families by name, rendered in the text exposition format 0.0.4 that Prometheus and
// prometheus_client's parser read. Updates are lock-free (counters, gauges) or take one short lock
// (histograms), so request handlers can record from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace fp8rl {

// Label name/value pairs of one series, in the order given.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  // Adds v (>= 0; negative or NaN increments are ignored: a counter never goes down).
  void inc(double v = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double v);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `bounds` are the finite upper bounds, strictly increasing; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), the last one is +Inf
  double sum_ = 0;
};

// Owns every metric of a process (or of one test). Families are created on first use; asking again
// for the same name and labels returns the same series. A name reused with another type, or
// histogram bounds that differ from the family's, is a programming error (FP8RL_CHECK).
// Returned references live as long as the registry.
class MetricsRegistry {
 public:
  Counter& counter(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  // A gauge whose value is read from `fn` at every render() (queue lengths, cache usage, ...).
  // `fn` runs on the scraping thread and must be thread-safe.
  void gauge_fn(const std::string& name, const std::string& help, const MetricLabels& labels,
                std::function<double()> fn);
  Histogram& histogram(const std::string& name, const std::string& help,
                       const std::vector<double>& bounds, const MetricLabels& labels = {});

  // The exposition text (Content-Type: text/plain; version=0.0.4), families in creation order.
  std::string render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    MetricLabels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::function<double()> gauge_fn;
    std::unique_ptr<Histogram> histogram;
  };
  struct Family {
    std::string name, help;
    Type type;
    std::vector<double> bounds;
    std::vector<std::unique_ptr<Series>> series;
  };
  Series& series(const std::string& name, const std::string& help, Type type,
                 const MetricLabels& labels, const std::vector<double>* bounds);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Family>> families_;
  std::map<std::string, Family*> by_name_;
};

// Prometheus' default latency buckets (seconds), as prometheus_client uses.
const std::vector<double>& default_latency_buckets();

}  // namespace fp8rl
