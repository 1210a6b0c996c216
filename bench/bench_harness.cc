// The benchmark harness: event timing, the table and the JSON file.
#include "bench/bench_harness.h"

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_check.h"
#include "core/status.h"

namespace fp8rl::bench {

namespace {

// The per-step times (ms) of `iters` steps after `warmup`, one event pair per step.
absl::StatusOr<std::vector<double>> step_times(cudaStream_t stream, int warmup, int iters,
                                               const std::function<absl::Status(int)>& step) {
  FP8RL_REQUIRE(iters > 0, "time_steps: iters=", iters);
  for (int i = 0; i < warmup; ++i) FP8RL_RETURN_IF_ERROR(step(i));
  std::vector<cudaEvent_t> ev(size_t(iters) + 1);
  for (auto& e : ev) FP8RL_CUDA_CHECK(cudaEventCreate(&e));
  absl::Status st =
      cuda_status(cudaEventRecord(ev[0], stream), "cudaEventRecord", __FILE__, __LINE__);
  for (int i = 0; i < iters && st.ok(); ++i) {
    st = step(warmup + i);
    if (st.ok())
      st = cuda_status(cudaEventRecord(ev[size_t(i) + 1], stream), "cudaEventRecord", __FILE__,
                       __LINE__);
  }
  if (st.ok())
    st = cuda_status(cudaEventSynchronize(ev.back()), "cudaEventSynchronize", __FILE__, __LINE__);
  std::vector<double> t;
  for (int i = 0; i < iters && st.ok(); ++i) {
    float ms = 0;
    st = cuda_status(cudaEventElapsedTime(&ms, ev[size_t(i)], ev[size_t(i) + 1]),
                     "cudaEventElapsedTime", __FILE__, __LINE__);
    t.push_back(ms);
  }
  for (auto& e : ev) (void)cudaEventDestroy(e);
  if (!st.ok()) return st;
  return t;
}

Timing summarize(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  Timing r;
  r.median_ms = t[t.size() / 2];
  r.min_ms = t.front();
  r.max_ms = t.back();
  r.iters = int(t.size());
  return r;
}

}  // namespace

absl::StatusOr<Timing> time_steps(cudaStream_t stream, int warmup, int iters,
                                  const std::function<absl::Status(int)>& step) {
  FP8RL_ASSIGN_OR_RETURN(std::vector<double> t, step_times(stream, warmup, iters, step));
  return summarize(std::move(t));
}

absl::StatusOr<std::pair<Timing, Timing>> time_interleaved(
    cudaStream_t stream, int warmup, int iters, int rounds,
    const std::function<absl::Status(int)>& baseline,
    const std::function<absl::Status(int)>& candidate) {
  const int n = iters * rounds;
  FP8RL_REQUIRE(n > 0, "time_interleaved: iters * rounds = ", n);
  for (int i = 0; i < warmup; ++i) {
    FP8RL_RETURN_IF_ERROR(baseline(i));
    FP8RL_RETURN_IF_ERROR(candidate(i));
  }
  std::vector<cudaEvent_t> ev(2 * size_t(n) + 1);
  for (auto& e : ev) FP8RL_CUDA_CHECK(cudaEventCreate(&e));
  absl::Status st =
      cuda_status(cudaEventRecord(ev[0], stream), "cudaEventRecord", __FILE__, __LINE__);
  for (int i = 0; i < n && st.ok(); ++i) {
    st = baseline(warmup + i);
    if (st.ok())
      st = cuda_status(cudaEventRecord(ev[2 * size_t(i) + 1], stream), "cudaEventRecord", __FILE__,
                       __LINE__);
    if (st.ok()) st = candidate(warmup + i);
    if (st.ok())
      st = cuda_status(cudaEventRecord(ev[2 * size_t(i) + 2], stream), "cudaEventRecord", __FILE__,
                       __LINE__);
  }
  if (st.ok())
    st = cuda_status(cudaEventSynchronize(ev.back()), "cudaEventSynchronize", __FILE__, __LINE__);
  std::vector<double> tb, tc;
  for (int i = 0; i < 2 * n && st.ok(); ++i) {
    float ms = 0;
    st = cuda_status(cudaEventElapsedTime(&ms, ev[size_t(i)], ev[size_t(i) + 1]),
                     "cudaEventElapsedTime", __FILE__, __LINE__);
    (i % 2 == 0 ? tb : tc).push_back(ms);
  }
  for (auto& e : ev) (void)cudaEventDestroy(e);
  if (!st.ok()) return st;
  return std::make_pair(summarize(std::move(tb)), summarize(std::move(tc)));
}

void Report::print_table(std::FILE* out) const {
  std::fprintf(out, "%-6s %-34s %-22s %10s %10s %-8s %10s %7s %6s %s\n", "group", "name", "shape",
               "ms", "rate", "unit", "baseline", "ratio", "target", "");
  for (const Row& r : rows_) {
    std::fprintf(out, "%-6s %-34s %-22s %10.4f %10.1f %-8s %10.1f %7.3f %6.2f %s\n",
                 r.group.c_str(), r.name.c_str(), r.shape.c_str(), r.ms, r.rate, r.unit.c_str(),
                 r.baseline_rate, r.ratio(), r.target,
                 r.target <= 0 ? "" : (r.meets_target() ? "PASS" : "MISS"));
  }
}

absl::Status Report::write_json(const std::string& path) const {
  nlohmann::json j = meta_;
  j["rows"] = nlohmann::json::array();
  for (const Row& r : rows_) {
    nlohmann::json row = {{"group", r.group},
                          {"name", r.name},
                          {"shape", r.shape},
                          {"unit", r.unit},
                          {"ms", r.ms},
                          {"rate", r.rate},
                          {"baseline", r.baseline},
                          {"baseline_rate", r.baseline_rate},
                          {"ratio", r.ratio()},
                          {"target", r.target},
                          {"meets_target", r.meets_target()}};
    row["extra"] = r.extra;
    j["rows"].push_back(row);
  }
  std::ofstream f(path);
  f << j.dump(2) << "\n";
  if (!f.good()) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

DeviceRuntime* open_device(const char* bench, Report& rep) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return nullptr;
  }
  absl::StatusOr<DeviceRuntime*> rt = DeviceRuntime::get(0);
  FP8RL_CHECK_OK(rt.status());
  rep.set_meta("device", (*rt)->info().to_string());
  std::printf("%s on %s\n", bench, (*rt)->info().to_string().c_str());
  return *rt;
}

}  // namespace fp8rl::bench
