// HF checkpoint export of the policy (trainer/hf_export.h).
#include "trainer/hf_export.h"

#include <filesystem>

#include "core/dtype.h"
#include "core/fs.h"
#include "core/hf_config.h"
#include "core/status.h"
#include "model/hf_convert.h"
#include "model/hf_names.h"

namespace fp8rl {
namespace {

Tensor to_bf16(const Tensor& f32) {
  Tensor out = Tensor::empty(DType::kBF16, f32.shape());
  const float* src = f32.data<float>();
  uint16_t* dst = out.data<uint16_t>();
  for (int64_t i = 0; i < f32.numel(); ++i) dst[i] = f32_to_bf16(src[i]);
  return out;
}

// `model` as a BF16 HF folder in `dir` (which exists): model.safetensors, config.json, and the
// source folder's other files. One tensor is converted at a time.
absl::Status write_bf16_folder(const Decoder& model, const std::string& source_dir,
                               const std::string& dir) {
  ModelConfig config = model.config();
  config.dtype = DType::kBF16;
  DecoderParams params = model.params();  // shares the tensors' storage
  FP8RL_ASSIGN_OR_RETURN(
      auto writer, SafetensorsWriter::create(dir + "/" + kSafetensorsSingleFile,
                                             decoder_parameter_specs(config), {{"format", "pt"}}));
  for (const auto& [name, t] : params.named(config))
    FP8RL_RETURN_IF_ERROR(annotate(writer->write(name, to_bf16(*t)), name));
  FP8RL_RETURN_IF_ERROR(writer->finish());

  nlohmann::json cfg = config.raw;
  cfg.erase("quantization_config");
  cfg["torch_dtype"] = "bfloat16";
  if (cfg.contains("dtype")) cfg["dtype"] = "bfloat16";
  FP8RL_RETURN_IF_ERROR(write_file_atomic(dir + "/config.json", cfg.dump(2) + "\n"));
  return copy_non_weight_files(source_dir, dir).status();
}

absl::StatusOr<HfExportReport> report_of(const std::string& dir) {
  FP8RL_ASSIGN_OR_RETURN(const CheckpointReader ckpt, CheckpointReader::open(dir));
  HfExportReport r;
  for (const std::string& name : ckpt.names()) {
    const TensorInfo* t = ckpt.find(name);
    r.tensors.push_back({name, t->dtype, t->shape});
    r.bytes += t->end - t->begin;
  }
  return r;
}

}  // namespace

std::string_view hf_export_format_name(HfExportFormat format) {
  switch (format) {
    case HfExportFormat::kBF16:
      return "bf16";
    case HfExportFormat::kFP8Blockwise:
      return "fp8";
    case HfExportFormat::kInt4Packed:
      return "int4";
  }
  return "?";
}

absl::StatusOr<HfExportReport> export_hf_checkpoint(const Decoder& model,
                                                    const HfExportOptions& o) {
  FP8RL_REQUIRE(std::filesystem::is_directory(o.source_dir), "export: source folder ", o.source_dir,
                " does not exist");
  FP8RL_REQUIRE(o.format != HfExportFormat::kInt4Packed || o.int4_group_size > 0,
                "export: int4 group size ", o.int4_group_size);
  if (std::filesystem::exists(o.save_dir))
    return absl::AlreadyExistsError(absl::StrCat("export: ", o.save_dir, " already exists"));
  if (o.format == HfExportFormat::kBF16) {
    FP8RL_ASSIGN_OR_RETURN(StagedDir dir, StagedDir::create(o.save_dir));
    FP8RL_RETURN_IF_ERROR(write_bf16_folder(model, o.source_dir, dir.path()));
    FP8RL_RETURN_IF_ERROR(dir.commit());
    return report_of(o.save_dir);
  }
  // The BF16 folder goes to a staging sibling that is never committed (removed on return), and
  // the converter writes save_dir through its own staging folder.
  FP8RL_ASSIGN_OR_RETURN(const StagedDir bf16, StagedDir::create(o.save_dir + ".bf16"));
  FP8RL_RETURN_IF_ERROR(write_bf16_folder(model, o.source_dir, bf16.path()));
  ConvertOptions c;
  c.model_dir = bf16.path();
  c.save_dir = o.save_dir;
  c.format = o.format == HfExportFormat::kFP8Blockwise ? ConvertFormat::kFp8 : ConvertFormat::kInt4;
  c.group_size = o.int4_group_size;
  FP8RL_RETURN_IF_ERROR(convert_hf_checkpoint(c).status());
  return report_of(o.save_dir);
}

}  // namespace fp8rl
