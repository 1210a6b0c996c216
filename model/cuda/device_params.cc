// Device parameter storage, upload, random init and gradient fetch (model/cuda/device_params.h).
#include "model/cuda/device_params.h"

#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "model/cuda/elementwise_cuda.h"
#include "model/hf_names.h"

namespace fp8rl {

absl::Status qkv_forward_cuda(LinearCuda& lin, int64_t rows, const LinearOperand& in,
                              const DeviceLayerParams& p, uint16_t* q, uint16_t* k, uint16_t* v,
                              cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(lin.forward(rows, in, p.q_proj, q, DType::kBF16, false, stream));
  FP8RL_RETURN_IF_ERROR(lin.forward(rows, in, p.k_proj, k, DType::kBF16, false, stream));
  FP8RL_RETURN_IF_ERROR(lin.forward(rows, in, p.v_proj, v, DType::kBF16, false, stream));
  if (p.q_bias == nullptr) return absl::OkStatus();
  FP8RL_RETURN_IF_ERROR(bias_add_cuda(rows, p.q_proj.out, p.q_bias, q, stream));
  FP8RL_RETURN_IF_ERROR(bias_add_cuda(rows, p.k_proj.out, p.k_bias, k, stream));
  return bias_add_cuda(rows, p.v_proj.out, p.v_bias, v, stream);
}

absl::StatusOr<DeviceParams> DeviceParams::allocate(const ModelConfig& config,
                                                    const LinearCuda& lin, cudaStream_t stream,
                                                    bool gradients) {
  DeviceParams p;
  p.config_ = config;
  ArenaCarver wm, gm;  // measure
  p.carve(lin.options().precision, wm, gm);
  int device = 0;
  FP8RL_CUDA_CHECK(cudaGetDevice(&device));
  FP8RL_ASSIGN_OR_RETURN(p.weights_,
                         Tensor::empty_on(DType::kU8, {int64_t(wm.used())}, Device::cuda(device)));
  if (gradients) {
    FP8RL_ASSIGN_OR_RETURN(
        p.grads_, Tensor::empty_on(DType::kU8, {int64_t(gm.used())}, Device::cuda(device)));
  }
  // Without gradients their carver only measures: every gradient pointer stays null.
  ArenaCarver w(p.weights_.raw()), g(gradients ? p.grads_.raw() : nullptr);
  p.carve(lin.options().precision, w, g);
  if (gradients) FP8RL_RETURN_IF_ERROR(p.zero_grads(stream));
  return p;
}

void DeviceParams::carve(LinearPrecision precision, ArenaCarver& w, ArenaCarver& g) {
  const ModelConfig& c = config_;
  const int64_t vocab = c.vocab_size, h = c.hidden_size, hd = c.head_dim;
  const int64_t q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  const int64_t inter = c.intermediate_size;
  slots_.clear();
  layers.assign(size_t(c.num_hidden_layers), {});
  staging_floats_ = int64_t(1) << 24;  // table chunks of 64 MiB at least
  auto table = [&](Tensor DecoderParams::*m, uint16_t** dev, float** grad) {
    *dev = w.take<uint16_t>(vocab * h);
    *grad = g.take<float>(vocab * h);
    Slot s;
    s.kind = Slot::kTable, s.rows = vocab, s.cols = h, s.member = m, s.table = *dev, s.grad = *grad;
    slots_.push_back(s);
  };
  auto vec = [&](int layer, Tensor DecoderLayerParams::*lm, Tensor DecoderParams::*m, int64_t n,
                 float** dev, float** grad, bool is_norm) {
    *dev = w.take<float>(n);
    *grad = g.take<float>(n);
    Slot s;
    s.kind = Slot::kVector, s.rows = 1, s.cols = n, s.layer = layer, s.layer_member = lm;
    s.norm = is_norm;
    s.member = m, s.vec = *dev, s.grad = *grad;
    slots_.push_back(s);
  };
  auto linear = [&](int layer, Tensor DecoderLayerParams::*lm, int64_t out, int64_t in,
                    DeviceLinear* dl) {
    carve_device_linear(precision, out, in, w, dl);
    dl->grad = g.take<float>(out * in);
    Slot s;
    s.kind = Slot::kLinear, s.rows = out, s.cols = in, s.layer = layer, s.layer_member = lm;
    s.linear = dl, s.grad = dl->grad;
    slots_.push_back(s);
    staging_floats_ =
        std::max(staging_floats_, out * in + LinearCuda::set_weight_scratch_floats(out, in));
  };
  table(&DecoderParams::embed_tokens, &embed, &g_embed);
  for (int l = 0; l < int(c.num_hidden_layers); ++l) {
    DeviceLayerParams& p = layers[size_t(l)];
    using L = DecoderLayerParams;
    vec(l, &L::input_layernorm, nullptr, h, &p.input_layernorm, &p.g_input_layernorm, true);
    vec(l, &L::post_attention_layernorm, nullptr, h, &p.post_attention_layernorm,
        &p.g_post_attention_layernorm, true);
    if (c.qk_norm) {
      vec(l, &L::q_norm, nullptr, hd, &p.q_norm, &p.g_q_norm, true);
      vec(l, &L::k_norm, nullptr, hd, &p.k_norm, &p.g_k_norm, true);
    }
    if (c.attention_bias) {
      vec(l, &L::q_bias, nullptr, q, &p.q_bias, &p.g_q_bias, false);
      vec(l, &L::k_bias, nullptr, kv, &p.k_bias, &p.g_k_bias, false);
      vec(l, &L::v_bias, nullptr, kv, &p.v_bias, &p.g_v_bias, false);
    }
    linear(l, &L::q_proj, q, h, &p.q_proj);
    linear(l, &L::k_proj, kv, h, &p.k_proj);
    linear(l, &L::v_proj, kv, h, &p.v_proj);
    linear(l, &L::o_proj, h, q, &p.o_proj);
    linear(l, &L::gate_proj, inter, h, &p.gate_proj);
    linear(l, &L::up_proj, inter, h, &p.up_proj);
    linear(l, &L::down_proj, h, inter, &p.down_proj);
  }
  vec(-1, nullptr, &DecoderParams::norm, h, &norm, &g_norm, true);
  if (c.tie_word_embeddings) {
    head = embed, g_head = g_embed;
  } else {
    table(&DecoderParams::lm_head, &head, &g_head);
  }
}

const Tensor& DeviceParams::host_tensor(const DecoderParams& p, const Slot& s) {
  return s.layer >= 0 ? p.layers[size_t(s.layer)].*(s.layer_member) : p.*(s.member);
}

absl::Status DeviceParams::check_host(const DecoderParams& p) const {
  FP8RL_REQUIRE(int64_t(p.layers.size()) == config_.num_hidden_layers,
                "decoder parameters: ", p.layers.size(), " layers for a ",
                config_.num_hidden_layers, "-layer config");
  DecoderParams view = p;  // named() hands out pointers; the tensors are shared, not copied
  const std::vector<TensorSpec> specs = decoder_parameter_specs(config_);
  const auto named = view.named(config_);
  for (size_t i = 0; i < specs.size(); ++i) {
    const Tensor& t = *named[i].second;
    FP8RL_REQUIRE(t.defined(), "decoder parameters: ", specs[i].name, " is missing");
    FP8RL_REQUIRE(t.dtype() == DType::kF32 && t.shape() == specs[i].shape && t.device().is_cpu(),
                  "decoder parameters: ", specs[i].name, " is ", t.to_string(),
                  ", expected float32", shape_to_string(specs[i].shape), " on the CPU");
  }
  return absl::OkStatus();
}

absl::Status DeviceParams::write_all(LinearCuda& lin, cudaStream_t stream, const Source& source) {
  const int64_t staging_floats = staging_floats_;
  int device = 0;
  FP8RL_CUDA_CHECK(cudaGetDevice(&device));
  FP8RL_ASSIGN_OR_RETURN(Tensor staging,
                         Tensor::empty_on(DType::kF32, {staging_floats}, Device::cuda(device)));
  float* buf = staging.data<float>();
  for (const Slot& s : slots_) {
    switch (s.kind) {
      case Slot::kVector:
        FP8RL_RETURN_IF_ERROR(source(s, s.vec, 0, s.cols));
        break;
      case Slot::kLinear:
        FP8RL_RETURN_IF_ERROR(source(s, buf, 0, s.rows * s.cols));
        FP8RL_RETURN_IF_ERROR(lin.set_weight(buf, buf + s.rows * s.cols, *s.linear, stream));
        break;
      case Slot::kTable: {
        const int64_t chunk_rows = std::max<int64_t>(1, staging_floats / s.cols);
        for (int64_t r0 = 0; r0 < s.rows; r0 += chunk_rows) {
          const int64_t n = std::min(chunk_rows, s.rows - r0) * s.cols;
          FP8RL_RETURN_IF_ERROR(source(s, buf, r0 * s.cols, n));
          FP8RL_RETURN_IF_ERROR(cast_f32_to_bf16_cuda(n, buf, s.table + r0 * s.cols, stream));
        }
        break;
      }
    }
  }
  // The staging buffer is freed on return: the work reading it must be done.
  FP8RL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status DeviceParams::upload(const DecoderParams& host, LinearCuda& lin, cudaStream_t stream) {
  FP8RL_RETURN_IF_ERROR(check_host(host));
  return write_all(lin, stream, [&](const Slot& s, float* dst, int64_t offset, int64_t count) {
    FP8RL_CUDA_CHECK(cudaMemcpyAsync(dst, host_tensor(host, s).data<float>() + offset,
                                     size_t(count) * 4, cudaMemcpyHostToDevice, stream));
    return absl::OkStatus();
  });
}

absl::Status DeviceParams::init_random(uint64_t seed, double std, LinearCuda& lin,
                                       cudaStream_t stream) {
  uint64_t index = 0;
  return write_all(lin, stream, [&](const Slot& s, float* dst, int64_t, int64_t count) {
    return fill_normal_cuda(count, dst, seed * 0x100000001b3ull + ++index, s.norm ? 1.f : 0.f,
                            float(s.norm ? 0.1 * std : std), stream);
  });
}

absl::Status DeviceParams::zero_grads(cudaStream_t stream) {
  if (!has_gradients())
    return absl::FailedPreconditionError("device parameters were allocated without gradients");
  FP8RL_CUDA_CHECK(cudaMemsetAsync(grads_.raw(), 0, grads_.nbytes(), stream));
  return absl::OkStatus();
}

absl::Status DeviceParams::grads_to_host(DecoderParams* out, cudaStream_t stream) const {
  if (!has_gradients())
    return absl::FailedPreconditionError("device parameters were allocated without gradients");
  return state_to_host(grad_data(), out, stream);
}

std::vector<DeviceParams::Segment> DeviceParams::segments() const {
  std::vector<Segment> out;
  if (!has_gradients()) return out;
  out.reserve(slots_.size());
  for (const Slot& s : slots_)
    out.push_back({s.grad - grad_data(), s.rows * s.cols, s.kind != Slot::kVector});
  return out;
}

absl::Status DeviceParams::state_to_host(const float* state, DecoderParams* out,
                                         cudaStream_t stream) const {
  FP8RL_REQUIRE(out != nullptr, "state_to_host: null output");
  if (!has_gradients())
    return absl::FailedPreconditionError("device parameters were allocated without gradients");
  FP8RL_RETURN_IF_ERROR(check_host(*out));
  for (const Slot& s : slots_) {
    FP8RL_CUDA_CHECK(cudaMemcpyAsync(host_tensor(*out, s).data<float>(),
                                     state + (s.grad - grad_data()), size_t(s.rows * s.cols) * 4,
                                     cudaMemcpyDeviceToHost, stream));
  }
  FP8RL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status DeviceParams::state_from_host(const DecoderParams& in, float* state,
                                           cudaStream_t stream) const {
  if (!has_gradients())
    return absl::FailedPreconditionError("device parameters were allocated without gradients");
  FP8RL_RETURN_IF_ERROR(check_host(in));
  for (const Slot& s : slots_) {
    FP8RL_CUDA_CHECK(cudaMemcpyAsync(state + (s.grad - grad_data()),
                                     host_tensor(in, s).data<float>(), size_t(s.rows * s.cols) * 4,
                                     cudaMemcpyHostToDevice, stream));
  }
  FP8RL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status DeviceParams::upload_from_device(const float* state, LinearCuda& lin,
                                              cudaStream_t stream) {
  if (!has_gradients())
    return absl::FailedPreconditionError("device parameters were allocated without gradients");
  return write_all(lin, stream, [&](const Slot& s, float* dst, int64_t offset, int64_t count) {
    FP8RL_CUDA_CHECK(cudaMemcpyAsync(dst, state + (s.grad - grad_data()) + offset,
                                     size_t(count) * 4, cudaMemcpyDeviceToDevice, stream));
    return absl::OkStatus();
  });
}

}  // namespace fp8rl
