// Random Qwen3 checkpoints.
#include "model/tiny_model.h"

#include <filesystem>

#include "absl/strings/str_format.h"
#include "core/fs.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "model/hf_names.h"

namespace fp8rl {

ModelConfig tiny_qwen3_config() {
  ModelConfig c;
  c.model_type = "qwen3";
  c.vocab_size = 1024;
  c.hidden_size = 256;
  c.intermediate_size = 768;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1000000.0;
  c.tie_word_embeddings = false;
  c.qk_norm = true;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.dtype = DType::kBF16;
  return c;
}

ModelConfig qwen3_small_config(int64_t hidden, int64_t intermediate) {
  ModelConfig c = tiny_qwen3_config();
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_hidden_layers = 28;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 8;
  c.head_dim = 128;
  c.vocab_size = 151936;
  c.max_position_embeddings = 40960;
  c.rope_theta = 1e6;
  c.tie_word_embeddings = true;
  return c;
}

namespace {

// Fills one parameter: norms around 1, everything else ~ N(0, std).
Tensor random_parameter(const TensorSpec& spec, Rng& rng, double std) {
  Tensor t = Tensor::empty(spec.dtype, spec.shape);
  const bool is_norm = spec.shape.size() == 1 && spec.name.find("norm") != std::string::npos;
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = float(is_norm ? 1.0 + 0.1 * std * rng.normal() : std * rng.normal());
    if (spec.dtype == DType::kF32) {
      t.data<float>()[i] = v;
    } else {
      t.data<uint16_t>()[i] = f32_to_bf16(v);
    }
  }
  return t;
}

}  // namespace

absl::Status write_tiny_model(const TinyModelOptions& o) {
  FP8RL_RETURN_IF_ERROR(o.config.validate());
  FP8RL_REQUIRE(o.config.dtype == DType::kBF16 || o.config.dtype == DType::kF32,
                "tiny-model: dtype must be bfloat16 or float32");
  FP8RL_ASSIGN_OR_RETURN(StagedDir dir, StagedDir::create(o.save_dir));

  // Split the parameters into shards of at most max_shard_bytes (a tensor never spans shards).
  std::vector<TensorSpec> specs = decoder_parameter_specs(o.config);
  std::vector<std::vector<TensorSpec>> shards(1);
  uint64_t shard_bytes = 0, total = 0;
  for (TensorSpec& s : specs) {
    if (o.max_shard_bytes && shard_bytes > 0 && shard_bytes + s.nbytes() > o.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shard_bytes += s.nbytes();
    total += s.nbytes();
    shards.back().push_back(std::move(s));
  }

  Rng rng(o.seed);
  std::map<std::string, std::string> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file = shards.size() == 1 ? std::string(kSafetensorsSingleFile)
                                                : absl::StrFormat("model-%05d-of-%05d.safetensors",
                                                                  i + 1, shards.size());
    FP8RL_ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::create(dir.path() + "/" + file,
                                                                  shards[i], {{"format", "pt"}}));
    for (const TensorSpec& s : shards[i]) {
      FP8RL_RETURN_IF_ERROR(writer->write(s.name, random_parameter(s, rng, o.init_std)));
      weight_map[s.name] = file;
    }
    FP8RL_RETURN_IF_ERROR(writer->finish());
  }
  if (shards.size() > 1)
    FP8RL_RETURN_IF_ERROR(write_safetensors_index(dir.path(), total, weight_map));

  FP8RL_RETURN_IF_ERROR(write_file_atomic(dir.path() + "/config.json",
                                          model_config_to_json(o.config).dump(2) + "\n"));
  nlohmann::json gen = {{"do_sample", true}, {"temperature", 0.6}, {"top_p", 0.95}, {"top_k", 20}};
  if (o.config.bos_token_id) gen["bos_token_id"] = *o.config.bos_token_id;
  gen["eos_token_id"] = o.config.eos_token_ids;
  FP8RL_RETURN_IF_ERROR(
      write_file_atomic(dir.path() + "/generation_config.json", gen.dump(2) + "\n"));
  return dir.commit();
}

}  // namespace fp8rl
