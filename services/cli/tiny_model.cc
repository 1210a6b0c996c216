// `fp8rl tiny-model`: write a small random Qwen3 HF checkpoint.
#include "model/tiny_model.h"

#include <cstdio>

#include "core/logging.h"
#include "services/cli/commands.h"

namespace fp8rl {

void register_tiny_model(CLI::App& app, int& rc) {
  auto o = std::make_shared<TinyModelOptions>();
  o->config = tiny_qwen3_config();
  auto dtype = std::make_shared<std::string>("bfloat16");
  ModelConfig& c = o->config;
  CLI::App* sub = app.add_subcommand("tiny-model", "Write a small random Qwen3 HF checkpoint");
  sub->add_option("--save-dir", o->save_dir, "Output folder (must not exist)")->required();
  sub->add_option("--hidden-size", c.hidden_size);
  sub->add_option("--intermediate-size", c.intermediate_size);
  sub->add_option("--num-layers", c.num_hidden_layers);
  sub->add_option("--num-attention-heads", c.num_attention_heads);
  sub->add_option("--num-key-value-heads", c.num_key_value_heads);
  sub->add_option("--head-dim", c.head_dim);
  sub->add_option("--vocab-size", c.vocab_size);
  sub->add_option("--max-position-embeddings", c.max_position_embeddings);
  sub->add_option("--rope-theta", c.rope_theta);
  sub->add_option("--tie-word-embeddings", c.tie_word_embeddings);
  sub->add_option("--dtype", *dtype, "bfloat16 or float32")
      ->check(CLI::IsMember({"bfloat16", "float32"}));
  sub->add_option("--seed", o->seed);
  sub->add_option("--init-std", o->init_std);
  sub->add_option("--max-shard-bytes", o->max_shard_bytes,
                  "Split into shards of at most this many bytes (0: one file)");
  sub->callback([o, dtype, &rc] {
    o->config.dtype = *dtype == "float32" ? DType::kF32 : DType::kBF16;
    absl::Status st = write_tiny_model(*o);
    if (!st.ok()) {
      FP8RL_LOG_ERROR("tiny-model failed: {}", st.ToString());
      rc = 1;
      return;
    }
    std::printf("wrote %s: qwen3, hidden %lld, %lld layers, vocab %lld\n", o->save_dir.c_str(),
                (long long)o->config.hidden_size, (long long)o->config.num_hidden_layers,
                (long long)o->config.vocab_size);
  });
}

}  // namespace fp8rl
