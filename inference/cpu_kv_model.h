// The CPU decoder behind the generation engine: new tokens of several sequences in one batch,
// each reading and extending its own float32 KV cache, with the kernels of Decoder::forward.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "inference/kv_model.h"
#include "model/decoder.h"
#include "model/ops/rope.h"

namespace fp8rl {

// Runs `model` (which must outlive it) with its DecoderOptions' linear precision; reads the
// model's parameters at every call, so a weight swap needs nothing else. Keeps a growing RoPE
// table.
class CpuKvModel final : public KvModel {
 public:
  explicit CpuKvModel(const Decoder* model) : model_(model) {}

  const ModelConfig& config() const override { return model_->config(); }
  int64_t vocab_chunk() const override { return model_->options().vocab_chunk; }
  // Every step's logits row is filled; argmax from greedy_token for steps without need_logits.
  absl::Status run(std::span<const KvStep> steps, KvOutput* out) override;
  absl::Status fork(const KvCache& from, KvCache* to) override;
  absl::StatusOr<PromptScores> score(std::span<const int32_t> tokens, bool with_logits) override;
  absl::Status weights_changed() override { return absl::OkStatus(); }

 private:
  const Decoder* model_;
  RopeTable rope_;  // rebuilt larger on demand; entries do not depend on its size
};

}  // namespace fp8rl
