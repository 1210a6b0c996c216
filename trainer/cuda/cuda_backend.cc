// The CUDA decoder backend of the trainer (trainer/decoder_backend.h), with the device-resident
// AdamW: masters and moments in the layout of the device gradients (DeviceParams::segments), so
// that the norm is one pass over the gradient buffer and the update one launch per parameter.
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "model/cuda/cuda_decoder.h"
#include "trainer/cuda/adamw_cuda.h"
#include "trainer/decoder_backend.h"

namespace fp8rl {
namespace {

// Host tensors shaped like the parameters that are `host`'s optimizer state `suffix` ("master",
// "exp_avg", "exp_avg_sq"): shared with the optimizer, so copying into them restores its state.
absl::StatusOr<DecoderParams> state_view(const AdamW& host, const ModelConfig& config,
                                         const std::string& suffix) {
  std::map<std::string, Tensor> state;
  for (auto& [name, t] : host.named_state()) state.emplace(name, t);
  DecoderParams view;
  view.layers.resize(size_t(config.num_hidden_layers));
  for (auto& [name, t] : view.named(config)) {
    auto it = state.find(name + "." + suffix);
    FP8RL_REQUIRE(it != state.end(), "optimizer: no state ", name, ".", suffix);
    *t = it->second;
  }
  return view;
}

// Masters, first and second moments in the gradient layout, and the norm's scratch.
struct DeviceOptimizerState {
  Tensor master, exp_avg, exp_avg_sq;
  Tensor norm;  // double: norm_scratch_doubles partials, then the sum of squares
};

class CudaBackend final : public DecoderBackend {
 public:
  CudaBackend(const Decoder* host, CudaDecoder device, bool gradients,
              std::optional<DeviceOptimizerState> optimizer)
      : host_(host), device_(std::move(device)), optimizer_(std::move(optimizer)) {
    if (gradients && !optimizer_) grads_ = DecoderParams::zeros(host->config());
  }

  absl::StatusOr<BackendForward> forward(const PackedBatch& batch, std::span<const int32_t> targets,
                                         bool for_backward) override {
    last_.reset();
    FP8RL_ASSIGN_OR_RETURN(CudaDecoderForward f, device_.forward(batch, targets));
    BackendForward out{f.logprob, f.entropy};
    if (for_backward) last_ = std::move(f);
    return out;
  }

  absl::Status backward(std::span<const float> dlogprob, std::span<const float> dentropy) override {
    if (!last_)
      return absl::FailedPreconditionError("CUDA backend: no forward to take the backward of");
    return device_.backward(*last_, dlogprob, dentropy);
  }

  absl::Status zero_grads() override { return device_.zero_grads(); }

  absl::StatusOr<DecoderParams*> host_grads() override {
    if (!grads_) {
      return absl::FailedPreconditionError(
          "CUDA backend: built without gradients or with a device optimizer");
    }
    FP8RL_RETURN_IF_ERROR(device_.grads_to_host(&*grads_));
    return &*grads_;
  }

  absl::Status params_changed() override { return device_.upload(host_->params()); }

  absl::Status load_optimizer(const AdamW& host) override {
    FP8RL_RETURN_IF_ERROR(require_optimizer());
    const DeviceParams& p = device_.device_params();
    cudaStream_t stream = device_.runtime()->stream();
    for (auto [suffix, dst] : {std::pair{"master", &optimizer_->master},
                               {"exp_avg", &optimizer_->exp_avg},
                               {"exp_avg_sq", &optimizer_->exp_avg_sq}}) {
      FP8RL_ASSIGN_OR_RETURN(const DecoderParams view, state_view(host, host_->config(), suffix));
      FP8RL_RETURN_IF_ERROR(p.state_from_host(view, dst->data<float>(), stream));
    }
    return device_.upload_from_device(optimizer_->master.data<float>());
  }

