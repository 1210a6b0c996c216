// The exposition text is checked line by line against the format's rules; prometheus_client's
// parser reads the services' /metrics in the interop tests.
#include "services/common/metrics.h"

#include <cmath>
#include <limits>
#include <thread>

#include "tests/catch.h"

namespace fp8rl {
namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

TEST_CASE("counters and gauges render with HELP, TYPE and labels", "[metrics]") {
  MetricsRegistry r;
  r.counter("sglang:prompt_tokens_total", "Prompt tokens", {{"model_name", "m"}}).inc(3);
  r.counter("sglang:prompt_tokens_total", "Prompt tokens", {{"model_name", "m"}}).inc(4);
  r.counter("sglang:prompt_tokens_total", "Prompt tokens", {{"model_name", "m"}}).inc(-1);
  r.gauge("queue", "Queued \\ requests\nnow").set(2.5);
  double live = 7;
  r.gauge_fn("live", "computed", {{"q", "a\"b\\c\nd"}}, [&] { return live; });
  live = 8;
  const std::string t = r.render();
  CHECK(has_line(t, "# HELP sglang:prompt_tokens_total Prompt tokens"));
  CHECK(has_line(t, "# TYPE sglang:prompt_tokens_total counter"));
  CHECK(has_line(t, "sglang:prompt_tokens_total{model_name=\"m\"} 7"));
  CHECK(has_line(t, "# HELP queue Queued \\\\ requests\\nnow"));
  CHECK(has_line(t, "queue 2.5"));
  CHECK(has_line(t, "live{q=\"a\\\"b\\\\c\\nd\"} 8"));
  // Families come out in creation order.
  CHECK(t.find("sglang:prompt") < t.find("# TYPE queue"));
  CHECK(t.find("# TYPE queue") < t.find("# TYPE live"));
}

TEST_CASE("histograms are cumulative with le labels, +Inf, _sum and _count", "[metrics]") {
  MetricsRegistry r;
  Histogram& h = r.histogram("lat_seconds", "latency", {0.1, 1.0}, {{"op", "gen"}});
  for (double v : {0.05, 0.1, 0.5, 3.0}) h.observe(v);
  const std::string t = r.render();
  CHECK(has_line(t, "# TYPE lat_seconds histogram"));
  CHECK(has_line(t, "lat_seconds_bucket{op=\"gen\",le=\"0.1\"} 2"));
  CHECK(has_line(t, "lat_seconds_bucket{op=\"gen\",le=\"1\"} 3"));
  CHECK(has_line(t, "lat_seconds_bucket{op=\"gen\",le=\"+Inf\"} 4"));
  CHECK(has_line(t, "lat_seconds_sum{op=\"gen\"} 3.65"));
  CHECK(has_line(t, "lat_seconds_count{op=\"gen\"} 4"));
}

TEST_CASE("special values use the format's spellings", "[metrics]") {
  MetricsRegistry r;
  r.gauge("a", "a").set(std::numeric_limits<double>::infinity());
  r.gauge("b", "b").set(-std::numeric_limits<double>::infinity());
  r.gauge("c", "c").set(std::nan(""));
  r.gauge("d", "d").set(0.1);
  const std::string t = r.render();
  CHECK(has_line(t, "a +Inf"));
  CHECK(has_line(t, "b -Inf"));
  CHECK(has_line(t, "c NaN"));
  CHECK(has_line(t, "d 0.1"));
}

TEST_CASE("concurrent increments are not lost", "[metrics]") {
  MetricsRegistry r;
  Counter& c = r.counter("n_total", "n");
  Histogram& h = r.histogram("h", "h", default_latency_buckets());
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      for (int k = 0; k < 10000; ++k) {
        c.inc();
        h.observe(0.01);
      }
    });
  for (auto& th : threads) th.join();
  CHECK(c.value() == 40000);
  CHECK(h.snapshot().count == 40000);
}

}  // namespace
}  // namespace fp8rl
