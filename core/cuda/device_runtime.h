// Per-device CUDA runtime object: one stream, the cuBLASLt handle and workspace, the device's
// properties, and a cache of cuBLASLt matmul plans keyed by problem shape.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fp8rl {

// What a kernel launcher or GEMM needs to know about a device, read once.
struct DeviceInfo {
  int device = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  int64_t l2_bytes = 0;
  int64_t global_mem_bytes = 0;
  int max_smem_per_block_optin = 0;
  size_t cublaslt_version = 0;  // cublasLtGetVersion(): 130100 for cuBLAS 13.1.0
  int cuda_runtime_version = 0;
  int cuda_driver_version = 0;

  std::string to_string() const;
};

// FailedPrecondition unless `info` describes a compute capability 9.0 (Hopper) device and a
// cuBLASLt of at least 12.9 (compile time and run time): what the VEC128 / BLK128x128 block-scaled
// FP8 GEMMs need. A free function so that tests can feed it other devices.
absl::Status check_blockscaled_support(const DeviceInfo& info);

// A cached cuBLASLt problem: operation and matrix layout descriptors plus the chosen algorithm.
// Owns the descriptors. `mu` serialises the per-call attribute updates (scale pointers) with the
// enqueue, so one plan may be used from several threads.
struct LtPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_bytes = 0;  // the algorithm's workspace need (<= the runtime's workspace)
  int algo_index = 0;          // position in `candidates` (autotuning may change it)
  std::vector<cublasLtMatmulHeuristicResult_t> candidates;  // the heuristic's list, best first
  bool tuned = false;
  std::mutex mu;

  LtPlan() = default;
  LtPlan(const LtPlan&) = delete;
  LtPlan& operator=(const LtPlan&) = delete;
  ~LtPlan();
};

// A problem key: up to 16 integers chosen by the caller (dims, modes, dtypes, alignments).
struct LtPlanKey {
  std::array<int64_t, 16> f{};
  bool operator==(const LtPlanKey&) const = default;
};
struct LtPlanKeyHash {
  size_t operator()(const LtPlanKey& k) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t v : k.f) h = (h ^ uint64_t(v)) * 1099511628211ull;
    return size_t(h);
  }
};

// Thread-safe map from key to plan. Plans live as long as the cache; pointers stay valid.
class LtPlanCache {
 public:
  using Factory = std::function<absl::StatusOr<std::unique_ptr<LtPlan>>()>;
  // The plan of `key`, built by `make` on first use (under the cache lock; make must not re-enter).
  absl::StatusOr<LtPlan*> get_or_create(const LtPlanKey& key, const Factory& make);
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<LtPlanKey, std::unique_ptr<LtPlan>, LtPlanKeyHash> plans_;
};

class DeviceRuntime {
 public:
  static constexpr size_t kDefaultWorkspaceBytes = size_t(32) << 20;  // cuBLAS's advice for Hopper

  // The process-wide runtime of `device`, created on first use (thread-safe) and never destroyed
  // (its stream and handle may be in use until exit). NotFound for a device that does not exist.
  static absl::StatusOr<DeviceRuntime*> get(int device);
  // get() of the calling thread's current device.
  static absl::StatusOr<DeviceRuntime*> current();
  // A runtime owned by the caller (tools, tests); its destructor frees the stream, handle and
  // buffers after synchronising the stream.
  static absl::StatusOr<std::unique_ptr<DeviceRuntime>> create(
      int device, size_t workspace_bytes = kDefaultWorkspaceBytes);
  ~DeviceRuntime();
  DeviceRuntime(const DeviceRuntime&) = delete;
  DeviceRuntime& operator=(const DeviceRuntime&) = delete;

  const DeviceInfo& info() const { return info_; }
  int device() const { return info_.device; }
  // A non-blocking stream owned by the runtime; the default for its GEMMs.
  cudaStream_t stream() const { return stream_; }
  cublasLtHandle_t cublaslt() const { return lt_; }
  void* workspace() const { return workspace_; }
  size_t workspace_bytes() const { return workspace_bytes_; }
  LtPlanCache& plans() { return plans_; }

  // FailedPrecondition unless the device is compute capability 9.0 (Hopper) and the cuBLASLt
  // in use (compile and run time) is at least 12.9: what block-scaled FP8 GEMMs need.
  absl::Status require_hopper_blockscaled() const;

 private:
  DeviceRuntime() = default;
  absl::Status init(int device, size_t workspace_bytes);

  DeviceInfo info_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  LtPlanCache plans_;
};

}  // namespace fp8rl
