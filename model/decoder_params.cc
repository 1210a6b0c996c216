// Decoder parameters by HF name, checkpoint loading and input validation (model/decoder.h).
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "model/decoder.h"
#include "model/hf_names.h"
#include "model/hf_weights.h"

namespace fp8rl {
namespace {

constexpr char kLayerPrefix[] = "model.layers.";

struct LayerSlot {
  const char* suffix;
  Tensor DecoderLayerParams::*member;
};
constexpr LayerSlot kLayerSlots[] = {
    {"input_layernorm.weight", &DecoderLayerParams::input_layernorm},
    {"post_attention_layernorm.weight", &DecoderLayerParams::post_attention_layernorm},
    {"self_attn.q_proj.weight", &DecoderLayerParams::q_proj},
    {"self_attn.k_proj.weight", &DecoderLayerParams::k_proj},
    {"self_attn.v_proj.weight", &DecoderLayerParams::v_proj},
    {"self_attn.o_proj.weight", &DecoderLayerParams::o_proj},
    {"self_attn.q_proj.bias", &DecoderLayerParams::q_bias},
    {"self_attn.k_proj.bias", &DecoderLayerParams::k_bias},
    {"self_attn.v_proj.bias", &DecoderLayerParams::v_bias},
    {"self_attn.q_norm.weight", &DecoderLayerParams::q_norm},
    {"self_attn.k_norm.weight", &DecoderLayerParams::k_norm},
    {"mlp.gate_proj.weight", &DecoderLayerParams::gate_proj},
    {"mlp.up_proj.weight", &DecoderLayerParams::up_proj},
    {"mlp.down_proj.weight", &DecoderLayerParams::down_proj},
};

// The field holding HF parameter `name`; nullptr for names decoder_parameter_specs never yields.
Tensor* slot(DecoderParams& p, const std::string& name) {
  if (name == "model.embed_tokens.weight") return &p.embed_tokens;
  if (name == "model.norm.weight") return &p.norm;
  if (name == "lm_head.weight") return &p.lm_head;
  if (!absl::StartsWith(name, kLayerPrefix)) return nullptr;
  const std::string rest = name.substr(sizeof(kLayerPrefix) - 1);
  const size_t dot = rest.find('.');
  size_t layer = 0;
  if (dot == std::string::npos || !absl::SimpleAtoi(rest.substr(0, dot), &layer) ||
      layer >= p.layers.size())
    return nullptr;
  for (const LayerSlot& s : kLayerSlots) {
    if (rest.substr(dot + 1) == s.suffix) return &(p.layers[layer].*s.member);
  }
  return nullptr;
}

bool is_float_storage(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16 || t == DType::kF8E4M3;
}

}  // namespace

std::vector<int32_t> PackedBatch::positions() const {
  std::vector<int32_t> pos(tokens.size());
  for (int64_t s = 0; s < num_seqs(); ++s) {
    for (int32_t t = cu_seqlens[s]; t < cu_seqlens[s + 1]; ++t) pos[t] = t - cu_seqlens[s];
  }
  return pos;
}

DecoderParams DecoderParams::zeros(const ModelConfig& config) {
  DecoderParams p;
  p.layers.resize(size_t(config.num_hidden_layers));
  for (const TensorSpec& spec : decoder_parameter_specs(config)) {
    *slot(p, spec.name) = Tensor::zeros(DType::kF32, spec.shape);
  }
  return p;
}

std::vector<std::pair<std::string, Tensor*>> DecoderParams::named(const ModelConfig& config) {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (const TensorSpec& spec : decoder_parameter_specs(config)) {
    out.emplace_back(spec.name, slot(*this, spec.name));
  }
  return out;
}

absl::StatusOr<Decoder> Decoder::create(ModelConfig config, DecoderParams params,
                                        const DecoderOptions& options) {
  FP8RL_RETURN_IF_ERROR(config.validate());
  FP8RL_REQUIRE(int64_t(params.layers.size()) == config.num_hidden_layers,
                "decoder: ", params.layers.size(), " layers of parameters for a ",
                config.num_hidden_layers, "-layer config");
  FP8RL_REQUIRE(config.head_dim % 2 == 0, "decoder: head_dim ", config.head_dim,
                " must be even for RoPE");
  FP8RL_REQUIRE(options.vocab_chunk > 0, "decoder: vocab_chunk must be positive");
  for (const TensorSpec& spec : decoder_parameter_specs(config)) {
    const Tensor* t = slot(params, spec.name);
    FP8RL_REQUIRE(t->defined(), "decoder: parameter ", spec.name, " is missing");
    FP8RL_REQUIRE(t->dtype() == DType::kF32 && t->shape() == spec.shape, "decoder: parameter ",
                  spec.name, " is ", t->to_string(), ", expected float32",
                  shape_to_string(spec.shape));
  }
  return Decoder(std::move(config), std::move(params), options);
}

absl::StatusOr<Decoder> Decoder::load(const std::string& dir, const DecoderOptions& options) {
  FP8RL_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(dir));
  FP8RL_ASSIGN_OR_RETURN(CheckpointReader ckpt, CheckpointReader::open(dir));
  DecoderParams params;
  params.layers.resize(size_t(config.num_hidden_layers));
  for (const TensorSpec& spec : decoder_parameter_specs(config)) {
    const TensorInfo* info = ckpt.find(spec.name);
    if (info && !is_float_storage(info->dtype))
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint ", dir, ": tensor ", spec.name, " has dtype ",
                       std::string(dtype_name(info->dtype)), ", expected a floating dtype"));
    auto w = load_weight_f32(ckpt, spec.name);
    if (!w.ok()) return annotate(w.status(), absl::StrCat("checkpoint ", dir));
    if (w->shape() != spec.shape)
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint ", dir, ": tensor ", spec.name, " has shape ", shape_to_string(w->shape()),
          ", config.json expects ", shape_to_string(spec.shape)));
    *slot(params, spec.name) = *std::move(w);
  }
  return create(std::move(config), std::move(params), options);
}

