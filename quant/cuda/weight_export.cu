// CUDA fused weight export: source -> bf16 (registers) -> 128x128 FP8 or INT4 packed, one pass.
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "quant/cuda/int4_kernels.cuh"
#include "quant/cuda/int4_launch.h"
#include "quant/cuda/tile_quant.cuh"
#include "quant/cuda/weight_export_cuda.h"

namespace fp8rl {
namespace {

using namespace cuda_detail;

size_t source_size(ExportSource s) {
  return s == ExportSource::kF32 ? 4 : s == ExportSource::kBF16 ? 2 : 1;
}

// out0/out1: the payload and the scales, with their element sizes.
absl::Status check(const WeightExportDesc& d, const void* src, const float* src_scale_inv,
                   const void* out0, size_t out0_size, const void* out1, size_t out1_size,
                   ExportTarget target, const char* fn) {
  FP8RL_RETURN_IF_ERROR(annotate(d.validate(), fn));
  FP8RL_REQUIRE(d.target == target, fn, " called for target ",
                std::string(export_target_name(d.target)), ": ", d.to_string());
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  FP8RL_REQUIRE(src != nullptr && out0 != nullptr && out1 != nullptr, fn,
                ": null source or output buffer for ", d.to_string());
  FP8RL_REQUIRE(d.source != ExportSource::kFP8Block || src_scale_inv != nullptr, fn,
                ": FP8 source without scale_inv for ", d.to_string());
  FP8RL_REQUIRE(aligned_to_host(src, source_size(d.source)) && aligned_to_host(out0, out0_size) &&
                    aligned_to_host(out1, out1_size) && aligned_to_host(src_scale_inv, 4),
                fn, ": buffers must be aligned to their element sizes for ", d.to_string());
  return absl::OkStatus();
}

Int4Args export_int4_args(const WeightExportDesc& d, const void* src, const float* src_scale_inv,
                          int32_t* packed, uint16_t* scale) {
  const Int4Desc id = d.int4_desc();
  Int4Args a;
  a.x = src;
  a.rows = d.rows;
  a.cols = d.cols;
  a.group_size = id.group_size;
  a.groups = id.groups();
  a.packed_cols = id.packed_cols();
  a.packed = packed;
  a.scale = scale;
  a.src_s = src_scale_inv;
  a.src_s_ld = d.src_scale_ld ? d.src_scale_ld : ceil_div(d.cols, kQuantBlock);
  return a;
}

cudaError_t launch_export_int4(const WeightExportDesc& d, const Int4Args& a, cudaStream_t stream) {
  const bool vec = d.cols % 8 == 0 && aligned16_host(a.x);
  switch (d.source) {
    case ExportSource::kF32:
      return launch_int4<I4LoadF32AsBF16, true>(a, vec, stream);
    case ExportSource::kBF16:
      return launch_int4<I4LoadBF16, true>(a, vec, stream);
    default:
      return launch_int4<I4LoadFP8AsBF16, true>(a, vec, stream);
  }
}

}  // namespace

absl::Status export_weight_fp8_cuda(const WeightExportDesc& d, const void* src,
                                    const float* src_scale_inv, uint8_t* q, float* scale_inv,
                                    cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(check(d, src, src_scale_inv, q, 1, scale_inv, 4, ExportTarget::kFP8Block,
                              "export_weight_fp8_cuda"));
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  const QuantDesc qd = d.fp8_desc();
  TileArgs a;
  a.x = src;
  a.rows = d.rows;
  a.cols = d.cols;
  a.q = q;
  a.s = scale_inv;
  a.s_ld = qd.block_scale_ld();
  a.src_s = src_scale_inv;
  a.src_s_ld = d.src_scale_ld ? d.src_scale_ld : qd.col_tiles();
  a.amax_eps = qd.scale.amax_eps;
  a.power_2 = qd.scale.power_2;
  a.value_for_inf = qd.value_for_inf();  // the requantization reads bf16
  a.vec_ok = aligned16_host(src) && aligned16_host(q) && d.cols % 16 == 0;
  cudaError_t err;
  switch (d.source) {
    case ExportSource::kF32:
      err = launch_tile_quant<LoadF32AsBF16, kBlock>(a, stream);
      break;
    case ExportSource::kBF16:
      err = launch_tile_quant<LoadBF16, kBlock>(a, stream);
      break;
    default:
      err = launch_tile_quant<LoadFP8AsBF16, kBlock>(a, stream);
      break;
  }
  return annotate(cuda_status(err, "export tile kernel launch", __FILE__, __LINE__), d.to_string());
}

absl::Status export_weight_int4_cuda(const WeightExportDesc& d, const void* src,
                                     const float* src_scale_inv, int32_t* packed, uint16_t* scale,
                                     cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(check(d, src, src_scale_inv, packed, 4, scale, 2, ExportTarget::kInt4Packed,
                              "export_weight_int4_cuda"));
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  return run_int4_pack(
      export_int4_args(d, src, src_scale_inv, packed, scale), d.to_string(),
      "export_weight_int4_cuda",
      [&](const Int4Args& args) { return launch_export_int4(d, args, stream); }, stream);
}

absl::Status export_weight_int4_cuda_async(const WeightExportDesc& d, const void* src,
                                           const float* src_scale_inv, int32_t* packed,
                                           uint16_t* scale, unsigned long long* first_bad,
                                           cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(check(d, src, src_scale_inv, packed, 4, scale, 2, ExportTarget::kInt4Packed,
                              "export_weight_int4_cuda_async"));
  if (d.rows == 0 || d.cols == 0) return absl::OkStatus();
  FP8RL_REQUIRE(first_bad != nullptr && aligned_to_host(first_bad, 8),
                "export_weight_int4_cuda_async: first_bad must be an aligned device word");
  Int4Args a = export_int4_args(d, src, src_scale_inv, packed, scale);
  a.first_bad = first_bad;
  return annotate(
      cuda_status(launch_export_int4(d, a, stream), "export int4 launch", __FILE__, __LINE__),
      d.to_string());
}

}  // namespace fp8rl
