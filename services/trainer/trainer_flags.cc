// Flags of `fp8rl trainer` (services/trainer/trainer_flags.h).
#include "services/trainer/trainer_flags.h"

#include <cctype>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "quant/int4.h"

namespace fp8rl {
namespace {

// The trainer's validators name the field as its snake_case flag ("eps_clip_c: 0.5 ..."); say it
// the way the user typed it ("--eps-clip-c: 0.5 ...").
absl::Status as_flag_error(const absl::Status& s) {
  if (s.ok()) return s;
  std::string msg(s.message());
  size_t n = 0;
  while (n < msg.size() && (std::islower(static_cast<unsigned char>(msg[n])) ||
                            std::isdigit(static_cast<unsigned char>(msg[n])) || msg[n] == '_'))
    ++n;
  if (n == 0) return absl::InvalidArgumentError(msg);
  std::string flag = "--" + msg.substr(0, n);
  for (char& c : flag)
    if (c == '_') c = '-';
  return absl::InvalidArgumentError(flag + msg.substr(n));
}

}  // namespace

void add_trainer_flags(CLI::App* sub, TrainerFlags* f) {
  sub->add_option("--model-path,--hf-checkpoint", f->model_path,
                  "HF checkpoint folder (BF16, blockwise FP8 or INT4): weights, config.json, "
                  "tokenizer")
      ->required();
  sub->add_option("--host", f->host, "Address the gRPC and HTTP servers bind");
  sub->add_option("--port", f->port, "gRPC port (fp8rl.v1.Trainer, grpc.health.v1); 0: any");
  sub->add_option("--http-port", f->http_port, "HTTP port (/healthz /readyz /metrics); 0: any");

  sub->add_option("--save", f->save, "Checkpoint folder (Megatron torch_dist layout)");
  sub->add_option("--load", f->load,
                  "Resume from the latest checkpoint in this folder (none there: start from "
                  "--model-path)");
  sub->add_option("--ref-load", f->ref_load,
                  "Frozen reference model for the KL loss: an HF folder or a torch_dist "
                  "checkpoint folder");
  sub->add_option("--save-interval", f->save_interval,
                  "Save to --save after every N optimizer steps; 0: only on SaveCheckpoint");
  sub->add_option("--seed", f->seed,
                  "Recorded in checkpoints (the trainer itself draws no random numbers)");
  sub->add_option("--make-vocab-size-divisible-by", f->make_vocab_size_divisible_by,
                  "Checkpoints pad the vocabulary rows to a multiple of this, as Megatron does");

  sub->add_flag("--bf16")->description(
      "Accepted for Megatron scripts: linears run in BF16 unless --fp8-format");
  sub->add_option("--fp8-format", f->fp8_format,
                  "FP8 linears: e4m3 (TransformerEngine blockwise: E4M3 forward and backward)");
  sub->add_option("--fp8-recipe", f->fp8_recipe, "FP8 scaling recipe: blockwise");
  sub->add_flag("--fp8-param-gather", f->fp8_param_gather,
                "Keep linear weights on the FP8 128x128 grid (quantized once per optimizer step, "
                "fp32 masters in the optimizer)");

  sub->add_option("--device", f->device,
                  "cpu, or cuda: the policy and reference model on a GPU (BF16 or FP8 linears; "
                  "AdamW on the GPU too unless --optimizer-cpu-offload)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  sub->add_option("--gpu-id", f->gpu_id, "The GPU --device cuda runs on")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--optimizer-cpu-offload", f->optimizer_cpu_offload,
                "With --device cuda: AdamW's fp32 masters and moments in host memory (12 bytes "
                "a parameter); each step brings the gradients to the host and the updated "
                "weights back");
  sub->add_option("--optimizer", f->optimizer, "adam (AdamW, decoupled weight decay)");
  sub->add_option("--lr", f->lr, "Peak learning rate");
  sub->add_option("--min-lr", f->min_lr, "Learning rate at the end of the decay");
  sub->add_option("--lr-decay-style", f->lr_decay_style, "constant, linear or cosine");
  sub->add_option("--lr-warmup-iters", f->lr_warmup_iters, "Linear warmup steps");
  sub->add_option("--lr-warmup-init", f->lr_warmup_init, "Learning rate at the start of warmup");
  sub->add_option("--lr-decay-iters", f->lr_decay_iters, "Steps until min-lr (linear, cosine)");
  sub->add_option("--weight-decay", f->weight_decay, "AdamW weight decay (not on 1-D params)");
  sub->add_option("--adam-beta1", f->adam_beta1);
  sub->add_option("--adam-beta2", f->adam_beta2);
  sub->add_option("--adam-eps", f->adam_eps);
  sub->add_option("--clip-grad", f->clip_grad, "Global gradient-norm clip; 0: off");
  sub->add_option("--micro-batch-size", f->micro_batch_size,
                  "Samples per forward/backward (TrainRequest.micro_batch_size overrides)");

  sub->add_option("--eps-clip", f->eps_clip, "PPO clip range (low side)");
  sub->add_option_function<double>(
      "--eps-clip-high", [f](const double& v) { f->eps_clip_high = v; },
      "PPO clip range, high side (default: --eps-clip)");
  sub->add_option_function<double>(
      "--eps-clip-c", [f](const double& v) { f->eps_clip_c = v; },
      "Dual-clip constant (> 1) for negative advantages (default: off)");
  sub->add_flag("--use-kl-loss", f->use_kl_loss, "KL loss to the reference model");
  sub->add_option("--kl-loss-coef", f->kl_loss_coef);
  sub->add_option("--kl-loss-type", f->kl_loss_type, "k1, k2, k3 or low_var_kl");
  sub->add_option("--entropy-coef", f->entropy_coef, "Entropy bonus coefficient");
  sub->add_flag("--use-tis", f->use_tis, "Truncated importance sampling on rollout log-probs");
  sub->add_option("--tis-clip", f->tis_clip, "TIS weight upper clamp");
  sub->add_option("--tis-clip-low", f->tis_clip_low, "TIS weight lower clamp");
  sub->add_flag("--use-rollout-logprobs", f->use_rollout_logprobs,
                "PPO ratio against the rollout's log-probs instead of the policy's own");
  sub->add_flag("--calculate-per-token-loss", f->calculate_per_token_loss,
                "Token mean over the batch instead of the per-sample token mean");

  sub->add_option("--update-weight-disk-dir", f->update_weight_disk_dir,
                  "SyncWeights over disk without disk_path writes DIR/weights_v<version> and "
                  "removes the previous version's folder once every target loaded the new one");
  sub->add_option("--update-weight-timeout", f->update_weight_timeout,
                  "Seconds a rollout server may take to answer /update_weights_from_disk");
}

absl::StatusOr<TrainerSetup> resolve_trainer_flags(const TrainerFlags& f) {
  FP8RL_REQUIRE(!f.model_path.empty(), "--model-path is empty");
  FP8RL_REQUIRE(f.port >= 0 && f.port <= 65535, "--port ", f.port, " is not a port number");
  FP8RL_REQUIRE(f.http_port >= 0 && f.http_port <= 65535, "--http-port ", f.http_port,
                " is not a port number");
  FP8RL_REQUIRE(f.port == 0 || f.port != f.http_port, "--port and --http-port are both ", f.port);
  FP8RL_REQUIRE(f.save_interval >= 0, "--save-interval ", f.save_interval, " is negative");
  FP8RL_REQUIRE(f.save_interval == 0 || !f.save.empty(), "--save-interval ", f.save_interval,
                " needs --save");
  FP8RL_REQUIRE(std::isfinite(f.update_weight_timeout) && f.update_weight_timeout > 0,
                "--update-weight-timeout ", f.update_weight_timeout, " must be positive");

  TrainerSetup s;
  LinearOptions& lin = s.decoder.linear;
  lin.precision = LinearPrecision::kBF16;
  if (!f.fp8_format.empty()) {
    FP8RL_REQUIRE(f.fp8_format == "e4m3", "--fp8-format ", f.fp8_format,
                  " is not supported: fp8rl's blockwise recipe is e4m3 forward and backward");
    lin.precision = LinearPrecision::kFP8;
  }
  FP8RL_REQUIRE(f.fp8_recipe == "blockwise", "--fp8-recipe ", f.fp8_recipe,
                " is not supported: fp8rl implements blockwise (1x128 activations and gradients, "
                "128x128 weights)");
  FP8RL_REQUIRE(!f.fp8_param_gather || !f.fp8_format.empty(),
                "--fp8-param-gather needs --fp8-format e4m3");
  lin.int4_weights = int4_fake_qat_from_env();
  if (lin.int4_weights) {
    lin.int4_group_size = int4_group_size_from_env();
    FP8RL_REQUIRE(lin.int4_group_size > 0, "OPEN_TRAINING_INT4_GROUP_SIZE=", lin.int4_group_size,
                  " must be positive");
    FP8RL_REQUIRE(!f.fp8_param_gather,
                  "--fp8-param-gather cannot be combined with OPEN_TRAINING_INT4_FAKE_QAT_FLAG=1 "
                  "(the weights would need two grids)");
  }
  s.precision = lin.precision == LinearPrecision::kFP8 ? "fp8-blockwise" : "bf16";
  if (lin.int4_weights)
    s.precision = lin.precision == LinearPrecision::kFP8 ? "fp8-blockwise+int4-qat" : "int4-qat";

  FP8RL_REQUIRE(f.optimizer == "adam", "--optimizer ", f.optimizer,
                " is not supported: fp8rl implements adam (AdamW)");
  LrSchedule& lr = s.trainer.lr;
  auto style = parse_lr_decay_style(f.lr_decay_style);
  if (!style.ok()) return as_flag_error(style.status());
  lr.style = *style;
  lr.lr = f.lr;
  lr.min_lr = f.min_lr;
  lr.warmup_init = f.lr_warmup_init;
  lr.warmup_iters = f.lr_warmup_iters;
  lr.decay_iters = f.lr_decay_iters;
  FP8RL_RETURN_IF_ERROR(as_flag_error(lr.validate()));
  AdamWConfig& adam = s.trainer.adam;
  adam.beta1 = f.adam_beta1;
  adam.beta2 = f.adam_beta2;
  adam.eps = f.adam_eps;
  adam.weight_decay = f.weight_decay;
  adam.clip_grad = f.clip_grad;
  FP8RL_RETURN_IF_ERROR(as_flag_error(adam.validate()));
  s.trainer.fp8_param_gather = f.fp8_param_gather;
  s.trainer.cuda = f.device == "cuda";
  s.trainer.gpu = f.gpu_id;
  s.trainer.optimizer_cpu_offload = f.optimizer_cpu_offload;
  FP8RL_REQUIRE(!f.optimizer_cpu_offload || s.trainer.cuda,
                "--optimizer-cpu-offload needs --device cuda (on the CPU the optimizer is in host "
                "memory already)");

  FP8RL_REQUIRE(f.micro_batch_size >= 1, "--micro-batch-size ", f.micro_batch_size,
                " must be at least 1");
  s.train.micro_batch_size = f.micro_batch_size;
  s.train.use_rollout_logprobs = f.use_rollout_logprobs;
  PolicyLossConfig& loss = s.train.loss;
  loss.eps_clip = f.eps_clip;
  loss.eps_clip_high = f.eps_clip_high;
  loss.eps_clip_c = f.eps_clip_c;
  loss.use_tis = f.use_tis;
  loss.tis_clip = f.tis_clip;
  loss.tis_clip_low = f.tis_clip_low;
  loss.use_kl_loss = f.use_kl_loss;
  loss.kl_loss_coef = f.kl_loss_coef;
  auto kl_type = parse_kl_loss_type(f.kl_loss_type);
  if (!kl_type.ok()) return as_flag_error(kl_type.status());
  loss.kl_loss_type = *kl_type;
  loss.entropy_coef = f.entropy_coef;
  loss.aggregation = f.calculate_per_token_loss ? LossAggregation::kTokenMean
                                                : LossAggregation::kPerSampleTokenMean;
  FP8RL_RETURN_IF_ERROR(as_flag_error(loss.validate()));

  CheckpointArgs& ckpt = s.checkpoint;
  ckpt.micro_batch_size = f.micro_batch_size;
  ckpt.seed = f.seed;
  ckpt.hf_checkpoint = f.model_path;
  ckpt.make_vocab_size_divisible_by = f.make_vocab_size_divisible_by;
  FP8RL_RETURN_IF_ERROR(as_flag_error(ckpt.validate()));
  return s;
}

}  // namespace fp8rl
