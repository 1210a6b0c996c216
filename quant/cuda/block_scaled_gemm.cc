// Block-scaled FP8 and BF16 GEMMs over cuBLASLt: the row-major -> column-major mapping, the
// constraint checks, plan creation and caching, scale repacking and autotuning.
#include "quant/cuda/block_scaled_gemm.h"

#include <cublasLt.h>

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/cuda/cublas_check.h"
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "quant/block_quant.h"

namespace fp8rl {
namespace {

constexpr int kMaxCandidates = 8;

// Largest power of two (<= 256, cuBLASLt's default assumption) dividing the address.
int64_t alignment_of(const void* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  int64_t a = 256;
  while (a > 1 && (u % uintptr_t(a)) != 0) a /= 2;
  return a;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

cudaDataType_t cuda_type(DType t) { return t == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF; }
int64_t out_size(DType t) { return t == DType::kF32 ? 4 : 2; }

int32_t scale_mode(ScaleTile t) {
  return t == ScaleTile::k1x128 ? int32_t(CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F)
                                : int32_t(CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F);
}

// What one cuBLASLt plan is built from (our orientation: D[m][n] = A[m,k] . B[n,k]^T).
struct Problem {
  bool fp8 = true;
  int64_t m = 0, n = 0, k = 0;
  ScaleTile a_tile = ScaleTile::k1x128, b_tile = ScaleTile::k128x128;
  DType out = DType::kBF16;
  bool accumulate = false;
  bool a_kmajor = false, b_kmajor = false;  // BF16 only: operands stored [k, rows]
  int64_t align_a = 256, align_b = 256, align_d = 256;

  LtPlanKey key() const {
    LtPlanKey k_;
    k_.f = {fp8 ? 1 : 2,
            m,
            n,
            k,
            int64_t(a_tile),
            int64_t(b_tile),
            int64_t(out),
            accumulate ? 1 : 0,
            align_a,
            align_b,
            align_d,
            a_kmajor ? 1 : 0,
            b_kmajor ? 1 : 0};
    return k_;
  }
  std::string to_string() const {
    return absl::StrCat(fp8 ? "fp8" : "bf16", " m=", m, " n=", n, " k=", k,
                        " out=", std::string(dtype_name(out)), " acc=", accumulate ? 1 : 0,
                        " kmajor(a,b)=", a_kmajor ? 1 : 0, ",", b_kmajor ? 1 : 0,
                        " align(a,b,d)=", align_a, ",", align_b, ",", align_d);
  }
};

template <typename T>
absl::Status set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& v) {
  FP8RL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(v)));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LtPlan>> make_plan(DeviceRuntime& rt, const Problem& p,
                                                  const float* a_scale, const float* b_scale) {
  auto plan = std::make_unique<LtPlan>();
  FP8RL_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Our B [n,k] row-major is cuBLAS's column-major [k,n] (TRANSA=T); stored [k,n] row-major it is
  // column-major [n,k] (TRANSA=N, ld=n). Likewise our A: [m,k] -> TRANSB=N; [k,m] -> TRANSB=T.
  FP8RL_RETURN_IF_ERROR(set_desc(plan->op, CUBLASLT_MATMUL_DESC_TRANSA,
                                 int32_t(p.b_kmajor ? CUBLAS_OP_N : CUBLAS_OP_T)));
  FP8RL_RETURN_IF_ERROR(set_desc(plan->op, CUBLASLT_MATMUL_DESC_TRANSB,
                                 int32_t(p.a_kmajor ? CUBLAS_OP_T : CUBLAS_OP_N)));
  const cudaDataType_t in = p.fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
  if (p.fp8) {
    // cuBLAS's A is our B and vice versa.
    FP8RL_RETURN_IF_ERROR(
        set_desc(plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, scale_mode(p.b_tile)));
    FP8RL_RETURN_IF_ERROR(
        set_desc(plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, scale_mode(p.a_tile)));
    FP8RL_RETURN_IF_ERROR(set_desc(plan->op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, int8_t(0)));
    FP8RL_RETURN_IF_ERROR(set_desc(plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                   static_cast<const void*>(b_scale)));
    FP8RL_RETURN_IF_ERROR(set_desc(plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                   static_cast<const void*>(a_scale)));
  }
  if (p.b_kmajor) {
    FP8RL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, in, uint64_t(p.n), uint64_t(p.k), p.n));
  } else {
    FP8RL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, in, uint64_t(p.k), uint64_t(p.n), p.k));
  }
  if (p.a_kmajor) {
    FP8RL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, in, uint64_t(p.m), uint64_t(p.k), p.m));
  } else {
    FP8RL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, in, uint64_t(p.k), uint64_t(p.m), p.k));
  }
  FP8RL_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&plan->c, cuda_type(p.out), uint64_t(p.n), uint64_t(p.m), p.n));
  FP8RL_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&plan->d, cuda_type(p.out), uint64_t(p.n), uint64_t(p.m), p.n));

  cublasLtMatmulPreference_t pref = nullptr;
  FP8RL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  std::unique_ptr<void, void (*)(void*)> pref_guard(pref, [](void* q) {
    cublasLtMatmulPreferenceDestroy(static_cast<cublasLtMatmulPreference_t>(q));
  });
  const uint64_t ws = rt.workspace_bytes();
  const uint32_t al_a = uint32_t(p.align_b), al_b = uint32_t(p.align_a),
                 al_cd = uint32_t(p.align_d);
  FP8RL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  FP8RL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
  FP8RL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
  FP8RL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_cd, sizeof(al_cd)));
  FP8RL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_cd, sizeof(al_cd)));

  cublasLtMatmulHeuristicResult_t results[kMaxCandidates] = {};
  int count = 0;
  const cublasStatus_t hs =
      cublasLtMatmulAlgoGetHeuristic(rt.cublaslt(), plan->op, plan->a, plan->b, plan->c, plan->d,
                                     pref, kMaxCandidates, results, &count);
  if (hs != CUBLAS_STATUS_SUCCESS && hs != CUBLAS_STATUS_NOT_SUPPORTED)
    return cublas_status(hs, "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
  for (int i = 0; i < count && hs == CUBLAS_STATUS_SUCCESS; ++i)
    if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= ws)
      plan->candidates.push_back(results[i]);
  if (plan->candidates.empty())
    return absl::InvalidArgumentError(
        absl::StrCat("cuBLASLt offers no algorithm for ", p.to_string(), " on ",
                     rt.info().to_string(), " (heuristic status ", cublasLtGetStatusName(hs), ")"));
  plan->algo = plan->candidates[0].algo;
  plan->workspace_bytes = plan->candidates[0].workspaceSize;
  plan->algo_index = 0;
  return plan;
}

