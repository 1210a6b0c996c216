// HF checkpoint conversion to blockwise FP8 and INT4 pack-quantized.
#include "model/hf_convert.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "core/fs.h"
#include "core/hf_config.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "model/hf_names.h"
#include "quant/block_quant.h"
#include "quant/int4.h"

namespace fp8rl {
namespace fs = std::filesystem;

nlohmann::json fp8_quantization_config(const std::vector<std::string>& modules_not_converted) {
  return {{"quant_method", "fp8"},
          {"fmt", "e4m3"},
          {"activation_scheme", "dynamic"},
          {"weight_block_size", {kQuantBlock, kQuantBlock}},
          {"modules_to_not_convert", modules_not_converted}};
}

nlohmann::json int4_quantization_config(int64_t group_size,
                                        const std::vector<std::string>& ignore) {
  nlohmann::json weights = {{"num_bits", 4},
                            {"type", "int"},
                            {"symmetric", true},
                            {"strategy", "group"},
                            {"group_size", group_size},
                            {"dynamic", false},
                            {"observer", "minmax"},
                            {"observer_kwargs", nlohmann::json::object()},
                            {"actorder", nullptr},
                            {"block_structure", nullptr}};
  return {{"quant_method", "compressed-tensors"},
          {"format", "pack-quantized"},
          {"quantization_status", "compressed"},
          {"ignore", ignore},
          {"kv_cache_scheme", nullptr},
          {"config_groups",
           {{"group_0",
             {{"targets", {"Linear"}},
              {"input_activations", nullptr},
              {"output_activations", nullptr},
              {"weights", weights}}}}}};
}

namespace {

std::string strip_weight_suffix(const std::string& name) {
  return name.substr(0, name.size() - std::string(".weight").size());
}

// What one input tensor becomes.
struct Plan {
  const TensorInfo* in = nullptr;
  bool quantize = false;
  std::vector<TensorSpec> out;
};

class Converter {
 public:
  Converter(const ConvertOptions& o, const CheckpointReader& ckpt) : o_(o), ckpt_(ckpt) {
    ignore_ = o.int4_ignore.empty() ? default_int4_ignore_rules() : o.int4_ignore;
  }

  absl::StatusOr<Plan> plan(const TensorInfo& t) const {
    Plan p{&t, false, {}};
    p.quantize = o_.format == ConvertFormat::kFp8 ? fp8_should_quantize(t.name, t.shape)
                                                  : int4_should_quantize(t.name, t.shape, ignore_);
    if (!p.quantize) {
      p.out.push_back({t.name, t.dtype, t.shape});
      return p;
    }
    if (t.dtype != DType::kBF16 && t.dtype != DType::kF32 && t.dtype != DType::kF16)
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", t.name, " has dtype ", std::string(dtype_name(t.dtype)),
                       "; convert takes bfloat16, float16 or float32 weights"));
    const int64_t rows = t.shape[0], cols = t.shape[1];
    if (o_.format == ConvertFormat::kFp8) {
      p.out.push_back({t.name, DType::kF8E4M3, t.shape});
      p.out.push_back({t.name + "_scale_inv",
                       DType::kF32,
                       {ceil_div(rows, kQuantBlock), ceil_div(cols, kQuantBlock)}});
    } else {
      const std::string base = strip_weight_suffix(t.name);
      p.out.push_back({base + ".weight_packed", DType::kI32, {rows, ceil_div(cols, 8)}});
      p.out.push_back(
          {base + ".weight_scale", DType::kBF16, {rows, ceil_div(cols, o_.group_size)}});
      p.out.push_back({base + ".weight_shape", DType::kI32, {2}});
    }
    return p;
  }

  // Quantizes (or copies) one tensor and writes its outputs.
  absl::Status run(const Plan& p, SafetensorsWriter& w) const {
    FP8RL_ASSIGN_OR_RETURN(Tensor in, ckpt_.tensor(p.in->name));
    if (!p.quantize) return w.write(p.in->name, in);
    if (in.dtype() == DType::kF16) {
      FP8RL_ASSIGN_OR_RETURN(in, in.to_f32());
    }
    const int64_t rows = in.dim(0), cols = in.dim(1);
    if (o_.format == ConvertFormat::kFp8) {
      QuantDesc d;
      d.rows = rows;
      d.cols = cols;
      d.src_dtype = in.dtype();
      d.scale = o_.fp8_scale;
      Tensor q = Tensor::empty(DType::kF8E4M3, {rows, cols});
      Tensor s = Tensor::empty(DType::kF32, {d.row_tiles(), d.col_tiles()});
      FP8RL_RETURN_IF_ERROR(quantize_128x128_cpu(d, in.raw(), q.data<uint8_t>(), s.data<float>()));
      FP8RL_RETURN_IF_ERROR(w.write(p.out[0].name, q));
      return w.write(p.out[1].name, s);
    }
    Int4Desc d;
    d.rows = rows;
    d.cols = cols;
    d.group_size = o_.group_size;
    d.src_dtype = in.dtype();
    Tensor packed = Tensor::empty(DType::kI32, {rows, d.packed_cols()});
    Tensor scale = Tensor::empty(DType::kBF16, {rows, d.groups()});
    FP8RL_RETURN_IF_ERROR(
        int4_pack_cpu(d, in.raw(), packed.data<int32_t>(), scale.data<uint16_t>()));
    Tensor shape = Tensor::empty(DType::kI32, {2});
    shape.data<int32_t>()[0] = int32_t(rows);
    shape.data<int32_t>()[1] = int32_t(cols);
    FP8RL_RETURN_IF_ERROR(w.write(p.out[0].name, packed));
    FP8RL_RETURN_IF_ERROR(w.write(p.out[1].name, scale));
    return w.write(p.out[2].name, shape);
  }

