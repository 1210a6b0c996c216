// The decoder's forward for generation: new tokens of several sequences in one batch, each
// reading and extending its own KV cache, producing the logits of each sequence's last token.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "model/decoder.h"
#include "model/ops/rope.h"

namespace fp8rl {

// One sequence's cache: per layer, rows [len, kv_heads * head_dim] of K (after QK-norm and RoPE)
// and of V. Copyable (n > 1 samples start from a copy of the prompt's cache).
struct KvCache {
  std::vector<std::vector<float>> k, v;
  int64_t len = 0;
};

// One sequence's part of a step: `tokens` at positions [cache->len, cache->len + tokens.size()).
struct KvStep {
  KvCache* cache = nullptr;
  std::span<const int32_t> tokens;
};

// Runs `model` (which must outlive it) with its DecoderOptions' linear precision, the same
// kernels as Decoder::forward; not thread-safe (keeps a growing RoPE table).
class KvForward {
 public:
  explicit KvForward(const Decoder* model) : model_(model) {}

  // Appends every step's K/V to its cache and writes logits [steps, vocab] (raw, temperature 1)
  // of each step's last token. Steps need at least one token, ids already checked against the
  // vocabulary; each row of the result is what Decoder::forward on the whole sequence computes
  // for that position.
  absl::Status run(std::span<const KvStep> steps, std::vector<float>* logits);

 private:
  const Decoder* model_;
  RopeTable rope_;  // rebuilt larger on demand; entries do not depend on its size
};

}  // namespace fp8rl
