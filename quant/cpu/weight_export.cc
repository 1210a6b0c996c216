// CPU reference of the weight export (quant/weight_export.h): the composition of the CPU
// references through a bf16 copy of the weight.
#include "quant/weight_export.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "core/dtype.h"
#include "core/status.h"

namespace fp8rl {
namespace {

// The weight rounded to bf16, in `buf` (or `src` itself for a bf16 source).
absl::StatusOr<const uint16_t*> to_bf16(const WeightExportDesc& d, const void* src,
                                        const float* src_scale_inv, std::vector<uint16_t>& buf) {
  const int64_t n = d.rows * d.cols;
  if (d.source == ExportSource::kBF16) return static_cast<const uint16_t*>(src);
  buf.resize(size_t(n));
  if (d.source == ExportSource::kF32) {
    const float* x = static_cast<const float*>(src);
    for (int64_t i = 0; i < n; ++i) buf[i] = f32_to_bf16(x[i]);
    return buf.data();
  }
  FP8RL_RETURN_IF_ERROR(dequantize_128x128_cpu(d.source_desc(), static_cast<const uint8_t*>(src),
                                               src_scale_inv, buf.data(), DType::kBF16));
  return buf.data();
}

}  // namespace

std::string_view export_source_name(ExportSource s) {
  switch (s) {
    case ExportSource::kF32: return "f32";
    case ExportSource::kBF16: return "bf16";
    case ExportSource::kFP8Block: return "fp8_128x128";
  }
  return "?";
}

std::string_view export_target_name(ExportTarget t) {
  return t == ExportTarget::kFP8Block ? "fp8_128x128" : "int4_packed";
}

absl::Status WeightExportDesc::validate() const {
  FP8RL_REQUIRE(rows >= 0 && cols >= 0, "WeightExportDesc rows=", rows, " cols=", cols,
                " must be non-negative");
  FP8RL_REQUIRE(src_scale_ld == 0 || src_scale_ld >= ceil_div(cols, kQuantBlock),
                "WeightExportDesc.src_scale_ld=", src_scale_ld, " is below ceil(cols/128)");
  FP8RL_REQUIRE(dst_scale_ld == 0 || dst_scale_ld >= ceil_div(cols, kQuantBlock),
                "WeightExportDesc.dst_scale_ld=", dst_scale_ld, " is below ceil(cols/128)");
  FP8RL_REQUIRE(group_size > 0, "WeightExportDesc.group_size=", group_size, " must be positive");
  FP8RL_REQUIRE(scale.amax_eps >= 0.f, "WeightExportDesc.scale.amax_eps=", scale.amax_eps,
                " must be non-negative");
  return absl::OkStatus();
}

std::string WeightExportDesc::to_string() const {
  return absl::StrCat("WeightExportDesc{rows=", rows, ", cols=", cols,
                      ", source=", std::string(export_source_name(source)),
                      ", src_scale_ld=", src_scale_ld,
                      ", target=", std::string(export_target_name(target)), ", ",
                      scale.to_string(), ", dst_scale_ld=", dst_scale_ld,
                      ", group_size=", group_size, "}");
}

QuantDesc WeightExportDesc::fp8_desc() const {
  QuantDesc q;
  q.rows = rows;
  q.cols = cols;
  q.src_dtype = DType::kBF16;
  q.scale = scale;
  q.scale_ld = dst_scale_ld;
  return q;
}

Int4Desc WeightExportDesc::int4_desc() const {
  Int4Desc q;
  q.rows = rows;
  q.cols = cols;
  q.group_size = group_size;
  q.src_dtype = DType::kBF16;
  return q;
}

QuantDesc WeightExportDesc::source_desc() const {
  QuantDesc q;
  q.rows = rows;
  q.cols = cols;
  q.src_dtype = DType::kBF16;
  q.scale_ld = src_scale_ld;
  return q;
}

absl::Status export_weight_fp8_cpu(const WeightExportDesc& desc, const void* src,
                                   const float* src_scale_inv, uint8_t* q, float* scale_inv) {
  FP8RL_RETURN_IF_ERROR(annotate(desc.validate(), "export_weight_fp8_cpu"));
  FP8RL_REQUIRE(desc.target == ExportTarget::kFP8Block,
                "export_weight_fp8_cpu needs target fp8_128x128: ", desc.to_string());
  std::vector<uint16_t> buf;
  FP8RL_ASSIGN_OR_RETURN(const uint16_t* w, to_bf16(desc, src, src_scale_inv, buf));
  return quantize_128x128_cpu(desc.fp8_desc(), w, q, scale_inv);
}

absl::Status export_weight_int4_cpu(const WeightExportDesc& desc, const void* src,
                                    const float* src_scale_inv, int32_t* packed, uint16_t* scale) {
  FP8RL_RETURN_IF_ERROR(annotate(desc.validate(), "export_weight_int4_cpu"));
  FP8RL_REQUIRE(desc.target == ExportTarget::kInt4Packed,
                "export_weight_int4_cpu needs target int4_packed: ", desc.to_string());
  std::vector<uint16_t> buf;
  FP8RL_ASSIGN_OR_RETURN(const uint16_t* w, to_bf16(desc, src, src_scale_inv, buf));
  return int4_pack_cpu(desc.int4_desc(), w, packed, scale);
}

}  // namespace fp8rl
