// fp8rl's decoder parameters in Megatron-Core's GPT layout (TransformerEngine layer spec): the
// keys, shapes and row orders a Megatron torch_dist checkpoint holds (reference/ckpt.md §1), as
// slime's megatron_to_hf/qwen2.py converts them back. L layers, H hidden, G query groups
// (= KV heads), Q/G query heads per group, D head_dim, F ffn, V vocabulary padded to Vp:
//
//   embedding.word_embeddings.weight                            [Vp, H]  embed_tokens + zero rows
//   decoder.layers.self_attention.linear_qkv.layer_norm_weight  [L, H]   input_layernorm
//   decoder.layers.self_attention.linear_qkv.weight             [L, G·(Q/G+2)·D, H]
//       per query group g: its Q/G query heads' q_proj rows, its k_proj rows, its v_proj rows
//   decoder.layers.self_attention.linear_qkv.bias               [L, G·(Q/G+2)·D]  (attention_bias)
//   decoder.layers.self_attention.{q,k}_layernorm.weight        [L, D]   q_norm, k_norm (qk_norm)
//   decoder.layers.self_attention.linear_proj.weight            [L, H, Q·D]  o_proj
//   decoder.layers.mlp.linear_fc1.layer_norm_weight             [L, H]   post_attention_layernorm
//   decoder.layers.mlp.linear_fc1.weight                        [L, 2F, H]   gate rows, then up
//   decoder.layers.mlp.linear_fc2.weight                        [L, H, F]    down_proj
//   decoder.final_layernorm.weight                              [H]      model.norm
//   output_layer.weight                                         [Vp, H]  lm_head (untied only)
//
// Every Megatron parameter is described as rows (dimension 0 of one layer's slice; elements for
// 1-D parameters) drawn in order from runs of HF rows, so one description serves saving (gather)
// and loading (scatter), for any box-shaped chunk.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/hf_config.h"
#include "core/tensor.h"

namespace fp8rl {

// Megatron's vocabulary padding (--make-vocab-size-divisible-by, tensor parallel size 1).
int64_t padded_vocab_size(int64_t vocab_size, int64_t divisible_by);

// A run of rows of a Megatron parameter: `rows` rows of HF parameter `hf_index` (an index into
// decoder_parameter_specs(config)) from `first_row`, or zero padding when hf_index < 0.
struct RowRun {
  int hf_index = -1;
  int64_t first_row = 0;
  int64_t rows = 0;
};

struct MegatronParam {
  std::string key;
  Shape layer_shape;     // one layer's slice: {rows} or {rows, row_elems}
  bool stacked = false;  // "decoder.layers.*": the global shape is {L} + layer_shape
  std::vector<std::vector<RowRun>> runs;  // per layer (one entry unless stacked), in row order

  Shape shape() const;
  int64_t rows() const { return layer_shape[0]; }
  int64_t row_elems() const { return layer_shape.size() > 1 ? layer_shape[1] : 1; }
};

// The Megatron parameters of `config` in checkpoint order. InvalidArgument when padded_vocab is
// below the vocabulary or the config has a feature Megatron's layout here does not cover.
absl::StatusOr<std::vector<MegatronParam>> megatron_params(const ModelConfig& config,
                                                           int64_t padded_vocab);

// A box [offsets, offsets + sizes) of a Megatron parameter's global tensor. The elements of the
// box are in C order in `box` (float32), and `hf` holds the float32 HF tensors in
// decoder_parameter_specs order. InvalidArgument when the box is not inside the parameter.
absl::Status gather_box(const MegatronParam& p, const Shape& offsets, const Shape& sizes,
                        const std::vector<const float*>& hf, float* box);
// The inverse: writes the box's non-padding elements into the HF tensors.
absl::Status scatter_box(const MegatronParam& p, const Shape& offsets, const Shape& sizes,
                         const float* box, const std::vector<float*>& hf);

}  // namespace fp8rl