GemmAlgoInfo info_of(const LtPlan& plan) {
  GemmAlgoInfo i;
  i.index = plan.algo_index;
  i.candidates = int(plan.candidates.size());
  i.tuned = plan.tuned;
  i.workspace_bytes = plan.workspace_bytes;
  return i;
}

// One cublasLtMatmul with the plan's algorithm (or `algo` when given). The caller holds plan.mu.
absl::Status matmul(DeviceRuntime& rt, LtPlan& plan, const cublasLtMatmulAlgo_t& algo, size_t ws,
                    const void* cu_a, const void* cu_b, void* d, bool accumulate,
                    cudaStream_t stream) {
  const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  FP8RL_CUBLAS_CHECK(cublasLtMatmul(rt.cublaslt(), plan.op, &alpha, cu_a, plan.a, cu_b, plan.b,
                                    &beta, d, plan.c, d, plan.d, &algo, rt.workspace(), ws,
                                    stream));
  return absl::OkStatus();
}

// Times `run(algo, ws)` for each candidate, round-robin (candidate 0, 1, ..., 0, 1, ...: the chip's
// clocks drift as it heats, and a candidate timed first would be favoured), and installs the best.
// Each candidate is judged by the median over rounds of its time divided by the heuristic's first
// choice's time in the same round, which cancels the drift between rounds, and takes over from the
// pick so far (the heuristic's first choice to begin with) only when at least kMinGain faster: on
// an H100 a plain median of 7 rounds once picked an algorithm 10% slower than the heuristic's
// (bench/NOTES.md). Caller holds plan.mu.
//
// A plan is tuned once per process: tuning it again (another caller, a warmer chip) could pick
// another algorithm and change the bits of results that should stay reproducible.
template <typename Run>
absl::StatusOr<GemmAlgoInfo> tune(LtPlan& plan, cudaStream_t stream, Run run) {
  if (plan.tuned) return info_of(plan);
  constexpr int kRounds = 9;
  constexpr float kMinGain = 0.01f;
  const int n = int(plan.candidates.size());
  std::vector<cudaEvent_t> ev(size_t(n) * kRounds * 2);
  for (auto& e : ev) FP8RL_CUDA_CHECK(cudaEventCreate(&e));
  std::unique_ptr<std::vector<cudaEvent_t>, void (*)(std::vector<cudaEvent_t>*)> guard(
      &ev, [](std::vector<cudaEvent_t>* v) {
        for (auto& e : *v) (void)cudaEventDestroy(e);
      });
  std::vector<bool> ok(size_t(n), true);
  for (int i = 0; i < n; ++i)  // warm-up; a candidate that cannot run is dropped
    for (int w = 0; w < 2 && ok[i]; ++w)
      ok[i] = run(plan.candidates[i].algo, plan.candidates[i].workspaceSize).ok();
  for (int r = 0; r < kRounds; ++r)
    for (int i = 0; i < n; ++i) {
      if (!ok[i]) continue;
      const size_t e = (size_t(r) * n + i) * 2;
      FP8RL_CUDA_CHECK(cudaEventRecord(ev[e], stream));
      FP8RL_RETURN_IF_ERROR(run(plan.candidates[i].algo, plan.candidates[i].workspaceSize));
      FP8RL_CUDA_CHECK(cudaEventRecord(ev[e + 1], stream));
    }
  FP8RL_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<std::vector<float>> ms(size_t(n), std::vector<float>(kRounds, 0.f));
  for (int i = 0; i < n; ++i)
    for (int r = 0; ok[i] && r < kRounds; ++r) {
      const size_t e = (size_t(r) * n + i) * 2;
      FP8RL_CUDA_CHECK(cudaEventElapsedTime(&ms[i][r], ev[e], ev[e + 1]));
    }
  auto median = [](std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  // Relative to candidate 0 when it ran, else plain times; the first that ran is the default.
  int best = -1;
  float best_score = 0.f;
  for (int i = 0; i < n; ++i) {
    if (!ok[i]) continue;
    std::vector<float> rel = ms[i];
    if (ok[0])
      for (int r = 0; r < kRounds; ++r) rel[r] /= std::max(ms[0][r], 1e-6f);
    const float score = median(std::move(rel));
    if (best < 0 || score < best_score * (1.f - kMinGain)) best = i, best_score = score;
  }
  if (best < 0) return absl::InternalError("autotune: no candidate algorithm ran");
  plan.algo = plan.candidates[best].algo;
  plan.workspace_bytes = plan.candidates[best].workspaceSize;
  plan.algo_index = best;
  plan.tuned = true;
  GemmAlgoInfo info = info_of(plan);
  info.tuned_ms = median(ms[best]);
  return info;
}

Problem fp8_problem(const GemmDesc& d, const void* a, const void* b, const void* out) {
  Problem p;
  p.fp8 = true;
  p.m = d.m, p.n = d.n, p.k = d.k;
  p.a_tile = d.a_tile, p.b_tile = d.b_tile;
  p.out = d.out_dtype;
  p.accumulate = d.accumulate;
  p.align_a = alignment_of(a), p.align_b = alignment_of(b), p.align_d = alignment_of(out);
  return p;
}

// The operands' scale pointers as cuBLASLt reads them. A 128x128 scale tensor must have rows
// padded to roundup(L, 4) floats, 16-byte aligned; one that is not is copied (zero-padded,
// stream-ordered) into a temporary freed on the same stream when this object dies. Move-only.
class LtScales {
 public:
  static absl::StatusOr<LtScales> make(const GemmDesc& d, const float* a_scale_inv,
                                       const float* b_scale_inv, cudaStream_t stream) {
    LtScales s;
    s.stream_ = stream;
    s.a = a_scale_inv;
    s.b = b_scale_inv;
    if (d.a_tile == ScaleTile::k128x128) {
      FP8RL_ASSIGN_OR_RETURN(s.a, s.padded(a_scale_inv, d.m, d.k, d.a_scale_ld, &s.tmp_a_));
    }
    if (d.b_tile == ScaleTile::k128x128) {
      FP8RL_ASSIGN_OR_RETURN(s.b, s.padded(b_scale_inv, d.n, d.k, d.b_scale_ld, &s.tmp_b_));
    }
    return s;
  }
  LtScales(LtScales&& o) noexcept
      : a(o.a),
        b(o.b),
        stream_(o.stream_),
        tmp_a_(std::exchange(o.tmp_a_, nullptr)),
        tmp_b_(std::exchange(o.tmp_b_, nullptr)) {}
  LtScales& operator=(LtScales&&) = delete;
  ~LtScales() {
    if (tmp_a_) cudaFreeAsync(tmp_a_, stream_);
    if (tmp_b_) cudaFreeAsync(tmp_b_, stream_);
  }

  // Points the plan's descriptor at these scales. cuBLAS's A is our B (row-major D = A.B^T is
  // column-major D^T = B.A^T), hence the swap. Call with plan->mu held.
  absl::Status bind(LtPlan& plan) const {
    FP8RL_RETURN_IF_ERROR(
        set_desc(plan.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(b)));
    return set_desc(plan.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(a));
  }

  const float* a = nullptr;
  const float* b = nullptr;

 private:
  LtScales() = default;
  absl::StatusOr<const float*> padded(const float* s, int64_t rows, int64_t k, int64_t ld,
                                      float** tmp) const {
    const int64_t L = ceil_div(k, kQuantBlock), L4 = round_up(L, 4);
    if (ld == 0) ld = L;
    if (ld == L4 && aligned16(s)) return s;
    const int64_t rb = ceil_div(rows, kQuantBlock);
    const size_t bytes = size_t(rb * L4) * sizeof(float);
    FP8RL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(tmp), bytes, stream_));
    FP8RL_CUDA_CHECK(cudaMemsetAsync(*tmp, 0, bytes, stream_));
    FP8RL_CUDA_CHECK(cudaMemcpy2DAsync(*tmp, size_t(L4) * 4, s, size_t(ld) * 4, size_t(L) * 4,
                                       size_t(rb), cudaMemcpyDeviceToDevice, stream_));
    return *tmp;
  }

  cudaStream_t stream_ = nullptr;
  float* tmp_a_ = nullptr;
  float* tmp_b_ = nullptr;
};

}  // namespace

