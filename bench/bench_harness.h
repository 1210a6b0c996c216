// The benchmark harness: CUDA-event timing of an enqueued step (warm-up, median of many), rows of
// results with their same-run baseline and target, a printed table and a JSON file.
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/cuda/device_runtime.h"
#include "nlohmann/json.hpp"

namespace fp8rl::bench {

struct Timing {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int iters = 0;
};

// Runs step(i) `warmup` times, then `iters` times each between two events on `stream`; returns
// the median (and spread) of the per-iteration times. step enqueues work on `stream`; i counts
// from 0 so that the step can rotate among input sets.
absl::StatusOr<Timing> time_steps(cudaStream_t stream, int warmup, int iters,
                                  const std::function<absl::Status(int)>& step);

// Times `baseline` and `candidate` alternately, one step each, `rounds * iters` times (after
// `warmup` of each), so that both see the same clocks and temperature; returns their medians,
// baseline first.
absl::StatusOr<std::pair<Timing, Timing>> time_interleaved(
    cudaStream_t stream, int warmup, int iters, int rounds,
    const std::function<absl::Status(int)>& baseline,
    const std::function<absl::Status(int)>& candidate);

// One result: a rate (GB/s or TFLOP/s) and the same-run baseline rate it is compared with.
struct Row {
  std::string group;     // "quant" or "gemm"
  std::string name;      // what ran
  std::string shape;     // e.g. "8192x8192 bf16" or "16384x9728x2560"
  std::string unit;      // "GB/s" or "TFLOP/s"
  double ms = 0;         // median time of one step
  double rate = 0;       // in unit
  std::string baseline;  // what the ratio is against
  double baseline_rate = 0;
  double target = 0;  // required ratio (0: informational)
  nlohmann::json extra = nlohmann::json::object();

  double ratio() const { return baseline_rate > 0 ? rate / baseline_rate : 0; }
  bool meets_target() const { return target <= 0 || ratio() >= target; }
};

class Report {
 public:
  void add(Row row) { rows_.push_back(std::move(row)); }
  void set_meta(const std::string& key, nlohmann::json value) { meta_[key] = std::move(value); }
  const std::vector<Row>& rows() const { return rows_; }
  // A fixed-width table, one line a row, with PASS/MISS against the target.
  void print_table(std::FILE* out) const;
  absl::Status write_json(const std::string& path) const;

 private:
  std::vector<Row> rows_;
  nlohmann::json meta_ = nlohmann::json::object();
};

// The first CUDA device's runtime, with rep's "device" set and "<bench> on <device>" printed;
// nullptr, after printing "SKIPPED: no CUDA device", when there is none (the bench then exits 77,
// as the GPU tests do).
DeviceRuntime* open_device(const char* bench, Report& rep);

}  // namespace fp8rl::bench
