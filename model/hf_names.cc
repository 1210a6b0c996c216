// Qwen3-style parameter names and the quantization skip rules.
#include "model/hf_names.h"

#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fp8rl {

std::vector<TensorSpec> decoder_parameter_specs(const ModelConfig& c) {
  const DType t = c.dtype;
  const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim;
  const int64_t kv = c.num_key_value_heads * c.head_dim, inter = c.intermediate_size;
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", t, {c.vocab_size, h}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    specs.push_back({p + "input_layernorm.weight", t, {h}});
    specs.push_back({p + "self_attn.q_proj.weight", t, {q, h}});
    specs.push_back({p + "self_attn.k_proj.weight", t, {kv, h}});
    specs.push_back({p + "self_attn.v_proj.weight", t, {kv, h}});
    if (c.attention_bias) {
      specs.push_back({p + "self_attn.q_proj.bias", t, {q}});
      specs.push_back({p + "self_attn.k_proj.bias", t, {kv}});
      specs.push_back({p + "self_attn.v_proj.bias", t, {kv}});
    }
    specs.push_back({p + "self_attn.o_proj.weight", t, {h, q}});
    if (c.qk_norm) {
      specs.push_back({p + "self_attn.q_norm.weight", t, {c.head_dim}});
      specs.push_back({p + "self_attn.k_norm.weight", t, {c.head_dim}});
    }
    specs.push_back({p + "post_attention_layernorm.weight", t, {h}});
    specs.push_back({p + "mlp.gate_proj.weight", t, {inter, h}});
    specs.push_back({p + "mlp.up_proj.weight", t, {inter, h}});
    specs.push_back({p + "mlp.down_proj.weight", t, {h, inter}});
  }
  specs.push_back({"model.norm.weight", t, {h}});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", t, {c.vocab_size, h}});
  return specs;
}

bool fp8_should_quantize(const std::string& name, const Shape& shape) {
  if (shape.size() != 2 || !absl::EndsWith(name, ".weight")) return false;
  static const char* kSkip[] = {"layernorm", "embed",     "router",       "mlp.gate.", "norm",
                                "lm_head",   "eh_proj",   "weights_proj", "conv1d",    "A_log",
                                "dt_bias",   "in_proj_a", "in_proj_b"};
  for (const char* s : kSkip) {
    if (absl::StrContains(name, s)) return false;
  }
  return true;
}

bool int4_should_quantize(const std::string& name, const Shape& shape,
                          const std::vector<std::string>& ignore_rules) {
  if (shape.size() != 2 || !absl::EndsWith(name, ".weight")) return false;
  const std::string module = name.substr(0, name.size() - std::string(".weight").size());
  for (const std::string& rule : ignore_rules) {
    if (absl::StartsWith(rule, "re:")) {
      if (std::regex_match(name, std::regex(rule.substr(3)))) return false;
    } else if (rule == name || rule == module || absl::StartsWith(name, rule + ".")) {
      return false;
    }
  }
  return true;
}

std::vector<std::string> default_int4_ignore_rules() {
  return {"re:.*lm_head.*", "re:.*norm.*", "re:.*embed.*", "re:.*mlp\\.gate\\..*"};
}

}  // namespace fp8rl