absl::Status Bf16GemmDesc::validate() const {
  FP8RL_REQUIRE(m >= 0 && n >= 0 && k >= 0, "Bf16GemmDesc dims m=", m, " n=", n, " k=", k,
                " must be non-negative");
  FP8RL_REQUIRE(out_dtype == DType::kF32 || out_dtype == DType::kBF16,
                "Bf16GemmDesc.out_dtype must be float32 or bfloat16, got ",
                std::string(dtype_name(out_dtype)));
  return absl::OkStatus();
}

std::string Bf16GemmDesc::to_string() const {
  return absl::StrCat("Bf16GemmDesc{m=", m, ", n=", n, ", k=", k,
                      ", out=", std::string(dtype_name(out_dtype)),
                      ", accumulate=", accumulate ? 1 : 0, ", a_kmajor=", a_kmajor ? 1 : 0,
                      ", b_kmajor=", b_kmajor ? 1 : 0, "}");
}

std::string GemmAlgoInfo::to_string() const {
  return absl::StrCat("algo ", index, "/", candidates, tuned ? " (tuned" : " (heuristic",
                      tuned ? absl::StrCat(", ", tuned_ms, " ms)") : std::string(")"),
                      " workspace=", workspace_bytes);
}

absl::Status BlockScaledGemm::check(const GemmDesc& d, const void* a, const float* a_scale_inv,
                                    const void* b, const float* b_scale_inv,
                                    const void* out) const {
  FP8RL_RETURN_IF_ERROR(rt_->require_hopper_blockscaled());
  FP8RL_RETURN_IF_ERROR(annotate(d.validate(), "BlockScaledGemm"));
  const std::string ds = d.to_string();
  FP8RL_REQUIRE(d.k % 16 == 0,
                "BlockScaledGemm: k must be a multiple of 16 (cuBLASLt FP8 needs "
                "16-byte leading dimensions) for ",
                ds);
  FP8RL_REQUIRE(d.m % 4 == 0 && d.n % 4 == 0,
                "BlockScaledGemm: m and n must be multiples of 4 "
                "(cuBLASLt VEC128/BLK128x128 scale layouts) for ",
                ds);
  FP8RL_REQUIRE((d.n * out_size(d.out_dtype)) % 16 == 0,
                "BlockScaledGemm: n * sizeof(out) must "
                "be a multiple of 16 bytes (D's leading dimension; n % 8 for bfloat16) for ",
                ds);
  if (d.m == 0 || d.n == 0) return absl::OkStatus();
  FP8RL_REQUIRE(out != nullptr && (d.k == 0 || (a && b && a_scale_inv && b_scale_inv)),
                "BlockScaledGemm: null buffer for ", ds);
  FP8RL_REQUIRE(aligned16(a) && aligned16(b) && aligned16(out),
                "BlockScaledGemm: a, b and d must be 16-byte aligned for ", ds);
  FP8RL_REQUIRE((d.a_tile != ScaleTile::k1x128 || aligned16(a_scale_inv)) &&
                    (d.b_tile != ScaleTile::k1x128 || aligned16(b_scale_inv)),
                "BlockScaledGemm: 1x128 (VEC128) scale tensors must be 16-byte aligned for ", ds);
  return absl::OkStatus();
}

