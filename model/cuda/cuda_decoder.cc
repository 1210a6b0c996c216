// CudaDecoder: creation, batch upload, forward and backward (model/cuda/cuda_decoder.h).
#include "model/cuda/cuda_decoder.h"

#include <algorithm>
#include <cmath>

#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "model/cuda/attention.h"
#include "model/cuda/elementwise_cuda.h"
#include "model/cuda/embedding_cuda.h"
#include "model/cuda/rmsnorm_cuda.h"
#include "model/cuda/rope_cuda.h"
#include "model/cuda/swiglu_cuda.h"
#include "model/ops/rope.h"
#include "quant/block_quant.h"

namespace fp8rl {
namespace {

LinearOperand bf16_operand(const uint16_t* p) {
  LinearOperand o;
  o.bf16 = p;
  return o;
}

// The FP8 copies of a gradient (rowwise for dgrad, columnwise for wgrad) as an operand.
LinearOperand fp8_operand(const Fp8Buffer& rows, const Fp8Buffer& cols) {
  LinearOperand o;
  o.q = rows.q, o.scale = rows.scale;
  o.q_t = cols.q, o.scale_t = cols.scale;
  return o;
}
Fp8Copies fp8_copies(const Fp8Buffer& rows, const Fp8Buffer& cols) {
  return {rows.q, rows.scale, cols.q, cols.scale};
}

__nv_bfloat16* nv(uint16_t* p) { return reinterpret_cast<__nv_bfloat16*>(p); }
const __nv_bfloat16* nv(const uint16_t* p) { return reinterpret_cast<const __nv_bfloat16*>(p); }

template <typename T>
absl::Status copy_to_device(T* dst, const std::vector<T>& src, cudaStream_t stream) {
  FP8RL_CUDA_CHECK(
      cudaMemcpyAsync(dst, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

RmsNormDesc norm_desc(int64_t rows, int64_t dim, double eps, bool acc) {
  RmsNormDesc d;
  d.rows = rows, d.dim = dim, d.eps = float(eps), d.accumulate_dx = acc;
  return d;
}

}  // namespace

absl::StatusOr<CudaDecoder> CudaDecoder::allocate(ModelConfig config,
                                                  const CudaDecoderOptions& options) {
  FP8RL_RETURN_IF_ERROR(config.validate());
  const int64_t hd = config.head_dim;
  FP8RL_REQUIRE(hd == 32 || hd == 64 || hd == 128, "CUDA decoder: head_dim ", hd,
                " is not one the attention kernels run (32, 64, 128)");
  FP8RL_REQUIRE(config.hidden_size % 2 == 0 && config.hidden_size <= kRmsNormMaxDim,
                "CUDA decoder: hidden_size ", config.hidden_size, " must be even and at most ",
                kRmsNormMaxDim);
  FP8RL_REQUIRE(options.vocab_chunk > 0, "CUDA decoder: vocab_chunk must be positive");
  if (options.linear.precision == LinearPrecision::kFP8) {
    for (auto [name, v] :
         {std::pair{"hidden_size", config.hidden_size},
          std::pair{"intermediate_size", config.intermediate_size},
          std::pair{"num_attention_heads * head_dim", config.num_attention_heads * hd},
          std::pair{"num_key_value_heads * head_dim", config.num_key_value_heads * hd}})
      FP8RL_REQUIRE(v % 16 == 0, "CUDA decoder: FP8 linears need ", name, " (", v,
                    ") to be a multiple of 16");
  }
  FP8RL_CUDA_CHECK(cudaSetDevice(options.device));
  FP8RL_ASSIGN_OR_RETURN(DeviceRuntime * rt, DeviceRuntime::get(options.device));
  FP8RL_ASSIGN_OR_RETURN(LinearCuda lin, LinearCuda::create(rt, options.linear));
  FP8RL_ASSIGN_OR_RETURN(DeviceParams params,
                         DeviceParams::allocate(config, lin, rt->stream(), options.gradients));
  return CudaDecoder(std::move(config), options, rt, std::move(lin), std::move(params));
}

absl::StatusOr<CudaDecoder> CudaDecoder::create(ModelConfig config, const DecoderParams& params,
                                                const CudaDecoderOptions& options) {
  FP8RL_ASSIGN_OR_RETURN(CudaDecoder d, allocate(std::move(config), options));
  FP8RL_RETURN_IF_ERROR(d.upload(params));
  return d;
}

absl::StatusOr<CudaDecoder> CudaDecoder::create_random(ModelConfig config, uint64_t seed,
                                                       double std,
                                                       const CudaDecoderOptions& options) {
  FP8RL_ASSIGN_OR_RETURN(CudaDecoder d, allocate(std::move(config), options));
  FP8RL_RETURN_IF_ERROR(d.params_.init_random(seed, std, d.lin_, d.rt_->stream()));
  return d;
}

absl::Status CudaDecoder::upload(const DecoderParams& params) {
  return params_.upload(params, lin_, rt_->stream());
}
absl::Status CudaDecoder::zero_grads() { return params_.zero_grads(rt_->stream()); }

absl::Status CudaDecoder::upload_from_device(const float* masters) {
  return params_.upload_from_device(masters, lin_, rt_->stream());
}

absl::Status CudaDecoder::grads_to_host(DecoderParams* grads) const {
  return params_.grads_to_host(grads, rt_->stream());
}

absl::Status CudaDecoder::validate(const PackedBatch& batch,
                                   std::span<const int32_t> targets) const {
  FP8RL_REQUIRE(batch.num_tokens() > 0, "packed batch: no tokens");
  return validate_packed_batch(config_, batch, targets);
}

absl::Status CudaDecoder::ensure_rope(int64_t positions) {
  if (positions <= rope_positions_) return absl::OkStatus();
  // Grow by doubling (up to the model's limit) so that longer batches rarely rebuild it.
  const int64_t n = std::min<int64_t>(std::max<int64_t>(positions, 2 * rope_positions_),
                                      config_.max_position_embeddings);
  const RopeTable table = RopeTable::build(n, config_.head_dim, config_.rope_theta);
  FP8RL_ASSIGN_OR_RETURN(rope_, Tensor::empty_on(DType::kF32, {2, n, config_.head_dim / 2},
                                                 Device::cuda(options_.device)));
  FP8RL_RETURN_IF_ERROR(copy_to_device(rope_.data<float>(), table.cos, rt_->stream()));
  FP8RL_RETURN_IF_ERROR(
      copy_to_device(rope_.data<float>() + table.cos.size(), table.sin, rt_->stream()));
  rope_positions_ = n;
  return absl::OkStatus();
}

absl::StatusOr<CudaDecoder::RopeTables> CudaDecoder::rope_tables(int64_t positions) {
  FP8RL_RETURN_IF_ERROR(ensure_rope(positions));
  const float* cos = rope_.data<float>();
  return RopeTables{cos, cos + rope_positions_ * (config_.head_dim / 2)};
}

AttentionShape CudaDecoder::attention_shape() const {
  AttentionShape s;
  s.tokens = plan_.shape.tokens;
  s.q_heads = config_.num_attention_heads;
  s.kv_heads = config_.num_key_value_heads;
  s.head_dim = config_.head_dim;
  s.seqs = plan_.shape.seqs;
  s.cu_seqlens = plan_.cu_seqlens;
  s.scale = float(1.0 / std::sqrt(double(config_.head_dim)));
  return s;
}

absl::Status CudaDecoder::prepare(const PackedBatch& batch, std::span<const int32_t> targets) {
  FP8RL_RETURN_IF_ERROR(validate(batch, targets));
  const int64_t tokens = batch.num_tokens(), padded = round_up(tokens, kTokenPad);
  // Empty sequences hold no tokens: the attention kernels never see them.
  std::vector<int32_t> cu{0};
  int64_t max_len = 0;
  for (int64_t s = 0; s < batch.num_seqs(); ++s) {
    if (batch.cu_seqlens[s + 1] == cu.back()) continue;
    max_len = std::max<int64_t>(max_len, batch.cu_seqlens[s + 1] - cu.back());
    cu.push_back(batch.cu_seqlens[s + 1]);
  }
  PlanShape shape = PlanShape::of(config_, tokens, padded, int64_t(cu.size()) - 1, lin_.fp8(),
                                  options_.vocab_chunk);
  ++generation_;  // whatever happens below, earlier forwards' activations are gone
  plan_ = ActivationPlan();
  AttentionShape attn;
  attn.tokens = tokens, attn.q_heads = config_.num_attention_heads;
  attn.kv_heads = config_.num_key_value_heads, attn.head_dim = config_.head_dim;
  attn.seqs = shape.seqs;
  shape.attention_workspace = cuda::attention_backward_workspace_bytes(attn, max_len);
  ArenaCarver measure;
  ActivationPlan::carve(shape, measure);
  if (!arena_.defined() || arena_.nbytes() < measure.used()) {
    arena_ = Tensor();  // free before allocating the larger one
    FP8RL_ASSIGN_OR_RETURN(arena_, Tensor::empty_on(DType::kU8, {int64_t(measure.used())},
                                                    Device::cuda(options_.device)));
  }
  ArenaCarver carver(arena_.raw());
  plan_ = ActivationPlan::carve(shape, carver);
  plan_.max_seqlen = max_len;
  FP8RL_RETURN_IF_ERROR(ensure_rope(max_len));

  const cudaStream_t s = rt_->stream();
  std::vector<int32_t> tok(size_t(padded), 0), pos(size_t(padded), 0), tgt(size_t(padded), -1);
  std::copy(batch.tokens.begin(), batch.tokens.end(), tok.begin());
  const std::vector<int32_t> p = batch.positions();
  std::copy(p.begin(), p.end(), pos.begin());
  std::copy(targets.begin(), targets.end(), tgt.begin());
  const EmbeddingScatterPlan scatter = EmbeddingScatterPlan::build(batch.tokens);
  plan_.emb_unique_count = int64_t(scatter.unique_ids.size());
  FP8RL_RETURN_IF_ERROR(copy_to_device(plan_.tokens, tok, s));
  FP8RL_RETURN_IF_ERROR(copy_to_device(plan_.positions, pos, s));
  FP8RL_RETURN_IF_ERROR(copy_to_device(plan_.cu_seqlens, cu, s));
  FP8RL_RETURN_IF_ERROR(copy_to_device(plan_.targets, tgt, s));
  FP8RL_RETURN_IF_ERROR(copy_to_device(plan_.emb_unique, scatter.unique_ids, s));
  FP8RL_RETURN_IF_ERROR(copy_to_device(plan_.emb_seg, scatter.seg, s));
  FP8RL_RETURN_IF_ERROR(copy_to_device(plan_.emb_order, scatter.order, s));
  return absl::OkStatus();
}

absl::Status CudaDecoder::check_current(const CudaDecoderForward& fwd, const char* what) const {
  if (fwd.generation != 0 && fwd.generation == generation_) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("CudaDecoder::", what, ": a later forward replaced this forward's activations"));
}

absl::StatusOr<LinearOperand> CudaDecoder::input_operand(const uint16_t* x, int64_t cols,
                                                         const Fp8Buffer& saved_t) {
  if (!lin_.fp8()) return bf16_operand(x);
  FP8RL_RETURN_IF_ERROR(lin_.quantize(QuantRole::kFwdInput, plan_.shape.padded, cols, DType::kBF16,
                                      x, plan_.in_rows.q, plan_.in_rows.scale, saved_t.q,
                                      saved_t.scale, rt_->stream()));
  LinearOperand o;
  o.q = plan_.in_rows.q, o.scale = plan_.in_rows.scale;
  return o;
}

LinearOperand CudaDecoder::saved_operand(const uint16_t* x, const Fp8Buffer& saved_t) const {
  if (!lin_.fp8()) return bf16_operand(x);
  LinearOperand o;
  o.q_t = saved_t.q, o.scale_t = saved_t.scale;
  return o;
}

absl::StatusOr<LinearOperand> CudaDecoder::grad_operand(const uint16_t* dy, int64_t cols) {
  if (!lin_.fp8()) return bf16_operand(dy);
  FP8RL_RETURN_IF_ERROR(lin_.quantize(QuantRole::kBwdGrad, plan_.shape.padded, cols, DType::kBF16,
                                      dy, plan_.dy_rows.q, plan_.dy_rows.scale, plan_.dy_cols.q,
                                      plan_.dy_cols.scale, rt_->stream()));
  return fp8_operand(plan_.dy_rows, plan_.dy_cols);
}

absl::StatusOr<LinearOperand> CudaDecoder::residual_grad_operand() {
  if (!lin_.fp8()) return bf16_operand(plan_.dy16);
  FP8RL_RETURN_IF_ERROR(lin_.quantize(QuantRole::kBwdGrad, plan_.shape.padded, plan_.shape.hidden,
                                      DType::kF32, plan_.dx, plan_.dy_rows.q, plan_.dy_rows.scale,
                                      plan_.dy_cols.q, plan_.dy_cols.scale, rt_->stream()));
  return fp8_operand(plan_.dy_rows, plan_.dy_cols);
}

absl::Status CudaDecoder::residual_norm_backward(const RmsNormDesc& d, const float* x,
                                                 const float* w, const float* rstd, float* dw) {
  return rmsnorm_backward_cuda(d, x, w, rstd, plan_.dn, plan_.dx, lin_.fp8() ? nullptr : plan_.dy16,
                               dw, plan_.reduce, rt_->stream());
}

absl::Status CudaDecoder::rotate_qk(int64_t l) {
  const LayerActivations& a = plan_.layers[size_t(l)];
  const DeviceLayerParams& p = params_.layers[size_t(l)];
  const int64_t rows = plan_.shape.padded, hd = config_.head_dim;
  const double eps = config_.rms_norm_eps;
  const float* cos = rope_.data<float>();
  const float* sin = cos + rope_positions_ * (hd / 2);
  FP8RL_RETURN_IF_ERROR(qk_norm_rope_cuda(rows, config_.num_attention_heads, hd, eps, a.q_raw,
                                          p.q_norm, a.q_rstd, cos, sin, plan_.positions, a.q,
                                          rt_->stream()));
  return qk_norm_rope_cuda(rows, config_.num_key_value_heads, hd, eps, a.k_raw, p.k_norm, a.k_rstd,
                           cos, sin, plan_.positions, a.k, rt_->stream());
}

absl::Status CudaDecoder::forward_layer(int64_t l) {
  const PlanShape& sh = plan_.shape;
  const int64_t T = sh.padded, H = sh.hidden, Q = sh.q(), I = sh.inter;
  LayerActivations& a = plan_.layers[size_t(l)];
  const DeviceLayerParams& p = params_.layers[size_t(l)];
  const cudaStream_t s = rt_->stream();
  const double eps = config_.rms_norm_eps;

  // Attention: h = x + o(attention(rope(norm(q(xn1))), rope(norm(k(xn1))), v(xn1))).
  const uint16_t* xn1 = lin_.fp8() ? plan_.xn : a.xn1;
  FP8RL_ASSIGN_OR_RETURN(LinearOperand in, input_operand(xn1, H, a.xn1_t));
  FP8RL_RETURN_IF_ERROR(qkv_forward_cuda(lin_, T, in, p, a.q_raw, a.k_raw, a.v, s));
  FP8RL_RETURN_IF_ERROR(rotate_qk(l));
  FP8RL_RETURN_IF_ERROR(cuda::attention_forward(attention_shape(), plan_.max_seqlen, nv(a.q),
                                                nv(a.k), nv(a.v), nv(a.attn), a.lse, s));
  // Padding rows are no sequence's: zero them, as every linear input's padding must be.
  FP8RL_CUDA_CHECK(cudaMemsetAsync(a.attn + sh.tokens * Q, 0, size_t((T - sh.tokens) * Q) * 2, s));
  FP8RL_ASSIGN_OR_RETURN(in, input_operand(a.attn, Q, a.attn_t));
  FP8RL_RETURN_IF_ERROR(lin_.forward(T, in, p.o_proj, plan_.proj, DType::kF32, false, s));
  uint16_t* xn2 = lin_.fp8() ? plan_.xn : a.xn2;
  FP8RL_RETURN_IF_ERROR(rmsnorm_forward_cuda(norm_desc(T, H, eps, false), a.x, plan_.proj, a.h,
                                             p.post_attention_layernorm, xn2, a.rstd2, s));

  // MLP: x_next = h + down(silu(gate(xn2)) * up(xn2)), then the next norm on it.
  FP8RL_ASSIGN_OR_RETURN(in, input_operand(xn2, H, a.xn2_t));
  FP8RL_RETURN_IF_ERROR(lin_.forward(T, in, p.gate_proj, a.gate, DType::kBF16, false, s));
  FP8RL_RETURN_IF_ERROR(lin_.forward(T, in, p.up_proj, a.up, DType::kBF16, false, s));
  if (lin_.fp8()) {  // the SwiGLU product goes straight into its FP8 copies
    FP8RL_RETURN_IF_ERROR(lin_.quantize_swiglu(QuantRole::kFwdInput, T, I, a.gate, a.up,
                                               plan_.in_rows.q, plan_.in_rows.scale, a.act_t.q,
                                               a.act_t.scale, s));
    in = LinearOperand();
    in.q = plan_.in_rows.q, in.scale = plan_.in_rows.scale;
  } else {
    FP8RL_RETURN_IF_ERROR(swiglu_forward_cuda(T * I, a.gate, a.up, plan_.act, s));
    in = bf16_operand(plan_.act);
  }
  FP8RL_RETURN_IF_ERROR(lin_.forward(T, in, p.down_proj, plan_.proj, DType::kF32, false, s));
  const bool last = l + 1 == int64_t(plan_.layers.size());
  LayerActivations* next = last ? nullptr : &plan_.layers[size_t(l + 1)];
  float* x_next = last ? plan_.x_final : next->x;
  const float* w = last ? params_.norm : params_.layers[size_t(l + 1)].input_layernorm;
  uint16_t* y = last ? plan_.hidden : (lin_.fp8() ? plan_.xn : next->xn1);
  float* rstd = last ? plan_.rstd_final : next->rstd1;
  return rmsnorm_forward_cuda(norm_desc(T, H, eps, false), a.h, plan_.proj, x_next, w, y, rstd, s);
}

absl::StatusOr<CudaDecoderForward> CudaDecoder::forward(const PackedBatch& batch,
                                                        std::span<const int32_t> targets) {
  FP8RL_RETURN_IF_ERROR(prepare(batch, targets));
  const PlanShape& sh = plan_.shape;
  const cudaStream_t s = rt_->stream();
  const int64_t T = sh.padded, H = sh.hidden;
  LayerActivations& first = plan_.layers[0];
  FP8RL_RETURN_IF_ERROR(
      embedding_forward_cuda(sh.tokens, T, H, plan_.tokens, params_.embed, first.x, s));
  FP8RL_RETURN_IF_ERROR(rmsnorm_forward_cuda(norm_desc(T, H, config_.rms_norm_eps, false), first.x,
                                             nullptr, nullptr, params_.layers[0].input_layernorm,
                                             lin_.fp8() ? plan_.xn : first.xn1, first.rstd1, s));
  for (int64_t l = 0; l < int64_t(plan_.layers.size()); ++l) {
    FP8RL_RETURN_IF_ERROR(annotate(forward_layer(l), absl::StrCat("forward layer ", l)));
  }
  FP8RL_RETURN_IF_ERROR(token_stats_forward_cuda(
      head_gemm_, {T, H, sh.vocab, sh.vocab_chunk}, plan_.hidden, params_.head, plan_.targets,
      plan_.logprob, plan_.entropy, plan_.lse, plan_.mean_logit, plan_.head, s));
  CudaDecoderForward f;
  f.batch = batch;
  f.targets.assign(targets.begin(), targets.end());
  f.logprob.resize(size_t(sh.tokens));
  f.entropy.resize(size_t(sh.tokens));
  FP8RL_CUDA_CHECK(cudaMemcpyAsync(f.logprob.data(), plan_.logprob, size_t(sh.tokens) * 4,
                                   cudaMemcpyDeviceToHost, s));
  FP8RL_CUDA_CHECK(cudaMemcpyAsync(f.entropy.data(), plan_.entropy, size_t(sh.tokens) * 4,
                                   cudaMemcpyDeviceToHost, s));
  FP8RL_CUDA_CHECK(cudaStreamSynchronize(s));
  f.generation = generation_;
  return f;
}

absl::StatusOr<std::vector<float>> CudaDecoder::logits(const CudaDecoderForward& fwd) {
  FP8RL_RETURN_IF_ERROR(check_current(fwd, "logits"));
  const PlanShape& sh = plan_.shape;
  FP8RL_ASSIGN_OR_RETURN(Tensor z, Tensor::empty_on(DType::kF32, {sh.padded, sh.vocab},
                                                    Device::cuda(options_.device)));
  Bf16GemmDesc g;
  g.m = sh.padded, g.n = sh.vocab, g.k = sh.hidden, g.out_dtype = DType::kF32;
  FP8RL_RETURN_IF_ERROR(head_gemm_.run(g, plan_.hidden, params_.head, z.raw(), rt_->stream()));
  std::vector<float> out(size_t(sh.tokens * sh.vocab));
  FP8RL_CUDA_CHECK(
      cudaMemcpyAsync(out.data(), z.raw(), out.size() * 4, cudaMemcpyDeviceToHost, rt_->stream()));
  FP8RL_CUDA_CHECK(cudaStreamSynchronize(rt_->stream()));
  return out;
}

absl::Status CudaDecoder::backward_layer(int64_t l) {
  const PlanShape& sh = plan_.shape;
  const int64_t T = sh.padded, H = sh.hidden, Q = sh.q(), KV = sh.kv(), I = sh.inter;
  const int64_t hd = config_.head_dim;
  const LayerActivations& a = plan_.layers[size_t(l)];
  const DeviceLayerParams& p = params_.layers[size_t(l)];
  const cudaStream_t s = rt_->stream();
  const double eps = config_.rms_norm_eps;
  const RmsNormDesc residual_norm = norm_desc(T, H, eps, true);

  // MLP. plan_.dx holds dL/d(layer output); the identity path keeps it, the norm adds into it.
  FP8RL_ASSIGN_OR_RETURN(LinearOperand dy, residual_grad_operand());
  if (!lin_.fp8()) FP8RL_RETURN_IF_ERROR(swiglu_forward_cuda(T * I, a.gate, a.up, plan_.act, s));
  FP8RL_RETURN_IF_ERROR(lin_.dgrad(T, dy, p.down_proj, plan_.dact, DType::kBF16, false, s));
  FP8RL_RETURN_IF_ERROR(lin_.wgrad(T, dy, saved_operand(plan_.act, a.act_t), p.down_proj, s));
  LinearOperand dgate, dup;
  if (lin_.fp8()) {  // dgate and dup straight into their FP8 copies
    FP8RL_RETURN_IF_ERROR(lin_.quantize_swiglu_backward(
        T, I, a.gate, a.up, plan_.dact, fp8_copies(plan_.dy_rows, plan_.dy_cols),
        fp8_copies(plan_.dy2_rows, plan_.dy2_cols), s));
    dgate = fp8_operand(plan_.dy_rows, plan_.dy_cols);
    dup = fp8_operand(plan_.dy2_rows, plan_.dy2_cols);
  } else {
    FP8RL_RETURN_IF_ERROR(
        swiglu_backward_cuda(T * I, a.gate, a.up, plan_.dact, plan_.dgate, plan_.dup, s));
    dgate = bf16_operand(plan_.dgate), dup = bf16_operand(plan_.dup);
  }
  const LinearOperand xn2 = saved_operand(a.xn2, a.xn2_t);
  FP8RL_RETURN_IF_ERROR(lin_.dgrad(T, dgate, p.gate_proj, plan_.dn, DType::kF32, false, s));
  FP8RL_RETURN_IF_ERROR(lin_.wgrad(T, dgate, xn2, p.gate_proj, s));
  FP8RL_RETURN_IF_ERROR(lin_.dgrad(T, dup, p.up_proj, plan_.dn, DType::kF32, true, s));
  FP8RL_RETURN_IF_ERROR(lin_.wgrad(T, dup, xn2, p.up_proj, s));
  FP8RL_RETURN_IF_ERROR(residual_norm_backward(residual_norm, a.h, p.post_attention_layernorm,
                                               a.rstd2, p.g_post_attention_layernorm));

  // Attention.
  FP8RL_ASSIGN_OR_RETURN(dy, residual_grad_operand());
  FP8RL_RETURN_IF_ERROR(lin_.dgrad(T, dy, p.o_proj, plan_.dattn, DType::kBF16, false, s));
  FP8RL_RETURN_IF_ERROR(lin_.wgrad(T, dy, saved_operand(a.attn, a.attn_t), p.o_proj, s));
  FP8RL_RETURN_IF_ERROR(cuda::attention_backward(
      attention_shape(), plan_.max_seqlen, nv(a.q), nv(a.k), nv(a.v), nv(a.attn), a.lse,
      nv(plan_.dattn), nv(plan_.dq), nv(plan_.dk), nv(plan_.dv), plan_.attention_workspace, s));
  const int64_t pad = T - sh.tokens;
  FP8RL_CUDA_CHECK(cudaMemsetAsync(plan_.dq + sh.tokens * Q, 0, size_t(pad * Q) * 2, s));
  FP8RL_CUDA_CHECK(cudaMemsetAsync(plan_.dk + sh.tokens * KV, 0, size_t(pad * KV) * 2, s));
  FP8RL_CUDA_CHECK(cudaMemsetAsync(plan_.dv + sh.tokens * KV, 0, size_t(pad * KV) * 2, s));
  const float* cos = rope_.data<float>();
  const float* sin = cos + rope_positions_ * (hd / 2);
  FP8RL_RETURN_IF_ERROR(qk_norm_rope_backward_cuda(T, sh.heads, hd, a.q_raw, p.q_norm, a.q_rstd,
                                                   cos, sin, plan_.positions, plan_.dq, p.g_q_norm,
                                                   plan_.reduce, s));
  FP8RL_RETURN_IF_ERROR(qk_norm_rope_backward_cuda(T, sh.kv_heads, hd, a.k_raw, p.k_norm, a.k_rstd,
                                                   cos, sin, plan_.positions, plan_.dk, p.g_k_norm,
                                                   plan_.reduce, s));
  if (config_.attention_bias) {
    FP8RL_RETURN_IF_ERROR(bias_grad_cuda(T, Q, plan_.dq, p.g_q_bias, plan_.reduce, s));
    FP8RL_RETURN_IF_ERROR(bias_grad_cuda(T, KV, plan_.dk, p.g_k_bias, plan_.reduce, s));
    FP8RL_RETURN_IF_ERROR(bias_grad_cuda(T, KV, plan_.dv, p.g_v_bias, plan_.reduce, s));
  }
  const LinearOperand xn1 = saved_operand(a.xn1, a.xn1_t);
  struct Proj {
    const uint16_t* grad;
    int64_t cols;
    const DeviceLinear* w;
  };
  bool first = true;
  for (const Proj& pr : {Proj{plan_.dq, Q, &p.q_proj}, Proj{plan_.dk, KV, &p.k_proj},
                         Proj{plan_.dv, KV, &p.v_proj}}) {
    FP8RL_ASSIGN_OR_RETURN(dy, grad_operand(pr.grad, pr.cols));
    FP8RL_RETURN_IF_ERROR(lin_.dgrad(T, dy, *pr.w, plan_.dn, DType::kF32, !first, s));
    FP8RL_RETURN_IF_ERROR(lin_.wgrad(T, dy, xn1, *pr.w, s));
    first = false;
  }
  return residual_norm_backward(residual_norm, a.x, p.input_layernorm, a.rstd1,
                                p.g_input_layernorm);
}

absl::Status CudaDecoder::backward(const CudaDecoderForward& fwd, std::span<const float> dlogprob,
                                   std::span<const float> dentropy) {
  FP8RL_RETURN_IF_ERROR(check_current(fwd, "backward"));
  if (!params_.has_gradients())
    return absl::FailedPreconditionError("CudaDecoder::backward: created without gradients");
  const PlanShape& sh = plan_.shape;
  FP8RL_REQUIRE(int64_t(dlogprob.size()) == sh.tokens && int64_t(dentropy.size()) == sh.tokens,
                "CudaDecoder::backward: ", dlogprob.size(), " logprob and ", dentropy.size(),
                " entropy gradients for ", sh.tokens, " tokens");
  const cudaStream_t s = rt_->stream();
  const int64_t T = sh.padded, H = sh.hidden;
  std::vector<float> glp(size_t(T), 0.f), gent(size_t(T), 0.f);
  std::copy(dlogprob.begin(), dlogprob.end(), glp.begin());
  std::copy(dentropy.begin(), dentropy.end(), gent.begin());
  FP8RL_RETURN_IF_ERROR(copy_to_device(plan_.dlogprob, glp, s));
  FP8RL_RETURN_IF_ERROR(copy_to_device(plan_.dentropy, gent, s));

  // Head: dn = dL/d(final norm output); padding rows have no target and zero upstream gradient.
  FP8RL_RETURN_IF_ERROR(token_stats_backward_cuda(
      head_gemm_, {T, H, sh.vocab, sh.vocab_chunk}, plan_.hidden, params_.head, plan_.targets,
      plan_.dlogprob, plan_.dentropy, plan_.lse, plan_.mean_logit, plan_.dn, params_.g_head,
      plan_.head, s));
  FP8RL_RETURN_IF_ERROR(residual_norm_backward(norm_desc(T, H, config_.rms_norm_eps, false),
                                               plan_.x_final, params_.norm, plan_.rstd_final,
                                               params_.g_norm));
  for (int64_t l = int64_t(plan_.layers.size()) - 1; l >= 0; --l) {
    FP8RL_RETURN_IF_ERROR(annotate(backward_layer(l), absl::StrCat("backward layer ", l)));
  }
  FP8RL_RETURN_IF_ERROR(embedding_backward_cuda(plan_.emb_unique_count, H, plan_.emb_unique,
                                                plan_.emb_seg, plan_.emb_order, plan_.dx,
                                                params_.g_embed, s));
  FP8RL_CUDA_CHECK(cudaStreamSynchronize(s));
  return absl::OkStatus();
}

}  // namespace fp8rl
