// HF ↔ Megatron-Core parameter layout (trainer/megatron_layout.h).
#include "trainer/megatron_layout.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "model/hf_names.h"

namespace fp8rl {
namespace {

// The box of a chunk over (layer, row, column); absent dimensions span [0, 1).
struct Box {
  int64_t l0 = 0, nl = 1, r0 = 0, nr = 1, c0 = 0, nc = 1;
};

absl::StatusOr<Box> to_box(const MegatronParam& p, const Shape& offsets, const Shape& sizes) {
  const Shape shape = p.shape();
  FP8RL_REQUIRE(offsets.size() == shape.size() && sizes.size() == shape.size(), p.key,
                ": a chunk of rank ", offsets.size(), " for shape ", shape_to_string(shape));
  for (size_t d = 0; d < shape.size(); ++d) {
    FP8RL_REQUIRE(offsets[d] >= 0 && sizes[d] >= 0 && offsets[d] + sizes[d] <= shape[d], p.key,
                  ": chunk at ", shape_to_string(offsets), " of size ", shape_to_string(sizes),
                  " is outside ", shape_to_string(shape));
  }
  Box b;
  size_t d = 0;
  if (p.stacked) {
    b.l0 = offsets[0];
    b.nl = sizes[0];
    d = 1;
  }
  b.r0 = offsets[d];
  b.nr = sizes[d];
  if (p.layer_shape.size() > 1) {
    b.c0 = offsets[d + 1];
    b.nc = sizes[d + 1];
  }
  return b;
}

// Calls fn(hf_row or nullptr for padding, box_row) for every row of the box, where hf_row points
// at the box's first column in the HF tensor `hf_index`.
template <typename Fn>
void for_each_row(const MegatronParam& p, const Box& b, Fn fn) {
  for (int64_t li = 0; li < b.nl; ++li) {
    const std::vector<RowRun>& runs = p.runs[size_t(p.stacked ? b.l0 + li : 0)];
    int64_t start = 0;
    for (const RowRun& run : runs) {
      const int64_t lo = std::max(start, b.r0), hi = std::min(start + run.rows, b.r0 + b.nr);
      for (int64_t r = lo; r < hi; ++r) {
        const int64_t box_row = li * b.nr + (r - b.r0);
        if (run.hf_index < 0) {
          fn(-1, int64_t(0), box_row);
        } else {
          fn(run.hf_index, (run.first_row + r - start) * p.row_elems() + b.c0, box_row);
        }
      }
      start += run.rows;
    }
  }
}

}  // namespace

int64_t padded_vocab_size(int64_t vocab_size, int64_t divisible_by) {
  if (divisible_by <= 1) return vocab_size;
  return (vocab_size + divisible_by - 1) / divisible_by * divisible_by;
}

Shape MegatronParam::shape() const {
  if (!stacked) return layer_shape;
  Shape s{int64_t(runs.size())};
  s.insert(s.end(), layer_shape.begin(), layer_shape.end());
  return s;
}

absl::StatusOr<std::vector<MegatronParam>> megatron_params(const ModelConfig& c,
                                                           int64_t padded_vocab) {
  FP8RL_RETURN_IF_ERROR(c.validate());
  FP8RL_REQUIRE(padded_vocab >= c.vocab_size, "padded vocabulary ", padded_vocab,
                " is below vocab_size ", c.vocab_size);
  std::map<std::string, int> index;
  const std::vector<TensorSpec> specs = decoder_parameter_specs(c);
  for (size_t i = 0; i < specs.size(); ++i) index[specs[i].name] = int(i);
  auto hf = [&](const std::string& name) { return index.at(name); };

  const int64_t h = c.hidden_size, d = c.head_dim, groups = c.num_key_value_heads;
  const int64_t q_per_group = c.num_attention_heads / groups, f = c.intermediate_size;
  const int64_t qkv_rows = groups * (q_per_group + 2) * d;
  std::vector<MegatronParam> out;

  auto vocab_rows = [&](const std::string& name) {
    std::vector<RowRun> runs{{hf(name), 0, c.vocab_size}};
    if (padded_vocab > c.vocab_size) runs.push_back({-1, 0, padded_vocab - c.vocab_size});
    return runs;
  };
  out.push_back({"embedding.word_embeddings.weight",
                 {padded_vocab, h},
                 false,
                 {vocab_rows("model.embed_tokens.weight")}});

  // One stacked parameter whose layer i rows come from runs(prefix of layer i).
  auto stacked = [&](std::string key, Shape layer_shape,
                     const std::function<std::vector<RowRun>(const std::string&)>& runs) {
    MegatronParam p{std::move(key), std::move(layer_shape), true, {}};
    for (int64_t i = 0; i < c.num_hidden_layers; ++i)
      p.runs.push_back(runs(absl::StrCat("model.layers.", i, ".")));
    out.push_back(std::move(p));
  };
  auto whole = [&](const char* suffix, int64_t rows) {
    return [=, &hf](const std::string& prefix) {
      return std::vector<RowRun>{{hf(prefix + suffix), 0, rows}};
    };
  };
  // Query group g: its query heads, its key head, its value head (rows of width `width`).
  auto qkv = [&](const char* kind) {
    return [=, &hf](const std::string& prefix) {
      std::vector<RowRun> runs;
      for (int64_t g = 0; g < groups; ++g) {
        runs.push_back({hf(absl::StrCat(prefix, "self_attn.q_proj.", kind)), g * q_per_group * d,
                        q_per_group * d});
        runs.push_back({hf(absl::StrCat(prefix, "self_attn.k_proj.", kind)), g * d, d});
        runs.push_back({hf(absl::StrCat(prefix, "self_attn.v_proj.", kind)), g * d, d});
      }
      return runs;
    };
  };

  stacked("decoder.layers.self_attention.linear_qkv.layer_norm_weight", {h},
          whole("input_layernorm.weight", h));
  stacked("decoder.layers.self_attention.linear_qkv.weight", {qkv_rows, h}, qkv("weight"));
  if (c.attention_bias) {
    stacked("decoder.layers.self_attention.linear_qkv.bias", {qkv_rows}, qkv("bias"));
  }
  if (c.qk_norm) {
    stacked("decoder.layers.self_attention.q_layernorm.weight", {d},
            whole("self_attn.q_norm.weight", d));
    stacked("decoder.layers.self_attention.k_layernorm.weight", {d},
            whole("self_attn.k_norm.weight", d));
  }
  stacked("decoder.layers.self_attention.linear_proj.weight", {h, c.num_attention_heads * d},
          whole("self_attn.o_proj.weight", h));
  stacked("decoder.layers.mlp.linear_fc1.layer_norm_weight", {h},
          whole("post_attention_layernorm.weight", h));
  stacked("decoder.layers.mlp.linear_fc1.weight", {2 * f, h}, [&](const std::string& prefix) {
    return std::vector<RowRun>{{hf(prefix + "mlp.gate_proj.weight"), 0, f},
                               {hf(prefix + "mlp.up_proj.weight"), 0, f}};
  });
  stacked("decoder.layers.mlp.linear_fc2.weight", {h, f}, whole("mlp.down_proj.weight", h));
  out.push_back(
      {"decoder.final_layernorm.weight", {h}, false, {{{hf("model.norm.weight"), 0, h}}}});
  if (!c.tie_word_embeddings) {
    out.push_back(
        {"output_layer.weight", {padded_vocab, h}, false, {vocab_rows("lm_head.weight")}});
  }
  return out;
}

absl::Status gather_box(const MegatronParam& p, const Shape& offsets, const Shape& sizes,
                        const std::vector<const float*>& hf, float* box) {
  FP8RL_ASSIGN_OR_RETURN(const Box b, to_box(p, offsets, sizes));
  for_each_row(p, b, [&](int hf_index, int64_t hf_offset, int64_t box_row) {
    float* dst = box + box_row * b.nc;
    if (hf_index < 0) {
      std::fill(dst, dst + b.nc, 0.0f);
    } else {
      std::memcpy(dst, hf[size_t(hf_index)] + hf_offset, size_t(b.nc) * sizeof(float));
    }
  });
  return absl::OkStatus();
}

absl::Status scatter_box(const MegatronParam& p, const Shape& offsets, const Shape& sizes,
                         const float* box, const std::vector<float*>& hf) {
  FP8RL_ASSIGN_OR_RETURN(const Box b, to_box(p, offsets, sizes));
  for_each_row(p, b, [&](int hf_index, int64_t hf_offset, int64_t box_row) {
    if (hf_index >= 0) {
      std::memcpy(hf[size_t(hf_index)] + hf_offset, box + box_row * b.nc,
                  size_t(b.nc) * sizeof(float));
    }
  });
  return absl::OkStatus();
}

}  // namespace fp8rl