absl::StatusOr<GemmAlgoInfo> BlockScaledGemm::algo(const GemmDesc& d, const uint8_t* a,
                                                   const float* a_scale_inv, const uint8_t* b,
                                                   const float* b_scale_inv, void* out) {
  FP8RL_RETURN_IF_ERROR(check(d, a, a_scale_inv, b, b_scale_inv, out));
  const Problem p = fp8_problem(d, a, b, out);
  FP8RL_ASSIGN_OR_RETURN(LtPlan * plan, rt_->plans().get_or_create(p.key(), [&] {
    return make_plan(*rt_, p, a_scale_inv, b_scale_inv);
  }));
  std::lock_guard<std::mutex> lock(plan->mu);
  return info_of(*plan);
}

absl::Status BlockScaledGemm::run(const GemmDesc& d, const uint8_t* a, const float* a_scale_inv,
                                  const uint8_t* b, const float* b_scale_inv, void* out,
                                  cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(check(d, a, a_scale_inv, b, b_scale_inv, out));
  if (d.m == 0 || d.n == 0) return absl::OkStatus();
  if (stream == nullptr) stream = rt_->stream();
  if (d.k == 0) {  // an empty sum: D = 0, or D unchanged when accumulating
    if (!d.accumulate)
      FP8RL_CUDA_CHECK(cudaMemsetAsync(out, 0, size_t(d.m * d.n * out_size(d.out_dtype)), stream));
    return absl::OkStatus();
  }
  const Problem p = fp8_problem(d, a, b, out);
  FP8RL_ASSIGN_OR_RETURN(LtPlan * plan, rt_->plans().get_or_create(p.key(), [&] {
    return make_plan(*rt_, p, a_scale_inv, b_scale_inv);
  }));
  FP8RL_ASSIGN_OR_RETURN(LtScales scales, LtScales::make(d, a_scale_inv, b_scale_inv, stream));
  std::lock_guard<std::mutex> lock(plan->mu);
  absl::Status st = scales.bind(*plan);
  if (st.ok())
    st = matmul(*rt_, *plan, plan->algo, plan->workspace_bytes, b, a, out, d.accumulate, stream);
  return annotate(st, d.to_string());
}

