// The part of the KvModel contract shared by its implementations (inference/kv_model.h).
#include "inference/kv_model.h"

namespace fp8rl {

ScoringBatch scoring_batch(std::span<const int32_t> tokens) {
  ScoringBatch s;
  s.batch.tokens.assign(tokens.begin(), tokens.end());
  s.batch.cu_seqlens = {0, int32_t(tokens.size())};
  s.targets.assign(tokens.size(), -1);
  for (size_t i = 0; i + 1 < tokens.size(); ++i) s.targets[i] = tokens[i + 1];
  return s;
}

}  // namespace fp8rl
