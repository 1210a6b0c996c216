// Where the trainer runs a decoder: on the CPU (model/decoder.h, float32 activations) or on a GPU
// (model/cuda/cuda_decoder.h). The host Decoder holds the parameters exports and checkpoints
// read, whatever the backend; a GPU backend keeps the device copy the kernels use. Two ways to
// update it: with the optimizer state on the host (AdamW's masters and moments; Megatron's
// --optimizer-cpu-offload) each step brings the gradients to the host and the weights back
// (host_grads, params_changed); with a device-resident optimizer the step runs beside the
// weights (optimizer_step) and the host copies are refreshed on request (store_optimizer).
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "model/decoder.h"
#include "trainer/optimizer.h"

namespace fp8rl {

// Per-token results of a forward over a packed batch.
struct BackendForward {
  std::vector<float> logprob, entropy;  // [tokens]
};

// Not thread-safe.
class DecoderBackend {
 public:
  virtual ~DecoderBackend() = default;

  // Runs the decoder; with `for_backward` the activations stay for backward() until the next
  // forward.
  virtual absl::StatusOr<BackendForward> forward(const PackedBatch& batch,
                                                 std::span<const int32_t> targets,
                                                 bool for_backward) = 0;
  // Accumulates the gradient of sum dlogprob·logprob + dentropy·entropy of the latest forward
  // (run for_backward). FailedPrecondition otherwise or for a backend built without gradients.
  virtual absl::Status backward(std::span<const float> dlogprob,
                                std::span<const float> dentropy) = 0;
  virtual absl::Status zero_grads() = 0;
  // The accumulated gradients on the host, shaped like the parameters (owned by the backend).
  virtual absl::StatusOr<DecoderParams*> host_grads() = 0;
  // The host decoder's parameters changed (an optimizer step, a checkpoint load).
  virtual absl::Status params_changed() = 0;

  // A device-resident AdamW (a GPU backend made with one): the optimizer state lives beside the
  // weights and the host AdamW is only its copy for checkpoints and exports. The base
  // implementations answer FailedPrecondition.
  //
  // Sets the device masters and moments from `host` and rebuilds the weights from the masters.
  virtual absl::Status load_optimizer(const AdamW& host);
  // AdamW::step on the device from the accumulated gradients: global norm (fixed-order double
  // reduction), clipping to config.clip_grad, a non-finite norm skipping the update; `step` is the
  // step count after this update (bias corrections). The weights are rebuilt from the masters.
  virtual absl::StatusOr<OptimizerStepResult> optimizer_step(const AdamWConfig& config, double lr,
                                                             int64_t step);
  // The device masters and moments into `host`'s state, and the masters into its parameters.
  virtual absl::Status store_optimizer(AdamW* host);
};

// The CPU decoder `model` (must outlive the backend); `gradients`: whether backward is possible.
std::unique_ptr<DecoderBackend> make_cpu_backend(const Decoder* model, bool gradients);

// A CUDA copy of `model` (which must outlive the backend) on GPU `device`, its linears in the
// model's precision (BF16 or FP8 blockwise: then the device holds each linear weight only on the
// FP8 128x128 grid, quantized once per upload; INT4 QAT applied at upload). With
// `device_optimizer` (needs `gradients`) it also holds AdamW's masters and moments, 12 bytes a
// parameter, zero until load_optimizer. InvalidArgument for float32 linears (CPU only) or a
// config the CUDA kernels cannot run; FailedPrecondition in a build without CUDA.
absl::StatusOr<std::unique_ptr<DecoderBackend>> make_cuda_backend(const Decoder* model,
                                                                  bool gradients, int device,
                                                                  bool device_optimizer);

}  // namespace fp8rl
