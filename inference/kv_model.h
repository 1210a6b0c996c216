// What the generation engine runs: a decoder whose sequences keep their keys and values in a KV
// cache, so that each step forwards only the new tokens. Two implementations: the CPU decoder
// (inference/cpu_kv_model.h, per-sequence float32 caches) and the CUDA decoder
// (inference/cuda/cuda_kv_model.h, a paged bf16 pool on the device).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/hf_config.h"
#include "model/decoder.h"

namespace fp8rl {

// A backend's storage for one sequence's keys and values; released with the cache.
class KvCacheData {
 public:
  virtual ~KvCacheData() = default;
};

// One sequence's cache: `len` positions whose K (after QK-norm and RoPE) and V are stored in
// `data` (null until the first step). Move-only: a copy is KvModel::fork's job.
struct KvCache {
  int64_t len = 0;
  std::unique_ptr<KvCacheData> data;
};

// One sequence's part of a step: `tokens` at positions [cache->len, cache->len + tokens.size()).
struct KvStep {
  KvCache* cache = nullptr;
  std::span<const int32_t> tokens;
  // Whether the caller needs the whole logits row of the step's last token; when false only its
  // argmax and that token's log-prob are (a greedy step with no extra log-probs), and a GPU
  // backend keeps the row on the device.
  bool need_logits = true;
};

// What a step produces per KvStep i (raw logits, temperature 1).
struct KvOutput {
  // [steps, vocab]: row i holds step i's logits when steps[i].need_logits; other rows are
  // unspecified. Reused across steps (the capacity stays).
  std::vector<float> logits;
  // Per step: the first maximal logit's id and its log_softmax: on the CPU greedy_token(row,
  // vocab_chunk()) (inference/sampling.h), on a GPU the same rule over the device's float32
  // logits (its log-sum-exp summed in another order).
  std::vector<int32_t> argmax;
  std::vector<float> argmax_logprob;
};

// A prompt scored by a full forward (SGLang's input log-probs).
struct PromptScores {
  std::vector<float> logprob;  // [len - 1]: log-prob of token p + 1 given tokens [0, p]
  std::vector<float> logits;   // [len, vocab] when asked for, else empty
};

// One sequence packed for a full forward, each position's target the next token (none at the
// last): what KvModel::score runs.
struct ScoringBatch {
  PackedBatch batch;
  std::vector<int32_t> targets;
};
ScoringBatch scoring_batch(std::span<const int32_t> tokens);

// Not thread-safe; the engine drives it from one thread. Caches must not outlive the model.
class KvModel {
 public:
  virtual ~KvModel() = default;

  virtual const ModelConfig& config() const = 0;
  // Chunk of the vocabulary the trainer's log-sum-exp folds at a time (inference/sampling.h).
  virtual int64_t vocab_chunk() const = 0;

  // Appends every step's K/V to its cache and fills `out` for each step's last token. Steps need
  // at least one token, ids already checked against the vocabulary; each result is what the
  // decoder's full forward over the whole sequence computes for that position. On error the
  // caches are left as they were or longer in capacity, never shorter; their `len` is unchanged.
  virtual absl::Status run(std::span<const KvStep> steps, KvOutput* out) = 0;

  // *to becomes an independent copy of `from` (n > 1 samples continuing one prompt).
  virtual absl::Status fork(const KvCache& from, KvCache* to) = 0;

  // The full forward over `tokens` (one sequence), with logits when `with_logits`.
  virtual absl::StatusOr<PromptScores> score(std::span<const int32_t> tokens, bool with_logits) = 0;

  // The weights changed under the model (a weight update swapped the CPU decoder's parameters):
  // a GPU backend refreshes its device copy. Called between steps.
  virtual absl::Status weights_changed() = 0;
};

}  // namespace fp8rl
