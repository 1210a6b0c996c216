// AdamW, gradient clipping and learning-rate schedules (trainer/optimizer.h).
#include "trainer/optimizer.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/parallel.h"
#include "core/status.h"

namespace fp8rl {
namespace {

// Elements per block of the gradient norm: each block sums serially, blocks add in order.
constexpr int64_t kNormBlock = 1 << 14;

double sum_of_squares(const float* g, int64_t n) {
  const int64_t blocks = (n + kNormBlock - 1) / kNormBlock;
  std::vector<double> partial(size_t(blocks), 0.0);
  parallel_for(
      blocks,
      [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          double s = 0;
          for (int64_t i = b * kNormBlock; i < std::min(n, (b + 1) * kNormBlock); ++i)
            s += double(g[i]) * g[i];
          partial[size_t(b)] = s;
        }
      },
      grain_for(kNormBlock));
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace

absl::StatusOr<LrDecayStyle> parse_lr_decay_style(const std::string& name) {
  if (name == "constant") return LrDecayStyle::kConstant;
  if (name == "linear") return LrDecayStyle::kLinear;
  if (name == "cosine") return LrDecayStyle::kCosine;
  return absl::InvalidArgumentError(
      absl::StrCat("lr_decay_style: '", name, "' is not one of constant, linear, cosine"));
}

absl::Status LrSchedule::validate() const {
  FP8RL_REQUIRE(std::isfinite(lr) && lr >= 0, "lr: ", lr);
  FP8RL_REQUIRE(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= lr, "min_lr: ", min_lr,
                " with lr ", lr);
  FP8RL_REQUIRE(std::isfinite(warmup_init) && warmup_init >= 0, "lr_warmup_init: ", warmup_init);
  FP8RL_REQUIRE(warmup_iters >= 0, "lr_warmup_iters: ", warmup_iters);
  FP8RL_REQUIRE(style == LrDecayStyle::kConstant || decay_iters > warmup_iters,
                "lr_decay_iters: ", decay_iters, " must exceed lr_warmup_iters ", warmup_iters);
  return absl::OkStatus();
}

double LrSchedule::lr_at(int64_t step) const {
  if (warmup_iters > 0 && step <= warmup_iters)
    return warmup_init + (lr - warmup_init) * double(step) / double(warmup_iters);
  if (style == LrDecayStyle::kConstant) return lr;
  if (step > decay_iters) return min_lr;
  const double ratio = double(step - warmup_iters) / double(decay_iters - warmup_iters);
  const double coeff =
      style == LrDecayStyle::kLinear ? 1.0 - ratio : 0.5 * (std::cos(M_PI * ratio) + 1.0);
  return min_lr + coeff * (lr - min_lr);
}

absl::Status AdamWConfig::validate() const {
  FP8RL_REQUIRE(beta1 >= 0 && beta1 < 1, "adam_beta1: ", beta1);
  FP8RL_REQUIRE(beta2 >= 0 && beta2 < 1, "adam_beta2: ", beta2);
  FP8RL_REQUIRE(std::isfinite(eps) && eps > 0, "adam_eps: ", eps);
  FP8RL_REQUIRE(std::isfinite(weight_decay) && weight_decay >= 0, "weight_decay: ", weight_decay);
  FP8RL_REQUIRE(std::isfinite(clip_grad) && clip_grad >= 0, "clip_grad: ", clip_grad);
  return absl::OkStatus();
}

double clip_grad_norm(const std::vector<Tensor*>& grads, double clip_grad) {
  double sq = 0;
  for (const Tensor* g : grads) sq += sum_of_squares(g->data<float>(), g->numel());
  const double norm = std::sqrt(sq);
  if (!std::isfinite(norm) || clip_grad <= 0) return norm;
  const double coeff = clip_grad / (norm + 1e-6);
  if (coeff >= 1.0) return norm;
  for (Tensor* g : grads) {
    float* p = g->data<float>();
    parallel_for(
        g->numel(),
        [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) p[i] = float(p[i] * coeff);
        },
        kParallelGrainElems);
  }
  return norm;
}

absl::StatusOr<AdamW> AdamW::create(std::vector<std::pair<std::string, Tensor>> params,
                                    const AdamWConfig& config) {
  FP8RL_RETURN_IF_ERROR(config.validate());
  std::vector<Slot> slots;
  slots.reserve(params.size());
  for (auto& [name, param] : params) {
    FP8RL_REQUIRE(param.defined() && param.dtype() == DType::kF32 && param.device().is_cpu(),
                  "optimizer: parameter ", name, " must be a float32 CPU tensor, got ",
                  param.defined() ? param.to_string() : std::string("undefined"));
    Slot s;
    s.name = name;
    s.master = param.clone();
    s.exp_avg = Tensor::zeros(DType::kF32, param.shape());
    s.exp_avg_sq = Tensor::zeros(DType::kF32, param.shape());
    s.decay = param.ndim() > 1;
    s.param = std::move(param);
    slots.push_back(std::move(s));
  }
  return AdamW(std::move(slots), config);
}

absl::StatusOr<OptimizerStepResult> AdamW::step(const std::vector<Tensor*>& grads, double lr) {
  FP8RL_REQUIRE(grads.size() == slots_.size(), "optimizer: ", grads.size(), " gradients for ",
                slots_.size(), " parameters");
  for (size_t i = 0; i < grads.size(); ++i) {
    FP8RL_REQUIRE(grads[i] != nullptr && grads[i]->dtype() == DType::kF32 &&
                      grads[i]->shape() == slots_[i].param.shape(),
                  "optimizer: gradient of ", slots_[i].name, " must be float32",
                  shape_to_string(slots_[i].param.shape()));
  }
  FP8RL_REQUIRE(std::isfinite(lr) && lr >= 0, "optimizer: learning rate ", lr);
  OptimizerStepResult result;
  result.grad_norm = clip_grad_norm(grads, config_.clip_grad);
  if (!std::isfinite(result.grad_norm)) {
    result.skipped = true;
    return result;
  }
  ++steps_;
  const double b1 = config_.beta1, b2 = config_.beta2;
  const double step_size = lr / (1.0 - std::pow(b1, double(steps_)));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(b2, double(steps_)));
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    const double decay = s.decay ? 1.0 - lr * config_.weight_decay : 1.0;
    const float* g = grads[i]->data<float>();
    float* p = s.master.data<float>();
    float* m = s.exp_avg.data<float>();
    float* v = s.exp_avg_sq.data<float>();
    parallel_for(
        s.master.numel(),
        [&](int64_t b, int64_t e) {
          for (int64_t j = b; j < e; ++j) {
            const double gj = g[j];
            m[j] = float(b1 * m[j] + (1.0 - b1) * gj);
            v[j] = float(b2 * v[j] + (1.0 - b2) * gj * gj);
            const double denom = std::sqrt(double(v[j])) / bc2_sqrt + config_.eps;
            p[j] = float(double(p[j]) * decay - step_size * double(m[j]) / denom);
          }
        },
        kParallelGrainElems);
  }
  sync_params();
  return result;
}

std::vector<std::pair<std::string, Tensor>> AdamW::named_state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(slots_.size() * 3);
  for (const Slot& s : slots_) {
    out.emplace_back(s.name + ".master", s.master);
    out.emplace_back(s.name + ".exp_avg", s.exp_avg);
    out.emplace_back(s.name + ".exp_avg_sq", s.exp_avg_sq);
  }
  return out;
}

void AdamW::sync_params() {
  for (Slot& s : slots_) std::memcpy(s.param.raw(), s.master.raw(), s.master.nbytes());
}

}  // namespace fp8rl
