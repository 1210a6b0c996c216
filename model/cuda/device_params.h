// A decoder's parameters on one GPU: bf16 embedding table (and untied head), float32 norm weights
// and biases, each linear's weight in the form its precision multiplies (model/cuda/linear_cuda.h),
// and float32 gradients of every parameter. Weights live in one allocation, gradients in another
// (so zeroing or fetching them is one pass). Built from the host's float32 DecoderParams (the
// optimizer's masters) or from a random initialisation on the device.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "core/hf_config.h"
#include "core/tensor.h"
#include "model/cuda/linear_cuda.h"
#include "model/decoder.h"

namespace fp8rl {

// Device pointers of one layer; a weight's gradient sits beside it (g_*). Biases are null unless
// config.attention_bias, q_norm/k_norm unless config.qk_norm.
struct DeviceLayerParams {
  float *input_layernorm = nullptr, *post_attention_layernorm = nullptr;
  float *q_norm = nullptr, *k_norm = nullptr;
  float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr;
  float *g_input_layernorm = nullptr, *g_post_attention_layernorm = nullptr;
  float *g_q_norm = nullptr, *g_k_norm = nullptr;
  float *g_q_bias = nullptr, *g_k_bias = nullptr, *g_v_bias = nullptr;
  DeviceLinear q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;  // .grad inside
};

// The attention projections of one layer: q [rows, q_heads*head_dim], k and v [rows,
// kv_heads*head_dim] bf16 from the layer input `in`, biases added when the layer has them.
absl::Status qkv_forward_cuda(LinearCuda& lin, int64_t rows, const LinearOperand& in,
                              const DeviceLayerParams& p, uint16_t* q, uint16_t* k, uint16_t* v,
                              cudaStream_t stream);

class DeviceParams {
 public:
  // Allocates storage for `config` with linears in `lin`'s precision on the current device.
  // Contents are undefined until upload() or init_random(); gradients are zero. Without
  // `gradients` the gradient pointers are null and zero_grads/grads_to_host fail with
  // FailedPrecondition.
  static absl::StatusOr<DeviceParams> allocate(const ModelConfig& config, const LinearCuda& lin,
                                               cudaStream_t stream, bool gradients = true);
  bool has_gradients() const { return grads_.defined(); }

  // Rebuilds every device weight from `host` (float32, shapes of decoder_parameter_specs).
  // InvalidArgument naming the tensor when one is missing or misshapen (nothing is changed then).
  // Synchronises `stream`.
  absl::Status upload(const DecoderParams& host, LinearCuda& lin, cudaStream_t stream);
  // Linears, embedding and biases ~ N(0, std), norms 1 + N(0, 0.1 std), as tiny_model does;
  // deterministic in `seed`. Synchronises `stream`.
  absl::Status init_random(uint64_t seed, double std, LinearCuda& lin, cudaStream_t stream);

  absl::Status zero_grads(cudaStream_t stream);
  // Copies every gradient into `out` (float32 tensors shaped like the parameters, e.g.
  // DecoderParams::zeros(config)), overwriting it; the tied head's gradient is in embed_tokens.
  // Synchronises `stream`.
  absl::Status grads_to_host(DecoderParams* out, cudaStream_t stream) const;

  size_t weight_bytes() const { return weights_.nbytes(); }
  size_t grad_bytes() const { return grads_.nbytes(); }

  // The gradients' layout also holds other float32 state per parameter on the device (a
  // device-resident optimizer's masters and moments): a buffer of state_floats() floats in which
  // parameter i occupies [segments()[i].offset, + count). The gaps between segments (alignment)
  // are zero in the gradient buffer. Valid only with gradients.
  struct Segment {
    int64_t offset = 0, count = 0;
    bool matrix = false;  // a 2-D parameter (linear or table); false for norms and biases
  };
  std::vector<Segment> segments() const;
  int64_t state_floats() const { return int64_t(grads_.nbytes() / sizeof(float)); }
  const float* grad_data() const { return grads_.defined() ? grads_.data<float>() : nullptr; }
  // A buffer in the gradient layout (device) into host tensors shaped like the parameters, and
  // back. Synchronise `stream`. InvalidArgument naming a misshapen host tensor.
  absl::Status state_to_host(const float* state, DecoderParams* out, cudaStream_t stream) const;
  absl::Status state_from_host(const DecoderParams& in, float* state, cudaStream_t stream) const;
  // Rebuilds every device weight from float32 values already on the device, in the gradient
  // layout (a device-resident optimizer's masters). Synchronises `stream`.
  absl::Status upload_from_device(const float* state, LinearCuda& lin, cudaStream_t stream);

  uint16_t* embed = nullptr;  // [vocab, hidden] bf16
  uint16_t* head = nullptr;   // [vocab, hidden] bf16; == embed when tied
  float* norm = nullptr;      // [hidden]
  float *g_embed = nullptr, *g_head = nullptr, *g_norm = nullptr;  // g_head == g_embed when tied
  std::vector<DeviceLayerParams> layers;

 private:
  // One parameter: where it lives on the host (DecoderParams member), on the device, and its
  // gradient.
  struct Slot {
    enum Kind { kTable, kVector, kLinear } kind = kVector;
    int64_t rows = 0, cols = 0;
    bool norm = false;  // a norm weight (initialised around 1)
    int layer = -1;     // -1: a top-level member
    Tensor DecoderParams::*member = nullptr;
    Tensor DecoderLayerParams::*layer_member = nullptr;
    uint16_t* table = nullptr;
    float* vec = nullptr;
    DeviceLinear* linear = nullptr;
    float* grad = nullptr;
  };
  using Source =
      std::function<absl::Status(const Slot& slot, float* dst, int64_t offset, int64_t count)>;
  void carve(LinearPrecision precision, ArenaCarver& weights, ArenaCarver& grads);
  // Every weight from `source`, which writes float32 elements [offset, offset + count) of a
  // parameter to dst: vectors directly, linears and tables through a float32 staging buffer.
  absl::Status write_all(LinearCuda& lin, cudaStream_t stream, const Source& source);
  // InvalidArgument naming the first tensor of `p` that is not float32 on the CPU with the
  // shape decoder_parameter_specs gives.
  absl::Status check_host(const DecoderParams& p) const;
  static const Tensor& host_tensor(const DecoderParams& p, const Slot& s);

  ModelConfig config_;
  std::vector<Slot> slots_;
  Tensor weights_, grads_;
  int64_t staging_floats_ = 0;  // what the largest linear needs in write_all
};

}  // namespace fp8rl
