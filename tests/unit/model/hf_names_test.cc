// HF parameter lists and the quantization skip rules of slime's converters.
#include "model/hf_names.h"

#include "model/tiny_model.h"
#include "tests/catch.h"

using namespace fp8rl;

TEST_CASE("qwen3 parameter specs", "[model]") {
  ModelConfig c = tiny_qwen3_config();
  auto specs = decoder_parameter_specs(c);
  // embed + norm + lm_head + 11 per layer
  CHECK(specs.size() == 3 + 11 * size_t(c.num_hidden_layers));
  c.tie_word_embeddings = true;
  c.qk_norm = false;
  c.attention_bias = true;  // Qwen2: q/k/v biases, no QK-norm
  auto qwen2 = decoder_parameter_specs(c);
  CHECK(qwen2.size() == 2 + 12 * size_t(c.num_hidden_layers));
  bool has_bias = false;
  for (auto& s : qwen2) has_bias |= s.name == "model.layers.1.self_attn.k_proj.bias";
  CHECK(has_bias);
}

TEST_CASE("fp8 and int4 skip rules", "[model]") {
  CHECK(fp8_should_quantize("model.layers.0.mlp.up_proj.weight", {64, 32}));
  CHECK(!fp8_should_quantize("model.layers.0.mlp.up_proj.bias", {64}));
  CHECK(!fp8_should_quantize("model.embed_tokens.weight", {64, 32}));
  CHECK(!fp8_should_quantize("lm_head.weight", {64, 32}));
  CHECK(!fp8_should_quantize("model.layers.0.mlp.gate.weight", {8, 32}));  // MoE router
  CHECK(fp8_should_quantize("model.layers.0.mlp.gate_proj.weight", {64, 32}));
  CHECK(!fp8_should_quantize("model.layers.0.self_attn.q_norm.weight", {64}));
  auto rules = default_int4_ignore_rules();
  CHECK(int4_should_quantize("model.layers.0.self_attn.o_proj.weight", {64, 64}, rules));
  CHECK(!int4_should_quantize("lm_head.weight", {64, 64}, rules));
  CHECK(!int4_should_quantize("model.layers.0.mlp.gate.weight", {8, 64}, rules));
  CHECK(!int4_should_quantize("model.layers.0.self_attn.o_proj.weight", {64, 64},
                              {"model.layers.0.self_attn"}));  // module prefix rule
}
