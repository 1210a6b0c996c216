// The RL train step and log-prob recompute (trainer/train_step.h).
#include "trainer/train_step.h"

#include <chrono>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace fp8rl {
namespace {

// Samples [begin, end) packed for the decoder. Response token j of a sample whose prompt has P
// tokens is predicted at position P − 1 + j, so that position's target is the token and
// response_positions lists those positions for every sample in order.
struct PackedSamples {
  PackedBatch batch;
  std::vector<int32_t> targets;
  std::vector<int64_t> response_positions;
  std::vector<int64_t> sample_offsets{0};  // into response_positions
};

PackedSamples pack(const std::vector<Sample>& samples, size_t begin, size_t end) {
  PackedSamples p;
  for (size_t i = begin; i < end; ++i) {
    const Sample& s = samples[i];
    const int64_t start = p.batch.num_tokens();
    const int64_t len = int64_t(s.tokens.size());
    p.batch.tokens.insert(p.batch.tokens.end(), s.tokens.begin(), s.tokens.end());
    p.batch.cu_seqlens.push_back(int32_t(start + len));
    p.targets.resize(size_t(start + len), -1);
    for (int64_t t = len - s.response_length - 1; t < len - 1; ++t) {
      p.targets[size_t(start + t)] = s.tokens[size_t(t + 1)];
      p.response_positions.push_back(start + t);
    }
    p.sample_offsets.push_back(int64_t(p.response_positions.size()));
  }
  return p;
}

// v[pos[i]] for every i.
std::vector<float> gather(const std::vector<float>& v, const std::vector<int64_t>& pos) {
  std::vector<float> out(pos.size());
  for (size_t i = 0; i < pos.size(); ++i) out[i] = v[size_t(pos[i])];
  return out;
}

// Appends samples[begin, end)'s `field` to *out.
void append(const std::vector<Sample>& samples, size_t begin, size_t end,
            std::vector<float> Sample::*field, std::vector<float>* out) {
  out->clear();
  for (size_t i = begin; i < end; ++i)
    out->insert(out->end(), (samples[i].*field).begin(), (samples[i].*field).end());
}

absl::Status check_field(const Sample& s, size_t index, const std::vector<float>& v,
                         const char* field, bool may_be_empty) {
  if (may_be_empty && v.empty()) return absl::OkStatus();
  FP8RL_REQUIRE(int64_t(v.size()) == s.response_length, "sample ", index, ": ", field, " has ",
                v.size(), " entries for response_length ", s.response_length);
  for (size_t j = 0; j < v.size(); ++j) {
    FP8RL_REQUIRE(std::isfinite(v[j]), "sample ", index, ": ", field, "[", j, "] is ", v[j]);
  }
  return absl::OkStatus();
}

// Length and token ids of sample `index` against the model (the part of validation that
// log-prob recompute shares with train).
absl::Status check_tokens(const Sample& s, size_t index, const ModelConfig& mc) {
  const int64_t len = int64_t(s.tokens.size());
  FP8RL_REQUIRE(s.response_length >= 1 && s.response_length < len, "sample ", index,
                ": response_length ", s.response_length, " with ", len,
                " tokens (needs a prompt and a response)");
  FP8RL_REQUIRE(len <= mc.max_position_embeddings, "sample ", index, ": tokens has ", len,
                " entries, more than max_position_embeddings ", mc.max_position_embeddings);
  for (int64_t t = 0; t < len; ++t) {
    FP8RL_REQUIRE(s.tokens[t] >= 0 && s.tokens[t] < mc.vocab_size, "sample ", index, ": tokens[", t,
                  "] = ", s.tokens[t], " is outside the vocabulary [0, ", mc.vocab_size, ")");
  }
  return absl::OkStatus();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Trainer::Trainer(Decoder policy, std::optional<Decoder> reference, AdamW optimizer,
                 const TrainerOptions& options)
    : policy_(std::make_unique<Decoder>(std::move(policy))),
      reference_(reference ? std::make_unique<Decoder>(*std::move(reference)) : nullptr),
      optimizer_(std::move(optimizer)),
      options_(options) {}

absl::Status Trainer::make_backends() {
  if (!options_.cuda) {
    policy_backend_ = make_cpu_backend(policy_.get(), true);
    if (reference_) reference_backend_ = make_cpu_backend(reference_.get(), false);
    return absl::OkStatus();
  }
  FP8RL_ASSIGN_OR_RETURN(policy_backend_,
                         make_cuda_backend(policy_.get(), true, options_.gpu, device_optimizer()));
  if (reference_) {
    FP8RL_ASSIGN_OR_RETURN(reference_backend_,
                           make_cuda_backend(reference_.get(), false, options_.gpu, false));
  }
  if (device_optimizer()) return policy_backend_->load_optimizer(optimizer_);
  return absl::OkStatus();
}

absl::StatusOr<Trainer> Trainer::create(Decoder policy, std::optional<Decoder> reference,
                                        const TrainerOptions& options) {
  FP8RL_RETURN_IF_ERROR(options.lr.validate());
  FP8RL_REQUIRE(options.gpu >= 0, "trainer: gpu ", options.gpu, " is negative");
  FP8RL_REQUIRE(!options.cuda || policy.options().linear.precision != LinearPrecision::kF32,
                "trainer: --device cuda runs bf16 or fp8 linears; the policy's are float32");
  if (reference) {
    FP8RL_REQUIRE(reference->config().vocab_size == policy.config().vocab_size,
                  "trainer: reference vocabulary ", reference->config().vocab_size,
                  " differs from the policy's ", policy.config().vocab_size);
  }
  std::vector<std::pair<std::string, Tensor>> params;
  for (auto& [name, t] : policy.params().named(policy.config())) params.emplace_back(name, *t);
  FP8RL_ASSIGN_OR_RETURN(AdamW optimizer, AdamW::create(std::move(params), options.adam));
  if (options.fp8_param_gather) {
    const LinearOptions& lin = policy.options().linear;
    FP8RL_REQUIRE(lin.precision == LinearPrecision::kFP8 && !lin.int4_weights,
                  "trainer: fp8_param_gather needs the policy's linears in fp8 without INT4 QAT, "
                  "they are ",
                  linear_precision_name(lin.precision), lin.int4_weights ? " with INT4 QAT" : "");
  }
  Trainer trainer(std::move(policy), std::move(reference), std::move(optimizer), options);
  // On CUDA the device's FP8 linears hold the weights on the FP8 grid already.
  if (options.fp8_param_gather && !options.cuda) {
    trainer.fp8_weights_ = std::make_shared<Fp8WeightCache>();
    DecoderOptions o = trainer.policy_->options();
    o.linear.fp8_weights = trainer.fp8_weights_;
    trainer.policy_->set_options(o);
    FP8RL_RETURN_IF_ERROR(trainer.refresh_fp8_params());
  }
  FP8RL_RETURN_IF_ERROR(trainer.make_backends());
  return trainer;
}

absl::Status Trainer::refresh_fp8_params() {
  if (!fp8_weights_) return absl::OkStatus();
  for (DecoderLayerParams& l : policy_->params().layers) {
    for (Tensor* w :
         {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) {
      FP8RL_RETURN_IF_ERROR(fp8_weights_->set(w->data<float>(), w->dim(0), w->dim(1)));
    }
  }
  return absl::OkStatus();
}

absl::Status Trainer::sync_params_from_optimizer() {
  optimizer_.sync_params();
  FP8RL_RETURN_IF_ERROR(refresh_fp8_params());
  host_current_ = true;
  if (device_optimizer()) return policy_backend_->load_optimizer(optimizer_);
  return policy_backend_->params_changed();
}

absl::Status Trainer::sync_to_host() {
  if (host_current_) return absl::OkStatus();
  FP8RL_RETURN_IF_ERROR(policy_backend_->store_optimizer(&optimizer_));
  host_current_ = true;
  return absl::OkStatus();
}

absl::Status Trainer::validate(const std::vector<Sample>& samples,
                               const TrainConfig& config) const {
  FP8RL_RETURN_IF_ERROR(config.loss.validate());
  FP8RL_REQUIRE(config.micro_batch_size >= 1, "micro_batch_size: ", config.micro_batch_size);
  FP8RL_REQUIRE(!samples.empty(), "samples: the batch is empty");
  const ModelConfig& mc = policy_->config();
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    FP8RL_RETURN_IF_ERROR(check_tokens(s, i, mc));
    FP8RL_RETURN_IF_ERROR(check_field(s, i, s.loss_mask, "loss_mask", false));
    for (size_t j = 0; j < s.loss_mask.size(); ++j) {
      FP8RL_REQUIRE(s.loss_mask[j] == 0.0f || s.loss_mask[j] == 1.0f, "sample ", i, ": loss_mask[",
                    j, "] is ", s.loss_mask[j], ", not 0 or 1");
    }
    FP8RL_RETURN_IF_ERROR(check_field(s, i, s.advantages, "advantages", false));
    FP8RL_RETURN_IF_ERROR(check_field(s, i, s.rollout_log_probs, "rollout_log_probs", false));
    FP8RL_RETURN_IF_ERROR(check_field(s, i, s.ref_log_probs, "ref_log_probs", true));
    FP8RL_REQUIRE(!config.loss.use_kl_loss || !s.ref_log_probs.empty() || reference_, "sample ", i,
                  ": ref_log_probs is empty and the trainer has no reference model");
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainResult> Trainer::train(const std::vector<Sample>& samples,
                                           const TrainConfig& config) {
  const auto t0 = std::chrono::steady_clock::now();
  FP8RL_RETURN_IF_ERROR(validate(samples, config));
  const size_t mbs = size_t(config.micro_batch_size);

  // Reference log-probs from the reference model when some sample did not bring them.
  std::vector<std::vector<float>> computed_ref;
  bool need_ref = false;
  for (const Sample& s : samples) need_ref |= config.loss.use_kl_loss && s.ref_log_probs.empty();
  if (need_ref) {
    FP8RL_ASSIGN_OR_RETURN(computed_ref, compute_log_probs(samples, LogProbModel::kReference,
                                                           config.micro_batch_size));
  }

  double denominator = double(samples.size());
  if (config.loss.aggregation == LossAggregation::kTokenMean) {
    denominator = 0;
    for (const Sample& s : samples)
      for (float m : s.loss_mask) denominator += m;
  }
  FP8RL_RETURN_IF_ERROR(policy_backend_->zero_grads());

  TrainResult result;
  int64_t tokens = 0;
  std::vector<float> mask, adv, rollout, ref_mb;
  for (size_t b = 0; b < samples.size(); b += mbs) {
    const size_t e = std::min(samples.size(), b + mbs);
    const PackedSamples p = pack(samples, b, e);
    tokens += p.batch.num_tokens();
    FP8RL_ASSIGN_OR_RETURN(const BackendForward fwd,
                           policy_backend_->forward(p.batch, p.targets, true));
    const std::vector<float> logp = gather(fwd.logprob, p.response_positions);
    const std::vector<float> entropy = gather(fwd.entropy, p.response_positions);
    append(samples, b, e, &Sample::loss_mask, &mask);
    append(samples, b, e, &Sample::advantages, &adv);
    append(samples, b, e, &Sample::rollout_log_probs, &rollout);
    ref_mb.clear();
    if (config.loss.use_kl_loss)
      for (size_t i = b; i < e; ++i) {
        const std::vector<float>& r =
            samples[i].ref_log_probs.empty() ? computed_ref[i] : samples[i].ref_log_probs;
        ref_mb.insert(ref_mb.end(), r.begin(), r.end());
      }

    PolicyLossInputs in;
    in.log_probs = logp;
    in.entropy = entropy;
    in.old_log_probs = config.use_rollout_logprobs ? rollout : logp;
    in.advantages = adv;
    in.loss_mask = mask;
    in.rollout_log_probs = rollout;
    in.ref_log_probs = ref_mb;
    in.sample_offsets = p.sample_offsets;
    in.denominator = denominator;
    FP8RL_ASSIGN_OR_RETURN(const PolicyLossResult loss, policy_loss(config.loss, in));
    accumulate_metrics(loss.metrics, &result.metrics);
    if (!std::isfinite(loss.loss)) {
      result.skipped = true;
      result.skip_reason = "non-finite loss";
      break;
    }
    std::vector<float> dlogp(fwd.logprob.size(), 0.0f), dent(fwd.logprob.size(), 0.0f);
    for (size_t i = 0; i < p.response_positions.size(); ++i) {
      dlogp[size_t(p.response_positions[i])] = loss.dlog_probs[i];
      dent[size_t(p.response_positions[i])] = loss.dentropy[i];
    }
    FP8RL_RETURN_IF_ERROR(policy_backend_->backward(dlogp, dent));
  }

  const double lr = options_.lr.lr_at(optimizer_.steps());
  if (!result.skipped) {
    OptimizerStepResult step;
    if (device_optimizer()) {
      const int64_t next = optimizer_.steps() + 1;
      FP8RL_ASSIGN_OR_RETURN(step, policy_backend_->optimizer_step(options_.adam, lr, next));
      if (!step.skipped) {
        optimizer_.set_steps(next);  // the host copy counts steps; its tensors are now stale
        host_current_ = false;
      }
    } else {
      FP8RL_ASSIGN_OR_RETURN(DecoderParams * grads, policy_backend_->host_grads());
      std::vector<Tensor*> grad_tensors;
      for (const auto& [name, g] : grads->named(policy_->config())) grad_tensors.push_back(g);
      FP8RL_ASSIGN_OR_RETURN(step, optimizer_.step(grad_tensors, lr));
      if (!step.skipped) {
        FP8RL_RETURN_IF_ERROR(refresh_fp8_params());
        FP8RL_RETURN_IF_ERROR(policy_backend_->params_changed());
      }
    }
    result.metrics["grad_norm"] = step.grad_norm;
    if (step.skipped) {
      result.skipped = true;
      result.skip_reason = "non-finite gradient norm";
    }
  }
  const double step_time = seconds_since(t0);
  result.metrics["lr"] = lr;
  result.metrics["global_batch_size"] = double(samples.size());
  result.metrics["step_time"] = step_time;
  result.metrics["tokens_per_second"] = double(tokens) / std::max(step_time, 1e-9);
  return result;
}

absl::StatusOr<std::vector<std::vector<float>>> Trainer::compute_log_probs(
    const std::vector<Sample>& samples, LogProbModel model, int64_t micro_batch_size) const {
  FP8RL_ASSIGN_OR_RETURN(std::vector<ResponseTokenStats> stats,
                         compute_token_stats(samples, model, micro_batch_size));
  std::vector<std::vector<float>> out;
  out.reserve(stats.size());
  for (ResponseTokenStats& s : stats) out.push_back(std::move(s.log_probs));
  return out;
}

absl::StatusOr<std::vector<ResponseTokenStats>> Trainer::compute_token_stats(
    const std::vector<Sample>& samples, LogProbModel model, int64_t micro_batch_size) const {
  if (model == LogProbModel::kReference && !reference_)
    return absl::FailedPreconditionError("compute_log_probs: the trainer has no reference model");
  FP8RL_REQUIRE(micro_batch_size >= 1, "micro_batch_size: ", micro_batch_size);
  const Decoder& decoder = model == LogProbModel::kPolicy ? *policy_ : *reference_;
  DecoderBackend& backend = model == LogProbModel::kPolicy ? *policy_backend_ : *reference_backend_;
  for (size_t i = 0; i < samples.size(); ++i)
    FP8RL_RETURN_IF_ERROR(check_tokens(samples[i], i, decoder.config()));
  std::vector<ResponseTokenStats> out;
  out.reserve(samples.size());
  for (size_t b = 0; b < samples.size(); b += size_t(micro_batch_size)) {
    const size_t e = std::min(samples.size(), b + size_t(micro_batch_size));
    const PackedSamples p = pack(samples, b, e);
    FP8RL_ASSIGN_OR_RETURN(const BackendForward fwd, backend.forward(p.batch, p.targets, false));
    const std::vector<float> logp = gather(fwd.logprob, p.response_positions);
    const std::vector<float> ent = gather(fwd.entropy, p.response_positions);
    for (size_t i = 0; i + 1 < p.sample_offsets.size(); ++i) {
      const int64_t from = p.sample_offsets[i], to = p.sample_offsets[i + 1];
      out.push_back(
          {{logp.begin() + from, logp.begin() + to}, {ent.begin() + from, ent.begin() + to}});
    }
  }
  return out;
}

}  // namespace fp8rl
