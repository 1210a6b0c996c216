// `fp8rl trainer` below the process: Megatron/slime flags resolve into the trainer's structs and
// name themselves when wrong, and the metrics hooks feed the Prometheus series. The process,
// gRPC and HTTP are driven by tests/interop/test_trainer_service.py.
#include <algorithm>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "services/trainer/trainer_flags.h"
#include "services/trainer/trainer_metrics.h"
#include "tests/catch.h"

namespace fp8rl {
namespace {

// Parses `args` as `fp8rl trainer ARGS` (with --model-path set) and resolves them.
absl::StatusOr<TrainerSetup> resolve(std::vector<std::string> args) {
  CLI::App app;
  CLI::App* sub = app.add_subcommand("trainer");
  TrainerFlags flags;
  add_trainer_flags(sub, &flags);
  args.insert(args.begin(), {"trainer", "--model-path", "/m"});
  std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector
  app.parse(args);
  return resolve_trainer_flags(flags);
}

TEST_CASE("trainer flags take Megatron's and slime's names and defaults", "[services][trainer]") {
  auto d = resolve({});
  REQUIRE(d.ok());
  CHECK(d->precision == "bf16");
  CHECK(d->decoder.linear.precision == LinearPrecision::kBF16);
  CHECK(d->trainer.lr.lr == 1e-6);
  CHECK(d->trainer.adam.clip_grad == 1.0);
  CHECK(d->train.loss.eps_clip == 0.2);
  CHECK(d->train.loss.clip_high() == 0.2);
  CHECK(!d->train.loss.eps_clip_c);
  CHECK(d->train.loss.kl_loss_type == KlLossType::kK1);
  CHECK(d->train.loss.aggregation == LossAggregation::kPerSampleTokenMean);
  CHECK(d->checkpoint.hf_checkpoint == "/m");
  CHECK(!d->trainer.fp8_param_gather);
  CHECK(!d->trainer.cuda);
  CHECK(!d->trainer.optimizer_cpu_offload);
  auto g = resolve({"--device", "cuda", "--gpu-id", "1", "--optimizer-cpu-offload"});
  REQUIRE(g.ok());
  CHECK(g->trainer.cuda);
  CHECK(g->trainer.gpu == 1);
  CHECK(g->trainer.optimizer_cpu_offload);
  // Without the offload the optimizer lives on the GPU; FP8 parameters are the device's own form.
  auto h = resolve({"--device", "cuda", "--fp8-format", "e4m3", "--fp8-param-gather"});
  REQUIRE(h.ok());
  CHECK(h->trainer.cuda);
  CHECK(!h->trainer.optimizer_cpu_offload);
  CHECK(h->trainer.fp8_param_gather);
  CHECK(h->decoder.linear.precision == LinearPrecision::kFP8);

  auto s = resolve({"--fp8-format",
                    "e4m3",
                    "--fp8-recipe",
                    "blockwise",
                    "--fp8-param-gather",
                    "--lr",
                    "2e-6",
                    "--min-lr",
                    "1e-7",
                    "--lr-decay-style",
                    "cosine",
                    "--lr-warmup-iters",
                    "5",
                    "--lr-decay-iters",
                    "50",
                    "--weight-decay",
                    "0.1",
                    "--adam-beta1",
                    "0.8",
                    "--adam-beta2",
                    "0.98",
                    "--adam-eps",
                    "1e-6",
                    "--clip-grad",
                    "0.5",
                    "--micro-batch-size",
                    "3",
                    "--eps-clip",
                    "0.1",
                    "--eps-clip-high",
                    "0.28",
                    "--eps-clip-c",
                    "3",
                    "--use-kl-loss",
                    "--kl-loss-coef",
                    "0.01",
                    "--kl-loss-type",
                    "low_var_kl",
                    "--entropy-coef",
                    "0.001",
                    "--use-tis",
                    "--tis-clip",
                    "1.5",
                    "--tis-clip-low",
                    "0.1",
                    "--use-rollout-logprobs",
                    "--calculate-per-token-loss",
                    "--seed",
                    "7",
                    "--bf16"});
  REQUIRE(s.ok());
  CHECK(s->precision == "fp8-blockwise");
  CHECK(s->decoder.linear.precision == LinearPrecision::kFP8);
  CHECK(s->trainer.fp8_param_gather);
  CHECK(s->trainer.lr.lr == 2e-6);
  CHECK(s->trainer.lr.min_lr == 1e-7);
  CHECK(s->trainer.lr.style == LrDecayStyle::kCosine);
  CHECK(s->trainer.lr.warmup_iters == 5);
  CHECK(s->trainer.lr.decay_iters == 50);
  CHECK(s->trainer.adam.weight_decay == 0.1);
  CHECK(s->trainer.adam.beta1 == 0.8);
  CHECK(s->trainer.adam.beta2 == 0.98);
  CHECK(s->trainer.adam.eps == 1e-6);
  CHECK(s->trainer.adam.clip_grad == 0.5);
  CHECK(s->train.micro_batch_size == 3);
  CHECK(s->checkpoint.micro_batch_size == 3);
  CHECK(s->checkpoint.seed == 7);
  CHECK(s->train.loss.eps_clip == 0.1);
  CHECK(s->train.loss.clip_high() == 0.28);
  CHECK(*s->train.loss.eps_clip_c == 3);
  CHECK(s->train.loss.use_kl_loss);
  CHECK(s->train.loss.kl_loss_coef == 0.01);
  CHECK(s->train.loss.kl_loss_type == KlLossType::kLowVarKl);
  CHECK(s->train.loss.entropy_coef == 0.001);
  CHECK(s->train.loss.use_tis);
  CHECK(s->train.loss.tis_clip == 1.5);
  CHECK(s->train.loss.tis_clip_low == 0.1);
  CHECK(s->train.use_rollout_logprobs);
  CHECK(s->train.loss.aggregation == LossAggregation::kTokenMean);
}

TEST_CASE("bad trainer flag values name the flag", "[services][trainer]") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--lr", "-1"}, "--lr: -1"},
      {{"--min-lr", "1", "--lr", "0.5"}, "--min-lr: 1"},
      {{"--adam-beta2", "1"}, "--adam-beta2: 1"},
      {{"--eps-clip-c", "0.9"}, "--eps-clip-c: 0.9"},
      {{"--tis-clip-low", "3"}, "--tis-clip-low 3"},
      {{"--kl-loss-type", "k4"}, "--kl-loss-type: 'k4'"},
      {{"--lr-decay-style", "wsd"}, "--lr-decay-style: 'wsd'"},
      {{"--lr-decay-style", "linear", "--lr-decay-iters", "0"}, "--lr-decay-iters: 0"},
      {{"--fp8-format", "hybrid"}, "--fp8-format hybrid"},
      {{"--fp8-format", "e4m3", "--fp8-recipe", "mxfp8"}, "--fp8-recipe mxfp8"},
      {{"--fp8-param-gather"}, "--fp8-param-gather needs --fp8-format"},
      {{"--optimizer", "sgd"}, "--optimizer sgd"},
      {{"--micro-batch-size", "0"}, "--micro-batch-size 0"},
      {{"--save-interval", "10"}, "--save-interval 10 needs --save"},
      {{"--port", "8080"}, "--port and --http-port"},
      {{"--port", "70000"}, "--port 70000"},
      {{"--make-vocab-size-divisible-by", "0"}, "--make-vocab-size-divisible-by: 0"},
      {{"--update-weight-timeout", "0"}, "--update-weight-timeout 0"},
      {{"--optimizer-cpu-offload"}, "--optimizer-cpu-offload needs --device cuda"},
  };
  for (const auto& [args, expect] : cases) {
    auto s = resolve(args);
    INFO(expect << " -> " << s.status().ToString());
    CHECK(s.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(s.status().message(), expect));
  }
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

TEST_CASE("trainer metrics expose slime's train metrics and step counters", "[services][trainer]") {
  MetricsRegistry r;
  TrainerMetrics m(&r);
  // Every train series exists before the first step.
  CHECK(has_line(r.render(), "fp8rl_train_loss 0"));
  CHECK(has_line(r.render(), "fp8rl_train_train_rollout_logprob_abs_diff 0"));

  TrainResult applied;
  applied.metrics = {{"loss", 0.5},      {"pg_loss", -0.25},          {"grad_norm", 3},
                     {"step_time", 0.2}, {"tokens_per_second", 1000}, {"new_metric", 9}};
  m.on_train_begin();
  CHECK(has_line(r.render(), "fp8rl_train_in_progress 1"));
  m.on_train_end();
  m.on_train(applied, 200, 8, 1);
  TrainResult skipped;
  skipped.skipped = true;
  skipped.metrics = {{"loss", std::numeric_limits<double>::quiet_NaN()}, {"step_time", 3}};
  m.on_train(skipped, 100, 4, 1);
  m.on_request("Train", "INVALID_ARGUMENT");
  m.on_weight_sync(2, 4096, 0.5, 0.25);
  const std::string t = r.render();
  CHECK(has_line(t, "fp8rl_train_in_progress 0"));
  CHECK(has_line(t, "fp8rl_train_loss NaN"));
  CHECK(has_line(t, "fp8rl_train_pg_loss -0.25"));
  CHECK(has_line(t, "fp8rl_train_grad_norm 3"));
  CHECK(has_line(t, "fp8rl_train_new_metric 9"));
  CHECK(has_line(t, "fp8rl_train_steps_total 1"));
  CHECK(has_line(t, "fp8rl_train_skipped_steps_total 1"));
  CHECK(has_line(t, "fp8rl_train_tokens_total 300"));
  CHECK(has_line(t, "fp8rl_train_samples_total 12"));
  CHECK(has_line(t, "fp8rl_train_step 1"));
  CHECK(has_line(t, "fp8rl_train_step_seconds_count 2"));
  CHECK(has_line(t, "fp8rl_train_step_seconds_bucket{le=\"0.25\"} 1"));
  CHECK(has_line(t, "fp8rl_trainer_requests_total{method=\"Train\",code=\"INVALID_ARGUMENT\"} 1"));
  CHECK(has_line(t, "fp8rl_weight_version 2"));
  CHECK(has_line(t, "fp8rl_weight_sync_bytes 4096"));
}

}  // namespace
}  // namespace fp8rl
