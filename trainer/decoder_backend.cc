// The CPU decoder backend (trainer/decoder_backend.h); the CUDA one is trainer/cuda/.
#include "trainer/decoder_backend.h"

#include <cstring>
#include <optional>

#include "absl/status/status.h"
#include "core/status.h"

namespace fp8rl {
namespace {

class CpuBackend final : public DecoderBackend {
 public:
  CpuBackend(const Decoder* model, bool gradients) : model_(model) {
    if (gradients) grads_ = DecoderParams::zeros(model->config());
  }

  absl::StatusOr<BackendForward> forward(const PackedBatch& batch, std::span<const int32_t> targets,
                                         bool for_backward) override {
    last_.reset();
    FP8RL_ASSIGN_OR_RETURN(DecoderForward f, model_->forward(batch, targets));
    BackendForward out{f.logprob, f.entropy};
    if (for_backward) last_ = std::move(f);
    return out;
  }

  absl::Status backward(std::span<const float> dlogprob, std::span<const float> dentropy) override {
    if (!last_ || !grads_)
      return absl::FailedPreconditionError("CPU backend: no forward to take the backward of");
    return model_->backward(*last_, dlogprob, dentropy, &*grads_);
  }

  absl::Status zero_grads() override {
    if (!grads_) return absl::FailedPreconditionError("CPU backend: built without gradients");
    for (auto& [name, g] : grads_->named(model_->config())) std::memset(g->raw(), 0, g->nbytes());
    return absl::OkStatus();
  }

  absl::StatusOr<DecoderParams*> host_grads() override {
    if (!grads_) return absl::FailedPreconditionError("CPU backend: built without gradients");
    return &*grads_;
  }

  absl::Status params_changed() override { return absl::OkStatus(); }  // reads them each call

 private:
  const Decoder* model_;
  std::optional<DecoderParams> grads_;
  std::optional<DecoderForward> last_;
};

}  // namespace

absl::Status DecoderBackend::load_optimizer(const AdamW&) {
  return absl::FailedPreconditionError("this decoder backend has no device-resident optimizer");
}

absl::StatusOr<OptimizerStepResult> DecoderBackend::optimizer_step(const AdamWConfig&, double,
                                                                   int64_t) {
  return absl::FailedPreconditionError("this decoder backend has no device-resident optimizer");
}

absl::Status DecoderBackend::store_optimizer(AdamW*) {
  return absl::FailedPreconditionError("this decoder backend has no device-resident optimizer");
}

std::unique_ptr<DecoderBackend> make_cpu_backend(const Decoder* model, bool gradients) {
  return std::make_unique<CpuBackend>(model, gradients);
}

#if !defined(FP8RL_WITH_CUDA)
absl::StatusOr<std::unique_ptr<DecoderBackend>> make_cuda_backend(const Decoder*, bool, int, bool) {
  return absl::FailedPreconditionError("--device cuda: this fp8rl was built without CUDA");
}
#endif

}  // namespace fp8rl
