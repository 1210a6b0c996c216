// The decoder on one GPU: the CPU Decoder's function (model/decoder.h) with BF16 activations, a
// float32 residual stream, BF16 or FP8-blockwise linears (model/cuda/linear_cuda.h), fused flash
// attention, the chunked LM-head statistics, and float32 gradients accumulated on the device.
// Weights are refreshed from the host's float32 masters with upload(), so a host-side
// (CPU-offloaded) AdamW can drive it: forward -> backward -> grads_to_host -> step -> upload.
//
// Activation memory is planned: every buffer a forward and backward of a batch needs is sized up
// front from (config, padded tokens, sequences) and carved from one arena that is reused from
// step to step (it grows when a larger batch arrives). Saved for the backward: the residual
// stream entering each sublayer (f32), the norm statistics, q/k before QK-norm (the norm's
// backward) and after QK-norm + RoPE (attention's inputs), v, attention output and LSE, gate and
// up (bf16), and each linear's input as the backward multiplies it (bf16 rows, or FP8's
// columnwise copy made in the forward's one quantization pass). Recomputed: the SwiGLU output in
// BF16 mode.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "core/hf_config.h"
#include "core/tensor.h"
#include "model/cuda/activation_plan.h"
#include "model/cuda/device_params.h"
#include "model/cuda/linear_cuda.h"
#include "model/cuda/rmsnorm_cuda.h"
#include "model/decoder.h"
#include "model/ops/attention.h"

namespace fp8rl {

struct CudaDecoderOptions {
  CudaDecoderOptions() { linear.precision = LinearPrecision::kBF16; }

  // kBF16 or kFP8 (kF32 is the CPU's); int4_weights applies INT4 fake-quant at upload (QAT).
  LinearOptions linear;
  int64_t vocab_chunk = 8192;  // LM-head logits held at once: padded tokens x vocab_chunk floats
  int device = 0;
  // false: no gradient storage (inference); backward, zero_grads and grads_to_host then fail
  // with FailedPrecondition.
  bool gradients = true;
};

// The result of CudaDecoder::forward. Its activations live in the decoder's arena: valid until
// the next forward of the same decoder (backward checks).
struct CudaDecoderForward {
  PackedBatch batch;
  std::vector<int32_t> targets;
  std::vector<float> logprob, entropy;  // [tokens], on the host
  uint64_t generation = 0;
};

// Not thread-safe: one forward/backward at a time (the arena is shared by the steps).
class CudaDecoder {
 public:
  // Uploads `params` (float32 host tensors of decoder_parameter_specs(config)). InvalidArgument
  // naming the field for a config the CUDA kernels cannot run (head_dim not 32/64/128, FP8 with
  // linear dimensions not multiples of 16) or a missing/misshapen tensor; FailedPrecondition for
  // FP8 on a device without block-scaled GEMMs.
  static absl::StatusOr<CudaDecoder> create(ModelConfig config, const DecoderParams& params,
                                            const CudaDecoderOptions& options = {});
  // Random parameters generated on the device (benchmarks): linears and embeddings ~ N(0, std),
  // norms 1 + N(0, std / 10).
  static absl::StatusOr<CudaDecoder> create_random(ModelConfig config, uint64_t seed, double std,
                                                   const CudaDecoderOptions& options = {});
  CudaDecoder(CudaDecoder&&) = default;
  CudaDecoder& operator=(CudaDecoder&&) = default;

  const ModelConfig& config() const { return config_; }
  const CudaDecoderOptions& options() const { return options_; }

  // As Decoder::validate, plus an empty batch is InvalidArgument.
  absl::Status validate(const PackedBatch& batch, std::span<const int32_t> targets) const;

  // Runs the model; per-token log-probabilities of targets (negative: none, 0) and entropies come
  // back on the host. Synchronises the device stream.
  absl::StatusOr<CudaDecoderForward> forward(const PackedBatch& batch,
                                             std::span<const int32_t> targets);
  // Full logits [tokens, vocab] of the latest forward (tests; allocates tokens x vocab floats).
  // FailedPrecondition when another forward ran since `fwd`.
  absl::StatusOr<std::vector<float>> logits(const CudaDecoderForward& fwd);
  // Accumulates on the device the gradient of sum_t dlogprob[t] logprob[t] + dentropy[t]
  // entropy[t] into every parameter's float32 gradient. FailedPrecondition when another forward
  // ran since `fwd`. Synchronises.
  absl::Status backward(const CudaDecoderForward& fwd, std::span<const float> dlogprob,
                        std::span<const float> dentropy);

