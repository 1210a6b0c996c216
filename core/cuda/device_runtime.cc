// Per-device CUDA runtime object: creation, device properties and the plan cache.
#include "core/cuda/device_runtime.h"

#include <cublas_api.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/cuda/cublas_check.h"
#include "core/cuda/cuda_check.h"

namespace fp8rl {

std::string DeviceInfo::to_string() const {
  return absl::StrCat("cuda:", device, " ", name, " sm_", cc_major, cc_minor, " SMs=", sm_count,
                      " L2=", l2_bytes >> 20, "MiB mem=", global_mem_bytes >> 30,
                      "GiB cublasLt=", cublaslt_version, " runtime=", cuda_runtime_version,
                      " driver=", cuda_driver_version);
}

LtPlan::~LtPlan() {
  if (op) cublasLtMatmulDescDestroy(op);
  for (cublasLtMatrixLayout_t l : {a, b, c, d})
    if (l) cublasLtMatrixLayoutDestroy(l);
}

absl::StatusOr<LtPlan*> LtPlanCache::get_or_create(const LtPlanKey& key, const Factory& make) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();
  absl::StatusOr<std::unique_ptr<LtPlan>> plan = make();
  if (!plan.ok()) return plan.status();
  LtPlan* raw = plan->get();
  plans_.emplace(key, std::move(*plan));
  return raw;
}

size_t LtPlanCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return plans_.size();
}

absl::Status DeviceRuntime::init(int device, size_t workspace_bytes) {
  int count = 0;
  FP8RL_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (device < 0 || device >= count)
    return absl::NotFoundError(
        absl::StrCat("cuda:", device, " does not exist (", count, " CUDA devices)"));
  int prev = 0;
  FP8RL_CUDA_CHECK(cudaGetDevice(&prev));
  FP8RL_CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp p{};
  absl::Status st = cuda_status(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties",
                                __FILE__, __LINE__);
  if (st.ok()) {
    info_.device = device;
    info_.name = p.name;
    info_.cc_major = p.major;
    info_.cc_minor = p.minor;
    info_.sm_count = p.multiProcessorCount;
    info_.l2_bytes = p.l2CacheSize;
    info_.global_mem_bytes = int64_t(p.totalGlobalMem);
    info_.max_smem_per_block_optin = int(p.sharedMemPerBlockOptin);
    info_.cublaslt_version = cublasLtGetVersion();
    cudaRuntimeGetVersion(&info_.cuda_runtime_version);
    cudaDriverGetVersion(&info_.cuda_driver_version);
    st = cuda_status(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                     "cudaStreamCreateWithFlags", __FILE__, __LINE__);
  }
  if (st.ok()) st = cublas_status(cublasLtCreate(&lt_), "cublasLtCreate", __FILE__, __LINE__);
  if (st.ok() && workspace_bytes > 0) {
    st = cuda_status(cudaMalloc(&workspace_, workspace_bytes), "cudaMalloc(workspace)", __FILE__,
                     __LINE__);
    if (st.ok()) workspace_bytes_ = workspace_bytes;
  }
  cudaSetDevice(prev);
  return st;
}

DeviceRuntime::~DeviceRuntime() {
  int prev = 0;
  cudaGetDevice(&prev);
  cudaSetDevice(info_.device);
  if (stream_) cudaStreamSynchronize(stream_);
  if (lt_) cublasLtDestroy(lt_);
  if (workspace_) cudaFree(workspace_);
  if (stream_) cudaStreamDestroy(stream_);
  cudaSetDevice(prev);
}

absl::StatusOr<std::unique_ptr<DeviceRuntime>> DeviceRuntime::create(int device,
                                                                     size_t workspace_bytes) {
  std::unique_ptr<DeviceRuntime> rt(new DeviceRuntime());
  absl::Status st = rt->init(device, workspace_bytes);
  if (!st.ok()) return st;
  return rt;
}

absl::StatusOr<DeviceRuntime*> DeviceRuntime::get(int device) {
  static std::mutex mu;
  static std::vector<DeviceRuntime*>* runtimes = new std::vector<DeviceRuntime*>();  // leaked
  std::lock_guard<std::mutex> lock(mu);
  if (device >= 0 && size_t(device) < runtimes->size() && (*runtimes)[device])
    return (*runtimes)[device];
  absl::StatusOr<std::unique_ptr<DeviceRuntime>> rt = create(device);
  if (!rt.ok()) return rt.status();
  if (runtimes->size() <= size_t(device)) runtimes->resize(device + 1, nullptr);
  (*runtimes)[device] = rt->release();
  return (*runtimes)[device];
}

absl::StatusOr<DeviceRuntime*> DeviceRuntime::current() {
  int device = 0;
  FP8RL_CUDA_CHECK(cudaGetDevice(&device));
  return get(device);
}

absl::Status check_blockscaled_support(const DeviceInfo& info) {
#if CUBLAS_VERSION < 120900
  return absl::FailedPreconditionError(
      absl::StrCat("block-scaled FP8 GEMM needs cuBLASLt >= 12.9 at compile time; built against ",
                   CUBLAS_VERSION));
#else
  if (info.cc_major != 9 || info.cc_minor != 0)
    return absl::FailedPreconditionError(absl::StrCat(
        "block-scaled FP8 GEMM (cuBLASLt VEC128/BLK128x128 scales) needs a compute capability 9.0 "
        "(Hopper) device; ",
        info.to_string(), " is sm_", info.cc_major, info.cc_minor));
  if (info.cublaslt_version < 120900)
    return absl::FailedPreconditionError(absl::StrCat(
        "block-scaled FP8 GEMM needs cuBLASLt >= 12.9 at run time; the loaded cuBLASLt is ",
        info.cublaslt_version));
  return absl::OkStatus();
#endif
}

absl::Status DeviceRuntime::require_hopper_blockscaled() const {
  return check_blockscaled_support(info_);
}

}  // namespace fp8rl