absl::StatusOr<GemmAlgoInfo> BlockScaledGemm::autotune(const GemmDesc& d, const uint8_t* a,
                                                       const float* a_scale_inv, const uint8_t* b,
                                                       const float* b_scale_inv, void* out,
                                                       cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(check(d, a, a_scale_inv, b, b_scale_inv, out));
  FP8RL_REQUIRE(d.m > 0 && d.n > 0 && d.k > 0,
                "autotune needs a non-empty problem: ", d.to_string());
  if (stream == nullptr) stream = rt_->stream();
  const Problem p = fp8_problem(d, a, b, out);
  FP8RL_ASSIGN_OR_RETURN(LtPlan * plan, rt_->plans().get_or_create(p.key(), [&] {
    return make_plan(*rt_, p, a_scale_inv, b_scale_inv);
  }));
  FP8RL_ASSIGN_OR_RETURN(LtScales scales, LtScales::make(d, a_scale_inv, b_scale_inv, stream));
  std::lock_guard<std::mutex> lock(plan->mu);
  FP8RL_RETURN_IF_ERROR(scales.bind(*plan));
  return tune(*plan, stream, [&](const cublasLtMatmulAlgo_t& algo, size_t ws) {
    return matmul(*rt_, *plan, algo, ws, b, a, out, false, stream);
  });
}

