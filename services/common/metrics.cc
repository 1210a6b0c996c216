#include "services/common/metrics.h"

#include <cmath>
#include <cstdio>

#include "core/status.h"

namespace fp8rl {
namespace {

void atomic_add(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

// Prometheus text format numbers: shortest round-trip form, and its spellings of the specials.
std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  // Prefer the short form when it round-trips (e.g. 0.1 rather than 0.10000000000000001).
  char short_buf[32];
  std::snprintf(short_buf, sizeof(short_buf), "%.15g", v);
  return std::strtod(short_buf, nullptr) == v ? short_buf : buf;
}

// Label values escape backslash, double quote and newline; HELP text escapes backslash and newline.
std::string escape(const std::string& s, bool quote) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '"' && quote) out += "\\\"";
    else out += c;
  }
  return out;
}

std::string label_text(const MetricLabels& labels, const std::string& extra_name = "",
                       const std::string& extra_value = "") {
  if (labels.empty() && extra_name.empty()) return "";
  std::string out = "{";
  bool first = true;
  auto add = [&](const std::string& k, const std::string& v) {
    if (!first) out += ",";
    first = false;
    out += k + "=\"" + escape(v, true) + "\"";
  };
  for (const auto& [k, v] : labels) add(k, v);
  if (!extra_name.empty()) add(extra_name, extra_value);
  return out + "}";
}

}  // namespace

void Counter::inc(double v) {
  if (!(v >= 0)) return;
  atomic_add(value_, v);
}

void Gauge::add(double v) { atomic_add(value_, v); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {
  for (size_t i = 1; i < bounds_.size(); ++i) FP8RL_CHECK(bounds_[i - 1] < bounds_[i]);
}

void Histogram::observe(double v) {
  size_t b = 0;
  while (b < bounds_.size() && v > bounds_[b]) ++b;  // le semantics: v <= bound
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[b];
  sum_ += v;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t running = 0;
  for (uint64_t c : counts_) {
    running += c;
    s.cumulative.push_back(running);
  }
  s.sum = sum_;
  s.count = running;
  return s;
}

MetricsRegistry::Series& MetricsRegistry::series(const std::string& name, const std::string& help,
                                                 Type type, const MetricLabels& labels,
                                                 const std::vector<double>* bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  Family* family;
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    families_.push_back(std::make_unique<Family>(Family{name, help, type, {}, {}}));
    family = families_.back().get();
    if (bounds) family->bounds = *bounds;
    by_name_[name] = family;
  } else {
    family = it->second;
    FP8RL_CHECK(family->type == type);
    FP8RL_CHECK(!bounds || family->bounds == *bounds);
  }
  for (auto& s : family->series)
    if (s->labels == labels) return *s;
  family->series.push_back(std::make_unique<Series>());
  Series& s = *family->series.back();
  s.labels = labels;
  return s;
}

Counter& MetricsRegistry::counter(const std::string& name, const std::string& help,
                                  const MetricLabels& labels) {
  Series& s = series(name, help, Type::kCounter, labels, nullptr);
  std::lock_guard<std::mutex> lock(mu_);
  if (!s.counter) s.counter = std::make_unique<Counter>();
  return *s.counter;
}

Gauge& MetricsRegistry::gauge(const std::string& name, const std::string& help,
                              const MetricLabels& labels) {
  Series& s = series(name, help, Type::kGauge, labels, nullptr);
  std::lock_guard<std::mutex> lock(mu_);
  FP8RL_CHECK(!s.gauge_fn);
  if (!s.gauge) s.gauge = std::make_unique<Gauge>();
  return *s.gauge;
}

void MetricsRegistry::gauge_fn(const std::string& name, const std::string& help,
                               const MetricLabels& labels, std::function<double()> fn) {
  Series& s = series(name, help, Type::kGauge, labels, nullptr);
  std::lock_guard<std::mutex> lock(mu_);
  FP8RL_CHECK(!s.gauge);
  s.gauge_fn = std::move(fn);
}

Histogram& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                      const std::vector<double>& bounds,
                                      const MetricLabels& labels) {
  Series& s = series(name, help, Type::kHistogram, labels, &bounds);
  std::lock_guard<std::mutex> lock(mu_);
  if (!s.histogram) s.histogram = std::make_unique<Histogram>(bounds);
  return *s.histogram;
}

std::string MetricsRegistry::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& f : families_) {
    static const char* kTypeNames[] = {"counter", "gauge", "histogram"};
    out += "# HELP " + f->name + " " + escape(f->help, false) + "\n";
    out += "# TYPE " + f->name + " " + kTypeNames[int(f->type)] + "\n";
    for (const auto& s : f->series) {
      switch (f->type) {
        case Type::kCounter:
          // prometheus_client names the sample <family>_total; keep families named *_total so the
          // sample and family names agree (the way SGLang's counters are named).
          out += f->name + label_text(s->labels) + " " +
                 format_value(s->counter ? s->counter->value() : 0.0) + "\n";
          break;
        case Type::kGauge: {
          double v = s->gauge_fn ? s->gauge_fn() : (s->gauge ? s->gauge->value() : 0.0);
          out += f->name + label_text(s->labels) + " " + format_value(v) + "\n";
          break;
        }
        case Type::kHistogram: {
          Histogram::Snapshot h = s->histogram ? s->histogram->snapshot()
                                               : Histogram(f->bounds).snapshot();
          for (size_t b = 0; b <= h.bounds.size(); ++b) {
            std::string le = b < h.bounds.size() ? format_value(h.bounds[b]) : "+Inf";
            out += f->name + "_bucket" + label_text(s->labels, "le", le) + " " +
                   std::to_string(h.cumulative[b]) + "\n";
          }
          out += f->name + "_sum" + label_text(s->labels) + " " + format_value(h.sum) + "\n";
          out += f->name + "_count" + label_text(s->labels) + " " + std::to_string(h.count) + "\n";
          break;
        }
      }
    }
  }
  return out;
}

const std::vector<double>& default_latency_buckets() {
  static const std::vector<double> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
                                               0.5,   0.75, 1.0,   2.5,  5.0,   7.5, 10.0};
  return kBuckets;
}

}  // namespace fp8rl