  const std::vector<std::string>& ignore() const { return ignore_; }

 private:
  const ConvertOptions& o_;
  const CheckpointReader& ckpt_;
  std::vector<std::string> ignore_;
};

}  // namespace

absl::StatusOr<int64_t> copy_non_weight_files(const std::string& from, const std::string& to) {
  int64_t n = 0;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(from, ec)) {
    const std::string name = e.path().filename().string();
    if (absl::EndsWith(name, ".safetensors") || name == kSafetensorsIndexFile ||
        name == "config.json" || absl::StartsWith(name, "."))
      continue;
    fs::copy(e.path(), fs::path(to) / name, fs::copy_options::recursive, ec);
    if (ec)
      return absl::InternalError(absl::StrCat("copying ", e.path().string(), ": ", ec.message()));
    ++n;
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", from, ": ", ec.message()));
  return n;
}

absl::StatusOr<ConvertReport> convert_hf_checkpoint(const ConvertOptions& o) {
  FP8RL_REQUIRE(o.group_size > 0, "--group-size must be positive");
  FP8RL_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(o.model_dir));
  if (config.raw.contains("quantization_config"))
    return absl::InvalidArgumentError(
        absl::StrCat(o.model_dir,
                     "/config.json already has a quantization_config: convert takes an "
                     "unquantized (BF16/FP16/FP32) checkpoint"));
  FP8RL_ASSIGN_OR_RETURN(CheckpointReader ckpt, CheckpointReader::open(o.model_dir));
  Converter conv(o, ckpt);

  // Plan every shard before writing anything, so a bad tensor fails fast.
  std::vector<std::vector<Plan>> plans;
  int64_t total_tensors = 0;
  uint64_t bytes_total = 0;
  std::vector<std::string> not_converted;
  for (const std::string& file : ckpt.shard_files()) {
    plans.emplace_back();
    for (const std::string& name : ckpt.shard_tensor_names(file)) {
      const TensorInfo* info = ckpt.find(name);
      auto p = conv.plan(*info);
      if (!p.ok()) return annotate(p.status(), absl::StrCat(o.model_dir, "/", file));
      if (!p->quantize && absl::EndsWith(name, ".weight"))
        not_converted.push_back(strip_weight_suffix(name));
      bytes_total += info->end - info->begin;
      plans.back().push_back(*std::move(p));
      ++total_tensors;
    }
  }

  FP8RL_ASSIGN_OR_RETURN(StagedDir dir, StagedDir::create(o.save_dir));
  ConvertReport report;
  FP8RL_ASSIGN_OR_RETURN(report.files_copied, copy_non_weight_files(o.model_dir, dir.path()));

  std::map<std::string, std::string> weight_map;
  ConvertProgress progress{0, total_tensors, nullptr, 0, bytes_total};
  for (size_t i = 0; i < plans.size(); ++i) {
    const std::string& file = ckpt.shard_files()[i];
    std::vector<TensorSpec> specs;
    for (const Plan& p : plans[i]) specs.insert(specs.end(), p.out.begin(), p.out.end());
    FP8RL_ASSIGN_OR_RETURN(
        auto writer, SafetensorsWriter::create(dir.path() + "/" + file, specs, {{"format", "pt"}}));
    for (const Plan& p : plans[i]) {
      absl::Status st = conv.run(p, *writer);
      if (!st.ok())
        return annotate(st, absl::StrCat(o.model_dir, "/", file, ": tensor ", p.in->name));
      for (const TensorSpec& s : p.out) weight_map[s.name] = file;
      (p.quantize ? report.tensors_quantized : report.tensors_copied) += 1;
      report.bytes_in += p.in->end - p.in->begin;
      ++progress.done;
      progress.name = &p.in->name;
      progress.bytes_done = report.bytes_in;
      if (o.on_progress) o.on_progress(progress);
    }
    FP8RL_RETURN_IF_ERROR(writer->finish());
    report.bytes_out += writer->data_bytes();
  }
  if (ckpt.sharded())
    FP8RL_RETURN_IF_ERROR(write_safetensors_index(dir.path(), report.bytes_out, weight_map));

  nlohmann::json cfg = config.raw;
  cfg["quantization_config"] = o.format == ConvertFormat::kFp8
                                   ? fp8_quantization_config(not_converted)
                                   : int4_quantization_config(o.group_size, conv.ignore());
  FP8RL_RETURN_IF_ERROR(write_file_atomic(dir.path() + "/config.json", cfg.dump(2) + "\n"));
  FP8RL_RETURN_IF_ERROR(dir.commit());
  return report;
}

}  // namespace fp8rl