namespace {

Problem bf16_problem(const Bf16GemmDesc& d, const void* a, const void* b, const void* out) {
  Problem p;
  p.fp8 = false;
  p.m = d.m, p.n = d.n, p.k = d.k;
  p.out = d.out_dtype;
  p.accumulate = d.accumulate;
  p.a_kmajor = d.a_kmajor, p.b_kmajor = d.b_kmajor;
  p.align_a = alignment_of(a), p.align_b = alignment_of(b), p.align_d = alignment_of(out);
  return p;
}

}  // namespace

absl::Status Bf16Gemm::run(const Bf16GemmDesc& d, const uint16_t* a, const uint16_t* b, void* out,
                           cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  if (d.m == 0 || d.n == 0) return absl::OkStatus();
  if (stream == nullptr) stream = rt_->stream();
  if (d.k == 0) {
    if (!d.accumulate)
      FP8RL_CUDA_CHECK(cudaMemsetAsync(out, 0, size_t(d.m * d.n * out_size(d.out_dtype)), stream));
    return absl::OkStatus();
  }
  FP8RL_REQUIRE(a && b && out, "Bf16Gemm: null buffer for ", d.to_string());
  const Problem p = bf16_problem(d, a, b, out);
  FP8RL_ASSIGN_OR_RETURN(LtPlan * plan, rt_->plans().get_or_create(p.key(), [&] {
    return make_plan(*rt_, p, nullptr, nullptr);
  }));
  std::lock_guard<std::mutex> lock(plan->mu);
  return annotate(
      matmul(*rt_, *plan, plan->algo, plan->workspace_bytes, b, a, out, d.accumulate, stream),
      d.to_string());
}

absl::StatusOr<GemmAlgoInfo> Bf16Gemm::autotune(const Bf16GemmDesc& d, const uint16_t* a,
                                                const uint16_t* b, void* out, cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(d.validate());
  FP8RL_REQUIRE(d.m > 0 && d.n > 0 && d.k > 0 && a && b && out,
                "Bf16Gemm::autotune needs a non-empty problem: ", d.to_string());
  if (stream == nullptr) stream = rt_->stream();
  const Problem p = bf16_problem(d, a, b, out);
  FP8RL_ASSIGN_OR_RETURN(LtPlan * plan, rt_->plans().get_or_create(p.key(), [&] {
    return make_plan(*rt_, p, nullptr, nullptr);
  }));
  std::lock_guard<std::mutex> lock(plan->mu);
  return tune(*plan, stream, [&](const cublasLtMatmulAlgo_t& algo, size_t ws) {
    return matmul(*rt_, *plan, algo, ws, b, a, out, false, stream);
  });
}

}  // namespace fp8rl
