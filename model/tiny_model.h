// Writes a small random Qwen3 HF checkpoint (config.json, generation_config.json, safetensors,
// optionally sharded) for tests, benchmarks and the demo.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "core/hf_config.h"

namespace fp8rl {

struct TinyModelOptions {
  ModelConfig config;    // validated; dtype kBF16 or kF32
  std::string save_dir;  // must not exist; written through a staging folder
  uint64_t seed = 0;
  double init_std = 0.02;  // linears and embeddings ~ N(0, init_std); norms 1 + N(0, 0.1 * std)
  uint64_t max_shard_bytes = 0;  // 0: one model.safetensors; else shards + index.json
};

// A Qwen3 config with small defaults (hidden 256, 2 layers, vocab 1024, GQA 4/2 heads of 64).
ModelConfig tiny_qwen3_config();

// The geometry of Qwen3's small dense models (28 layers, 16 query and 8 KV heads of 128, vocab
// 151936, tied embeddings, rope_theta 1e6, 40960 positions) with `hidden` and `intermediate`:
// Qwen3-0.6B is (1024, 3072), Qwen3-1.7B (2048, 6144). For benchmarks on random weights.
ModelConfig qwen3_small_config(int64_t hidden, int64_t intermediate);

absl::Status write_tiny_model(const TinyModelOptions& options);

}  // namespace fp8rl
