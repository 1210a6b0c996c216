// Dequantizing reads of HF weights.
#include "model/hf_weights.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "quant/block_quant.h"
#include "quant/int4.h"

namespace fp8rl {
namespace {

constexpr char kPacked[] = ".weight_packed";

std::string module_of(const std::string& name, std::string_view suffix) {
  return name.substr(0, name.size() - suffix.size());
}

absl::Status expect_shape(const TensorInfo& t, const Shape& want, DType dtype) {
  if (t.shape != want || t.dtype != dtype)
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", t.name, " is ", std::string(dtype_name(t.dtype)), shape_to_string(t.shape),
        ", expected ", std::string(dtype_name(dtype)), shape_to_string(want)));
  return absl::OkStatus();
}

}  // namespace

std::vector<WeightEntry> list_logical_weights(const CheckpointReader& ckpt) {
  std::vector<WeightEntry> out;
  for (const std::string& n : ckpt.names()) {
    const TensorInfo* t = ckpt.find(n);
    if (absl::EndsWith(n, "_scale_inv") || absl::EndsWith(n, ".weight_scale") ||
        absl::EndsWith(n, ".weight_shape"))
      continue;
    if (absl::EndsWith(n, kPacked)) {
      const std::string m = module_of(n, kPacked);
      Shape shape = t->shape;
      if (auto s = ckpt.tensor(m + ".weight_shape");
          s.ok() && s->numel() == 2 && s->dtype() == DType::kI32)
        shape = {s->data<int32_t>()[0], s->data<int32_t>()[1]};
      out.push_back({m + ".weight", WeightStorage::kInt4Packed, shape});
    } else if (t->dtype == DType::kF8E4M3 && ckpt.find(n + "_scale_inv")) {
      out.push_back({n, WeightStorage::kFp8Blockwise, t->shape});
    } else {
      out.push_back({n, WeightStorage::kPlain, t->shape});
    }
  }
  return out;
}

absl::StatusOr<Tensor> load_weight_f32(const CheckpointReader& ckpt, const std::string& name) {
  const TensorInfo* t = ckpt.find(name);
  if (t && t->dtype != DType::kF8E4M3) {
    FP8RL_ASSIGN_OR_RETURN(Tensor x, ckpt.tensor(name));
    return x.to_f32();
  }
  if (t) {  // blockwise FP8
    FP8RL_REQUIRE(t->shape.size() == 2, "FP8 weight ", name, " must be 2-D");
    const TensorInfo* s = ckpt.find(name + "_scale_inv");
    if (!s)
      return absl::InvalidArgumentError(
          absl::StrCat("FP8 weight ", name, " has no ", name, "_scale_inv"));
    QuantDesc d;
    d.rows = t->shape[0];
    d.cols = t->shape[1];
    FP8RL_RETURN_IF_ERROR(expect_shape(*s, {d.row_tiles(), d.col_tiles()}, DType::kF32));
    FP8RL_ASSIGN_OR_RETURN(Tensor q, ckpt.tensor(name));
    FP8RL_ASSIGN_OR_RETURN(Tensor sc, ckpt.tensor(name + "_scale_inv"));
    Tensor out = Tensor::empty(DType::kF32, t->shape);
    FP8RL_RETURN_IF_ERROR(
        dequantize_128x128_cpu(d, q.data<uint8_t>(), sc.data<float>(), out.raw(), DType::kF32));
    return out;
  }
  if (!absl::EndsWith(name, ".weight"))
    return absl::NotFoundError(absl::StrCat("no tensor ", name, " in ", ckpt.dir()));
  const std::string m = module_of(name, ".weight");
  const TensorInfo* packed = ckpt.find(m + kPacked);
  const TensorInfo* scale = ckpt.find(m + ".weight_scale");
  const TensorInfo* shape = ckpt.find(m + ".weight_shape");
  if (!packed) return absl::NotFoundError(absl::StrCat("no tensor ", name, " in ", ckpt.dir()));
  if (!scale || !shape)
    return absl::InvalidArgumentError(
        absl::StrCat("INT4 weight ", m, " needs weight_packed, weight_scale and weight_shape"));
  FP8RL_RETURN_IF_ERROR(expect_shape(*shape, {2}, DType::kI32));
  FP8RL_ASSIGN_OR_RETURN(Tensor shp, ckpt.tensor(m + ".weight_shape"));
  Int4Desc d;
  d.rows = shp.data<int32_t>()[0];
  d.cols = shp.data<int32_t>()[1];
  FP8RL_REQUIRE(d.rows > 0 && d.cols > 0 && scale->shape.size() == 2 && scale->shape[1] > 0,
                "INT4 weight ", m, " has a bad weight_shape or weight_scale");
  d.group_size = ceil_div(d.cols, scale->shape[1]);
  FP8RL_RETURN_IF_ERROR(expect_shape(*packed, {d.rows, d.packed_cols()}, DType::kI32));
  FP8RL_RETURN_IF_ERROR(expect_shape(*scale, {d.rows, d.groups()}, DType::kBF16));
  FP8RL_ASSIGN_OR_RETURN(Tensor p, ckpt.tensor(m + kPacked));
  FP8RL_ASSIGN_OR_RETURN(Tensor sc, ckpt.tensor(m + ".weight_scale"));
  Tensor out = Tensor::empty(DType::kF32, {d.rows, d.cols});
  FP8RL_RETURN_IF_ERROR(
      int4_unpack_cpu(d, p.data<int32_t>(), sc.data<uint16_t>(), out.raw(), DType::kF32));
  return out;
}

}  // namespace fp8rl