absl::Status validate_packed_batch(const ModelConfig& config, const PackedBatch& b,
                                   std::span<const int32_t> targets) {
  const auto& cu = b.cu_seqlens;
  FP8RL_REQUIRE(!cu.empty() && cu.front() == 0 && int64_t(cu.back()) == b.num_tokens(),
                "packed batch: cu_seqlens must run from 0 to the token count ", b.num_tokens());
  for (int64_t s = 0; s < b.num_seqs(); ++s) {
    const int64_t len = int64_t(cu[s + 1]) - cu[s];
    FP8RL_REQUIRE(len >= 0, "packed batch: cu_seqlens decrease at sequence ", s);
    FP8RL_REQUIRE(len <= config.max_position_embeddings, "packed batch: sequence ", s, " has ", len,
                  " tokens, more than max_position_embeddings ", config.max_position_embeddings);
  }
  for (int64_t t = 0; t < b.num_tokens(); ++t) {
    FP8RL_REQUIRE(b.tokens[t] >= 0 && b.tokens[t] < config.vocab_size, "packed batch: token ", t,
                  " has id ", b.tokens[t], " outside the vocabulary [0, ", config.vocab_size, ")");
  }
  FP8RL_REQUIRE(int64_t(targets.size()) == b.num_tokens(), "packed batch: ", targets.size(),
                " targets for ", b.num_tokens(), " tokens");
  for (size_t t = 0; t < targets.size(); ++t) {
    FP8RL_REQUIRE(targets[t] < config.vocab_size, "packed batch: target ", t, " has id ",
                  targets[t], " outside the vocabulary [0, ", config.vocab_size, ")");
  }
  return absl::OkStatus();
}

const Tensor& Decoder::head() const {
  return config_.tie_word_embeddings ? params_.embed_tokens : params_.lm_head;
}

}  // namespace fp8rl
