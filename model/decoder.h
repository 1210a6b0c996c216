// The CPU decoder: a Qwen3-architecture transformer (Qwen2 and Llama through the config: q/k/v
// biases, no QK-norm) over packed variable-length sequences, with a hand-written backward and
// the per-token log-probabilities and entropies RL losses consume.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/hf_config.h"
#include "core/tensor.h"
#include "model/ops/linear.h"
#include "model/ops/rope.h"

namespace fp8rl {

// Several sequences laid end to end: sequence i is tokens[cu_seqlens[i], cu_seqlens[i+1]); its
// positions restart at 0 and its attention never sees another sequence.
struct PackedBatch {
  std::vector<int32_t> tokens;
  std::vector<int32_t> cu_seqlens{0};

  int64_t num_tokens() const { return int64_t(tokens.size()); }
  int64_t num_seqs() const { return int64_t(cu_seqlens.size()) - 1; }
  // The position of every token within its sequence.
  std::vector<int32_t> positions() const;
};

// One decoder layer's parameters, float32 CPU tensors in HF layout. Biases are undefined unless
// config.attention_bias; q_norm/k_norm undefined unless config.qk_norm.
struct DecoderLayerParams {
  Tensor input_layernorm, post_attention_layernorm;
  Tensor q_proj, k_proj, v_proj, o_proj;
  Tensor q_bias, k_bias, v_bias;
  Tensor q_norm, k_norm;
  Tensor gate_proj, up_proj, down_proj;
};

// Every parameter of a decoder (also the shape of its gradients).
struct DecoderParams {
  Tensor embed_tokens;
  std::vector<DecoderLayerParams> layers;
  Tensor norm;
  Tensor lm_head;  // undefined when config.tie_word_embeddings: embed_tokens serves as the head

  // Zero-filled tensors of the shapes decoder_parameter_specs(config) names.
  static DecoderParams zeros(const ModelConfig& config);
  // (HF name, tensor) for every entry of decoder_parameter_specs(config), in its order. The
  // pointers refer into *this and live as long as it does.
  std::vector<std::pair<std::string, Tensor*>> named(const ModelConfig& config);
};

// InvalidArgument for malformed cu_seqlens, token ids outside [0, vocab), sequences longer than
// max_position_embeddings, or targets of the wrong count or >= vocab (negative: no target). Every
// backend's validate.
absl::Status validate_packed_batch(const ModelConfig& config, const PackedBatch& batch,
                                   std::span<const int32_t> targets);

struct DecoderOptions {
  LinearOptions linear;        // the q/k/v/o and MLP projections; embeddings, head, norms: fp32
  int64_t vocab_chunk = 2048;  // vocabulary columns of logits held at once by token_stats
};

// Activations a backward needs, produced by Decoder::forward. Move-only in practice (large).
struct DecoderForward {
  struct Layer {
    std::vector<float> x, xn1, rstd1;                 // layer input, its norm, 1/rms
    std::vector<float> q_raw, k_raw, q_rstd, k_rstd;  // projections before QK-norm
    std::vector<float> q, k, v, attn, lse;            // after norm + RoPE; attention out and LSE
    std::vector<float> h, xn2, rstd2;                 // residual after attention, its norm
    std::vector<float> gate, up, act;                 // MLP
  };
  PackedBatch batch;
  std::vector<int32_t> positions;
  std::vector<int32_t> targets;
  RopeTable rope;
  std::vector<Layer> layers;
  std::vector<float> x_final, hidden, rstd_final;  // last residual, final-normed hidden states
  std::vector<float> logprob, entropy;             // [tokens]: the results
  std::vector<float> lse, mean_logit;              // token_stats' saved state
};

// A decoder with its parameters. Const methods are safe to call concurrently; the parameters may
// be changed between calls through params().
class Decoder {
 public:
  // Reads DIR/config.json and the weights by their HF names through CheckpointReader and
  // load_weight_f32 (BF16/F16/F32, blockwise FP8 and INT4 pack-quantized checkpoints all load as
  // float32). NotFound naming the tensor when one is missing; InvalidArgument naming tensor and
  // shapes (or dtype) when one does not match the config.
  static absl::StatusOr<Decoder> load(const std::string& dir, const DecoderOptions& options = {});
  // Takes ownership of `params`; InvalidArgument when a tensor is missing or misshapen.
  static absl::StatusOr<Decoder> create(ModelConfig config, DecoderParams params,
                                        const DecoderOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const DecoderOptions& options() const { return options_; }
  void set_options(const DecoderOptions& options) { options_ = options; }
  DecoderParams& params() { return params_; }
  const DecoderParams& params() const { return params_; }

  // validate_packed_batch for this model's config.
  absl::Status validate(const PackedBatch& batch, std::span<const int32_t> targets) const {
    return validate_packed_batch(config_, batch, targets);
  }

  // Runs the model on `batch` and computes, at every position, the log-probability of
  // targets[t] (negative: none, logprob 0) and the entropy of the next-token distribution.
  absl::StatusOr<DecoderForward> forward(const PackedBatch& batch,
                                         std::span<const int32_t> targets) const;
  // Full logits [tokens, vocab] of a forward (for tests and tools; materialises the vocabulary).
  std::vector<float> logits(const DecoderForward& fwd) const;
  // Accumulates into *grads (shaped like params(), e.g. DecoderParams::zeros) the gradient of
  // sum_t dlogprob[t] * logprob[t] + dentropy[t] * entropy[t].
  absl::Status backward(const DecoderForward& fwd, std::span<const float> dlogprob,
                        std::span<const float> dentropy, DecoderParams* grads) const;

 private:
  Decoder(ModelConfig config, DecoderParams params, const DecoderOptions& options)
      : config_(std::move(config)), params_(std::move(params)), options_(options) {}
  const Tensor& head() const;

  ModelConfig config_;
  DecoderParams params_;
  DecoderOptions options_;
};

}  // namespace fp8rl