  absl::StatusOr<OptimizerStepResult> optimizer_step(const AdamWConfig& config, double lr,
                                                     int64_t step) override {
    FP8RL_RETURN_IF_ERROR(require_optimizer());
    FP8RL_REQUIRE(std::isfinite(lr) && lr >= 0, "optimizer: learning rate ", lr);
    FP8RL_REQUIRE(step >= 1, "optimizer: step ", step);
    const DeviceParams& p = device_.device_params();
    cudaStream_t stream = device_.runtime()->stream();
    // The norm, as clip_grad_norm: sqrt of the double sum of squares.
    const int64_t n = p.state_floats();
    double* scratch = optimizer_->norm.data<double>();
    double* sum = scratch + norm_scratch_doubles(n);
    FP8RL_RETURN_IF_ERROR(sum_of_squares_cuda(n, p.grad_data(), scratch, sum, stream));
    double sq = 0;
    FP8RL_CUDA_CHECK(cudaMemcpyAsync(&sq, sum, sizeof(sq), cudaMemcpyDeviceToHost, stream));
    FP8RL_CUDA_CHECK(cudaStreamSynchronize(stream));
    OptimizerStepResult result;
    result.grad_norm = std::sqrt(sq);
    if (!std::isfinite(result.grad_norm)) {
      result.skipped = true;
      return result;
    }
    for (const DeviceParams::Segment& s : p.segments()) {
      const AdamWStepArgs a = adamw_step_args(config, lr, step, result.grad_norm, s.matrix);
      FP8RL_RETURN_IF_ERROR(adamw_step_cuda(
          s.count, p.grad_data() + s.offset, optimizer_->master.data<float>() + s.offset,
          optimizer_->exp_avg.data<float>() + s.offset,
          optimizer_->exp_avg_sq.data<float>() + s.offset, a, stream));
    }
    FP8RL_RETURN_IF_ERROR(device_.upload_from_device(optimizer_->master.data<float>()));
    return result;
  }

  absl::Status store_optimizer(AdamW* host) override {
    FP8RL_RETURN_IF_ERROR(require_optimizer());
    FP8RL_REQUIRE(host != nullptr, "store_optimizer: null optimizer");
    const DeviceParams& p = device_.device_params();
    cudaStream_t stream = device_.runtime()->stream();
    for (auto [suffix, src] : {std::pair{"master", &optimizer_->master},
                               {"exp_avg", &optimizer_->exp_avg},
                               {"exp_avg_sq", &optimizer_->exp_avg_sq}}) {
      FP8RL_ASSIGN_OR_RETURN(DecoderParams view, state_view(*host, host_->config(), suffix));
      FP8RL_RETURN_IF_ERROR(p.state_to_host(src->data<float>(), &view, stream));
    }
    host->sync_params();
    return absl::OkStatus();
  }

 private:
  absl::Status require_optimizer() const {
    if (!optimizer_)
      return absl::FailedPreconditionError("CUDA backend: built without a device optimizer");
    return absl::OkStatus();
  }

  const Decoder* host_;
  CudaDecoder device_;
  std::optional<DecoderParams> grads_;  // host copies for a host (offloaded) optimizer
  std::optional<DeviceOptimizerState> optimizer_;
  std::optional<CudaDecoderForward> last_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DecoderBackend>> make_cuda_backend(const Decoder* model,
                                                                  bool gradients, int device,
                                                                  bool device_optimizer) {
  CudaDecoderOptions o;
  o.linear = model->options().linear;
  o.device = device;
  o.gradients = gradients;
  FP8RL_REQUIRE(o.linear.precision != LinearPrecision::kF32,
                "--device cuda: the CUDA decoder runs bf16 or fp8 linears, not float32");
  FP8RL_REQUIRE(gradients || !device_optimizer,
                "make_cuda_backend: a device optimizer needs gradients");
  FP8RL_ASSIGN_OR_RETURN(CudaDecoder d, CudaDecoder::create(model->config(), model->params(), o));
  std::optional<DeviceOptimizerState> opt;
  if (device_optimizer) {
    const int64_t n = d.device_params().state_floats();
    const Device dev = Device::cuda(device);
    opt.emplace();
    for (Tensor* t : {&opt->master, &opt->exp_avg, &opt->exp_avg_sq}) {
      FP8RL_ASSIGN_OR_RETURN(*t, Tensor::empty_on(DType::kF32, {n}, dev));
      FP8RL_CUDA_CHECK(cudaMemsetAsync(t->raw(), 0, t->nbytes(), d.runtime()->stream()));
    }
    // Doubles in 8-byte storage (there is no float64 dtype).
    FP8RL_ASSIGN_OR_RETURN(opt->norm,
                           Tensor::empty_on(DType::kI64, {norm_scratch_doubles(n) + 1}, dev));
    FP8RL_CUDA_CHECK(cudaStreamSynchronize(d.runtime()->stream()));
  }
  return std::unique_ptr<DecoderBackend>(
      new CudaBackend(model, std::move(d), gradients, std::move(opt)));
}

}  // namespace fp8rl
