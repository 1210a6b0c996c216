// HF parameter names and shapes of Qwen3-style decoders (Qwen2 and Llama differ only in biases
// and QK-norm), and the rules that decide which of them are quantized.
#pragma once

#include <string>
#include <vector>

#include "core/hf_config.h"
#include "core/safetensors.h"

namespace fp8rl {

// Every parameter a checkpoint of `config` holds, in HF's order (embeddings, layers, norm, head).
// lm_head.weight is absent when tie_word_embeddings is set. Dtype: config.dtype.
std::vector<TensorSpec> decoder_parameter_specs(const ModelConfig& config);

// slime's tools/convert_hf_to_fp8.py rule: a 2-D "*.weight" whose name contains none of
// layernorm, embed, router, mlp.gate., norm, lm_head, eh_proj, weights_proj, conv1d, A_log,
// dt_bias, in_proj_a, in_proj_b.
bool fp8_should_quantize(const std::string& name, const Shape& shape);

// compressed-tensors ignore rules: "re:<regex>" (std::regex_match on the whole name), or an exact
// name, or a module-name prefix. A 2-D "*.weight" not ignored is quantized.
bool int4_should_quantize(const std::string& name, const Shape& shape,
                          const std::vector<std::string>& ignore_rules);
// Embeddings, lm_head, norms and the MoE router stay BF16.
std::vector<std::string> default_int4_ignore_rules();

}  // namespace fp8rl
