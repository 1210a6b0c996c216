// fp8rl_ckpt_probe: trains a randomly initialised decoder for a few steps, optionally after loading
// a checkpoint and before saving one, and dumps what the trainer holds, for
// tests/interop/test_checkpoint.py and tests/gpu/dcp_check.py. A test tool, not a user one.
//
// The batch of step s (4 samples, PPO ratio against the rollout log-probs) (s optimizer steps
// already taken) depends only on --data-seed and s, so "train N, save, load in a new process, train
// M" sees the batches of N + M uninterrupted steps. stdout: one JSON object per step {"step",
// "loss", "pg_loss", "grad_norm", "lr"} (%.17g), then
// {"iteration", "saved"}. --dump writes safetensors with "hf/<name>" (float32 weights),
// "hf/<name>.master|.exp_avg|.exp_avg_sq" (AdamW state) and "dcp/<key>" (every tensor the
// checkpoint holds, whole, in its dtype). Errors: "fp8rl_ckpt_probe: CODE: message", exit 1.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "core/fs.h"
#include "core/hf_config.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "trainer/checkpoint.h"

namespace fp8rl {
namespace {

struct ProbeOptions {
  std::string config, load, save, dump;
  int64_t load_iteration = 0;
  uint64_t seed = 1, data_seed = 7;
  int64_t steps = 0;
  double lr = 1e-2, weight_decay = 0.01;
  CheckpointArgs args;
};

absl::StatusOr<Trainer> make_trainer(const ProbeOptions& o) {
  FP8RL_ASSIGN_OR_RETURN(const std::string text, read_file(o.config));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  FP8RL_REQUIRE(!j.is_discarded(), o.config, " is not JSON");
  FP8RL_ASSIGN_OR_RETURN(const ModelConfig config, parse_model_config(j, o.config));
  DecoderParams params = DecoderParams::zeros(config);
  Rng rng(o.seed);
  for (auto& [name, t] : params.named(config)) {
    const bool norm = absl::StrContains(name, "norm");
    for (int64_t i = 0; i < t->numel(); ++i)
      t->data<float>()[i] = float(norm ? 1 + 0.1 * rng.normal() : 0.1 * rng.normal());
  }
  FP8RL_ASSIGN_OR_RETURN(Decoder policy, Decoder::create(config, std::move(params)));
  TrainerOptions options;
  options.lr.lr = o.lr;
  options.adam.weight_decay = o.weight_decay;
  return Trainer::create(std::move(policy), std::nullopt, options);
}

std::vector<Sample> batch_for_step(uint64_t data_seed, int64_t step, int64_t vocab) {
  Rng rng(data_seed * 1000003 + uint64_t(step));
  std::vector<Sample> batch;
  for (int i = 0; i < 4; ++i) {
    Sample s;
    const int prompt = 2 + int(rng.next_u64() % 3), response = 3 + int(rng.next_u64() % 3);
    for (int t = 0; t < prompt + response; ++t)
      s.tokens.push_back(int32_t(rng.next_u64() % uint64_t(vocab)));
    s.response_length = response;
    s.loss_mask.assign(size_t(response), 1.0f);
    s.advantages.assign(size_t(response), rng.uniform() < 0.5 ? -1.0f : 1.0f);
    for (int t = 0; t < response; ++t)
      s.rollout_log_probs.push_back(float(-std::log(double(vocab)) + 0.5 * rng.normal()));
    batch.push_back(std::move(s));
  }
  return batch;
}

absl::Status dump(Trainer& trainer, const ProbeOptions& o) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, t] : trainer.policy().params().named(trainer.policy().config()))
    out.emplace_back("hf/" + name, *t);
  for (auto& [name, t] : trainer.optimizer().named_state()) out.emplace_back("hf/" + name, t);
  FP8RL_ASSIGN_OR_RETURN(auto megatron, megatron_state_dict(trainer, o.args));
  for (auto& [key, t] : megatron) out.emplace_back("dcp/" + key, std::move(t));
  return save_safetensors(o.dump, out);
}

absl::Status run(const ProbeOptions& o) {
  FP8RL_ASSIGN_OR_RETURN(Trainer trainer, make_trainer(o));
  if (!o.load.empty()) {
    FP8RL_RETURN_IF_ERROR(load_checkpoint(&trainer, o.load, o.load_iteration).status());
  }
  TrainConfig config;
  config.use_rollout_logprobs = true;  // the PPO ratio then depends on the weights
  for (int64_t i = 0; i < o.steps; ++i) {
    const int64_t step = trainer.optimizer().steps();
    FP8RL_ASSIGN_OR_RETURN(
        const TrainResult r,
        trainer.train(batch_for_step(o.data_seed, step, trainer.policy().config().vocab_size),
                      config));
    FP8RL_REQUIRE(!r.skipped, "step ", step, " skipped: ", r.skip_reason);
    std::printf(
        "{\"step\": %lld, \"loss\": %.17g, \"pg_loss\": %.17g, \"grad_norm\": %.17g, "
        "\"lr\": %.17g}\n",
        (long long)step + 1, r.metrics.at("loss"), r.metrics.at("pg_loss"),
        r.metrics.at("grad_norm"), r.metrics.at("lr"));
  }
  std::string saved;
  if (!o.save.empty()) {
    FP8RL_ASSIGN_OR_RETURN(const CheckpointInfo info,
                           save_checkpoint(trainer, o.save, trainer.optimizer().steps(), o.args));
    saved = info.path;
  }
  if (!o.dump.empty()) FP8RL_RETURN_IF_ERROR(dump(trainer, o));
  std::printf("{\"iteration\": %lld, \"saved\": \"%s\"}\n", (long long)trainer.optimizer().steps(),
              saved.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace fp8rl

int main(int argc, char** argv) {
  CLI::App app{"fp8rl_ckpt_probe: train, save, load and dump a tiny trainer (checkpoint tests)"};
  fp8rl::ProbeOptions o;
  app.add_option("--config", o.config, "HF config.json of the model (random weights)")->required();
  app.add_option("--seed", o.seed, "weight initialisation seed");
  app.add_option("--data-seed", o.data_seed, "seed of the per-step batches");
  app.add_option("--steps", o.steps, "optimizer steps to take");
  app.add_option("--lr", o.lr, "learning rate");
  app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay");
  app.add_option("--load", o.load, "checkpoint folder to load first");
  app.add_option("--load-iteration", o.load_iteration, "iteration to load (0: the tracker's)");
  app.add_option("--save", o.save, "checkpoint folder to save into after training");
  app.add_option("--dump", o.dump, "safetensors file to write what the trainer holds into");
  app.add_option("--max-chunk-bytes", o.args.max_chunk_bytes, "float32 bytes per chunk at most");
  app.add_option("--make-vocab-size-divisible-by", o.args.make_vocab_size_divisible_by,
                 "vocabulary padding");
  CLI11_PARSE(app, argc, argv);
  const absl::Status s = fp8rl::run(o);
  if (!s.ok()) {
    std::fprintf(stderr, "fp8rl_ckpt_probe: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