  absl::Status zero_grads();
  // The accumulated gradients into `grads` (shaped like the parameters), overwriting it.
  absl::Status grads_to_host(DecoderParams* grads) const;
  // Refreshes the device weights from float32 masters (after an optimizer step).
  absl::Status upload(const DecoderParams& params);
  // The same from float32 masters on this device, laid out as the gradients
  // (DeviceParams::segments): a device-resident optimizer's.
  absl::Status upload_from_device(const float* masters);

  // What an inference path that runs the weights with its own activations needs
  // (inference/cuda/cuda_kv_model.h). Kernels go on runtime()->stream().
  const DeviceParams& device_params() const { return params_; }
  LinearCuda& linear() { return lin_; }
  Bf16Gemm& head_gemm() { return head_gemm_; }
  DeviceRuntime* runtime() const { return rt_; }
  // RoPE tables on the device for at least `positions` positions: cos and sin [rows, head_dim/2]
  // float32 (RopeTable's values). Growing replaces them: earlier pointers die at the next call.
  struct RopeTables {
    const float* cos = nullptr;
    const float* sin = nullptr;
  };
  absl::StatusOr<RopeTables> rope_tables(int64_t positions);

  // Device bytes held: weights, gradients, activation arena (its current capacity).
  size_t weight_bytes() const { return params_.weight_bytes(); }
  size_t grad_bytes() const { return params_.grad_bytes(); }
  size_t arena_bytes() const { return arena_.defined() ? arena_.nbytes() : 0; }

 private:
  CudaDecoder(ModelConfig config, const CudaDecoderOptions& options, DeviceRuntime* rt,
              LinearCuda lin, DeviceParams params)
      : config_(std::move(config)),
        options_(options),
        rt_(rt),
        lin_(std::move(lin)),
        params_(std::move(params)),
        head_gemm_(rt) {}
  // Checks the config and options, allocates the parameters (contents undefined).
  static absl::StatusOr<CudaDecoder> allocate(ModelConfig config,
                                              const CudaDecoderOptions& options);
  // Carves the plan for `batch` from the arena (growing it when needed) and uploads the batch.
  absl::Status prepare(const PackedBatch& batch, std::span<const int32_t> targets);
  absl::Status ensure_rope(int64_t positions);
  AttentionShape attention_shape() const;
  // FailedPrecondition unless `fwd` is the latest forward (whose activations the arena holds).
  absl::Status check_current(const CudaDecoderForward& fwd, const char* what) const;
  // The linear input `x` [padded, cols] as the forward multiplies it: itself (BF16), or its FP8
  // rowwise copy, quantized in the same pass as the columnwise copy `saved_t` kept for wgrad.
  absl::StatusOr<LinearOperand> input_operand(const uint16_t* x, int64_t cols,
                                              const Fp8Buffer& saved_t);
  // A saved linear input as wgrad multiplies it.
  LinearOperand saved_operand(const uint16_t* x, const Fp8Buffer& saved_t) const;
  // dY [padded, cols] bf16 as dgrad and wgrad multiply it.
  absl::StatusOr<LinearOperand> grad_operand(const uint16_t* dy, int64_t cols);
  // plan_.dx (dL/d residual stream, float32 [padded, hidden]) as dgrad and wgrad multiply it:
  // the bf16 copy residual_norm_backward left in plan_.dy16, or its FP8 copies.
  absl::StatusOr<LinearOperand> residual_grad_operand();
  // plan_.dx (+)= the backward of RMSNorm d of x given plan_.dn, dw += its weight gradient; in
  // BF16 also the bf16 copy of dx that residual_grad_operand() hands to the next GEMMs.
  absl::Status residual_norm_backward(const RmsNormDesc& d, const float* x, const float* w,
                                      const float* rstd, float* dw);
  // q and k of layer l after QK-norm and RoPE, into its activations' q and k.
  absl::Status rotate_qk(int64_t l);
  absl::Status forward_layer(int64_t l);
  absl::Status backward_layer(int64_t l);

  ModelConfig config_;
  CudaDecoderOptions options_;
  DeviceRuntime* rt_ = nullptr;
  LinearCuda lin_;
  DeviceParams params_;
  Bf16Gemm head_gemm_;
  Tensor arena_;
  ActivationPlan plan_;
  Tensor rope_;  // cos then sin, [rope_positions_, head_dim/2] each
  int64_t rope_positions_ = 0;
  uint64_t generation_ = 0;
};

}  // namespace fp8rl
