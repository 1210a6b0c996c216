// HF config.json for Qwen3 decoders, and the Qwen2 / Llama fields that differ.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/dtype.h"

namespace fp8rl {

struct ModelConfig {
  std::string model_type;  // "qwen3", "qwen2", "llama"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads (Qwen2, Llama)
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;      // also read from transformers 5's rope_parameters.rope_theta
  bool tie_word_embeddings = false;
  bool attention_bias = false;      // Qwen2: true (q/k/v biases); Qwen3, Llama: the field, default false
  bool qk_norm = false;             // Qwen3's q_norm / k_norm
  std::string hidden_act = "silu";
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // eos_token_id may be an int or a list
  DType dtype = DType::kBF16;          // torch_dtype (transformers < 5) or dtype (>= 5)
  nlohmann::json raw;                  // the whole file, so writers keep fields fp8rl ignores

  // InvalidArgument naming the field: non-positive sizes, heads not dividing, ...
  absl::Status validate() const;
};

// Parses a config.json object; `source` (a path) prefixes error messages.
absl::StatusOr<ModelConfig> parse_model_config(const nlohmann::json& j, const std::string& source);
// Reads and parses DIR/config.json.
absl::StatusOr<ModelConfig> load_model_config(const std::string& dir);
// A Qwen3 config.json for `c` (raw fields first, then the typed ones overriding them).
nlohmann::json model_config_to_json(const ModelConfig& c);

}  // namespace fp8rl
