// Flags of `fp8rl trainer`, named as Megatron and slime name them, and their resolution into the
// trainer's plain structs. Everything a flag can get wrong is caught here, before serving.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "model/decoder.h"
#include "trainer/checkpoint.h"
#include "trainer/train_step.h"

namespace fp8rl {

struct TrainerFlags {
  // Model and endpoints.
  std::string model_path;  // HF folder: weights, config.json, tokenizer (--hf-checkpoint in slime)
  std::string host = "127.0.0.1";
  int port = 50051;      // gRPC Trainer + grpc.health.v1
  int http_port = 8080;  // /healthz /readyz /metrics
  // Checkpoints (Megatron torch_dist).
  std::string save, load, ref_load;
  int64_t save_interval = 0;
  int64_t seed = 1234;                         // recorded in checkpoints
  int64_t make_vocab_size_divisible_by = 128;  // checkpoint vocabulary padding (Megatron's)
  // Precision (Megatron's names; fp8rl implements E4M3 with TransformerEngine's blockwise recipe).
  std::string fp8_format;  // "" (BF16 linears) or e4m3
  std::string fp8_recipe = "blockwise";
  bool fp8_param_gather = false;
  // Where the model runs: cpu, or cuda (GPU --gpu-id; the optimizer on the GPU too unless
  // --optimizer-cpu-offload).
  std::string device = "cpu";
  int gpu_id = 0;
  bool optimizer_cpu_offload = false;
  // Optimizer and schedule.
  std::string optimizer = "adam";
  double lr = 1e-6, min_lr = 0.0, lr_warmup_init = 0.0;
  int64_t lr_warmup_iters = 0, lr_decay_iters = 0;
  std::string lr_decay_style = "constant";
  double weight_decay = 0.01, adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
  double clip_grad = 1.0;
  int64_t micro_batch_size = 1;
  // Policy loss (slime's names and defaults).
  double eps_clip = 0.2;
  std::optional<double> eps_clip_high, eps_clip_c;
  bool use_kl_loss = false;
  double kl_loss_coef = 0.0;
  std::string kl_loss_type = "k1";
  double entropy_coef = 0.0;
  bool use_tis = false;
  double tis_clip = 2.0, tis_clip_low = 0.0;
  bool use_rollout_logprobs = false;
  bool calculate_per_token_loss = false;
  // Weight sync.
  std::string update_weight_disk_dir;  // SyncWeights DISK without disk_path: DIR/weights_vN
  double update_weight_timeout = 600;  // seconds a rollout server may take to load a folder
};

// Declares every flag on `sub`, writing into *flags (which must outlive parsing).
void add_trainer_flags(CLI::App* sub, TrainerFlags* flags);

// What the flags and the OPEN_TRAINING_INT4_* knobs resolve to.
struct TrainerSetup {
  TrainerOptions trainer;
  TrainConfig train;
  DecoderOptions decoder;     // the policy's (and reference's) linears
  CheckpointArgs checkpoint;  // global_batch_size is the caller's: the samples of a Train call
  std::string precision;      // for Status: bf16, fp8-blockwise, int4-qat, fp8-blockwise+int4-qat
};

// InvalidArgument naming the flag (or environment knob) for a value fp8rl cannot run with.
absl::StatusOr<TrainerSetup> resolve_trainer_flags(const TrainerFlags& flags);

}  // namespace fp8rl
