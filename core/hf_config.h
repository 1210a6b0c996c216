// HF config.json for Qwen3 decoders, and the Qwen2 / Llama fields that differ.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

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
  // Defaults to hidden_size / num_attention_heads (Qwen2, Llama) or 128 (Qwen3, as transformers'
  // Qwen3Config does).
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;  // also read from transformers 5's rope_parameters.rope_theta
  bool tie_word_embeddings = false;
  // Qwen2: true (q/k/v biases); Qwen3, Llama: the field, default false.
  bool attention_bias = false;
  bool qk_norm = false;  // Qwen3's q_norm / k_norm
  std::string hidden_act = "silu";
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // eos_token_id may be an int or a list
  DType dtype = DType::kBF16;          // torch_dtype (transformers < 5) or dtype (>= 5)
  nlohmann::json raw;                  // the whole file, so writers keep fields fp8rl ignores

  // InvalidArgument naming the field: non-positive sizes, heads not dividing, ...
  absl::Status validate() const;
};

// Parses a config.json object; `source` (a path) prefixes error messages. Absent and null optional
// fields take their defaults; InvalidArgument names the field that is missing, mistyped or
// inconsistent (validate()). model_type must be qwen3, qwen2 or llama.
absl::StatusOr<ModelConfig> parse_model_config(const nlohmann::json& j, const std::string& source);
// Reads and parses DIR/config.json; NotFound when it is absent.
absl::StatusOr<ModelConfig> load_model_config(const std::string& dir);
// A Qwen3 config.json for `c` (raw fields first, then the typed ones overriding them). Always
// model_type "qwen3" and torch_dtype "bfloat16" (fp8rl writes BF16 weights, or FP8/INT4 with BF16
// activations); a transformers-5 `dtype` or `rope_parameters.rope_theta` in raw is kept in step.
// qk_norm is not written: Qwen3 always has it.
nlohmann::json model_config_to_json(const ModelConfig& c);

}  // namespace fp8rl
