// BF16 and FP8 blockwise linear layers over cuBLASLt (model/cuda/linear_cuda.h).
#include "model/cuda/linear_cuda.h"

#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "model/cuda/elementwise_cuda.h"
#include "quant/block_quant.h"
#include "quant/cuda/block_quant_cuda.h"
#include "quant/cuda/int4_cuda.h"

namespace fp8rl {
namespace {

// Row stride of a 128x128 scale tensor over `k` columns, padded as cuBLASLt's BLK128x128 wants.
int64_t scale_ld(int64_t k) { return round_up(ceil_div(k, kQuantBlock), 4); }

}  // namespace

void carve_device_linear(LinearPrecision precision, int64_t out, int64_t in, ArenaCarver& arena,
                         DeviceLinear* w) {
  w->out = out, w->in = in;
  if (precision != LinearPrecision::kFP8) {
    w->w16 = arena.take<uint16_t>(out * in);
    return;
  }
  w->w8 = arena.take<uint8_t>(out * in);
  w->w8_scale = arena.take<float>(ceil_div(out, kQuantBlock) * scale_ld(in));
  w->w8t = arena.take<uint8_t>(out * in);
  w->w8t_scale = arena.take<float>(ceil_div(in, kQuantBlock) * scale_ld(out));
}

absl::StatusOr<LinearCuda> LinearCuda::create(DeviceRuntime* rt, const LinearOptions& options) {
  FP8RL_REQUIRE(options.precision != LinearPrecision::kF32, "CUDA linears run bf16 or fp8, not ",
                linear_precision_name(options.precision));
  FP8RL_REQUIRE(!options.int4_weights || options.int4_group_size > 0,
                "LinearOptions.int4_group_size must be positive");
  if (options.precision == LinearPrecision::kFP8)
    FP8RL_RETURN_IF_ERROR(rt->require_hopper_blockscaled());
  return LinearCuda(rt, options);
}

int64_t LinearCuda::set_weight_scratch_floats(int64_t out, int64_t in) {
  return out * in + ceil_div(out, kQuantBlock) * ceil_div(in, kQuantBlock);
}

absl::Status LinearCuda::set_weight(const float* w_f32, float* tmp, const DeviceLinear& w,
                                    cudaStream_t stream) {
  const float* src = w_f32;
  float* scale_tmp = tmp + w.out * w.in;
  if (options_.int4_weights) {  // QAT: what the precision sees is the INT4 grid's weight
    Int4Desc d;
    d.rows = w.out, d.cols = w.in, d.group_size = options_.int4_group_size;
    d.src_dtype = DType::kF32;
    FP8RL_RETURN_IF_ERROR(int4_fake_quant_cuda(d, w_f32, tmp, stream));
    src = tmp;
  }
  if (!fp8()) return cast_f32_to_bf16_cuda(w.out * w.in, src, w.w16, stream);
  QuantDesc d;
  d.rows = w.out, d.cols = w.in, d.src_dtype = DType::kF32;
  d.scale = scale_params_from_env(QuantRole::kFwdWeight);
  d.scale_ld = scale_ld(w.in);
  FP8RL_RETURN_IF_ERROR(quantize_128x128_cuda(d, src, w.w8, w.w8_scale, stream));
  // The transpose writes compact scales [ceil(in/128), ceil(out/128)]; the GEMM wants rows of
  // scale_ld(out).
  FP8RL_RETURN_IF_ERROR(transpose_128x128_cuda(d, w.w8, w.w8_scale, w.w8t, scale_tmp, stream));
  const int64_t ob = ceil_div(w.out, kQuantBlock), ib = ceil_div(w.in, kQuantBlock);
  FP8RL_CUDA_CHECK(cudaMemcpy2DAsync(w.w8t_scale, size_t(scale_ld(w.out)) * 4, scale_tmp,
                                     size_t(ob) * 4, size_t(ob) * 4, size_t(ib),
                                     cudaMemcpyDeviceToDevice, stream));
  return absl::OkStatus();
}

absl::Status LinearCuda::quantize(QuantRole role, int64_t tokens, int64_t cols, DType src,
                                  const void* x, uint8_t* q, float* scale, uint8_t* q_t,
                                  float* scale_t, cudaStream_t stream) const {
  QuantDesc d;
  d.rows = tokens, d.cols = cols, d.src_dtype = src;
  d.scale = scale_params_from_env(role);
  d.rowwise = q != nullptr;
  d.columnwise = q_t != nullptr;
  return quantize_1x128_cuda(d, x, q, scale, q_t, scale_t, stream);
}

absl::Status LinearCuda::quantize_swiglu(QuantRole role, int64_t tokens, int64_t cols,
                                         const uint16_t* gate, const uint16_t* up, uint8_t* q,
                                         float* scale, uint8_t* q_t, float* scale_t,
                                         cudaStream_t stream) const {
  QuantDesc d;
  d.rows = tokens, d.cols = cols, d.src_dtype = DType::kBF16;
  d.scale = scale_params_from_env(role);
  d.rowwise = q != nullptr;
  d.columnwise = q_t != nullptr;
  return quantize_swiglu_1x128_cuda(d, gate, up, q, scale, q_t, scale_t, stream);
}

absl::Status LinearCuda::quantize_swiglu_backward(int64_t tokens, int64_t cols,
                                                  const uint16_t* gate, const uint16_t* up,
                                                  const uint16_t* dact, const Fp8Copies& dgate,
                                                  const Fp8Copies& dup, cudaStream_t stream) const {
  QuantDesc d;
  d.rows = tokens, d.cols = cols, d.src_dtype = DType::kBF16;
  d.scale = scale_params_from_env(QuantRole::kBwdGrad);
  d.rowwise = d.columnwise = true;
  return quantize_swiglu_backward_1x128_cuda(d, gate, up, dact, dgate, dup, stream);
}

namespace {

Bf16GemmDesc bf16_forward_desc(int64_t tokens, const DeviceLinear& w, DType y_dtype, bool acc) {
  Bf16GemmDesc g;
  g.m = tokens, g.n = w.out, g.k = w.in, g.out_dtype = y_dtype, g.accumulate = acc;
  return g;
}

GemmDesc fp8_forward_desc(int64_t tokens, const DeviceLinear& w, DType y_dtype, bool acc) {
  GemmDesc g;
  g.m = tokens, g.n = w.out, g.k = w.in;
  g.a_tile = ScaleTile::k1x128, g.b_tile = ScaleTile::k128x128, g.b_scale_ld = scale_ld(w.in);
  g.out_dtype = y_dtype, g.accumulate = acc;
  return g;
}

}  // namespace

absl::Status LinearCuda::forward(int64_t tokens, const LinearOperand& x, const DeviceLinear& w,
                                 void* y, DType y_dtype, bool accumulate, cudaStream_t stream) {
  if (!fp8())
    return bf16_.run(bf16_forward_desc(tokens, w, y_dtype, accumulate), x.bf16, w.w16, y, stream);
  return fp8_.run(fp8_forward_desc(tokens, w, y_dtype, accumulate), x.q, x.scale, w.w8, w.w8_scale,
                  y, stream);
}

absl::Status LinearCuda::autotune_forward(int64_t tokens, const LinearOperand& x,
                                          const DeviceLinear& w, void* y, DType y_dtype,
                                          cudaStream_t stream) {
  if (!fp8()) {
    return bf16_.autotune(bf16_forward_desc(tokens, w, y_dtype, false), x.bf16, w.w16, y, stream)
        .status();
  }
  return fp8_
      .autotune(fp8_forward_desc(tokens, w, y_dtype, false), x.q, x.scale, w.w8, w.w8_scale, y,
                stream)
      .status();
}

absl::Status LinearCuda::dgrad(int64_t tokens, const LinearOperand& dy, const DeviceLinear& w,
                               void* dx, DType dx_dtype, bool accumulate, cudaStream_t stream) {
  if (!fp8()) {
    Bf16GemmDesc g;  // W [out, in] is B stored [k, n]
    g.m = tokens, g.n = w.in, g.k = w.out, g.out_dtype = dx_dtype, g.accumulate = accumulate;
    g.b_kmajor = true;
    return bf16_.run(g, dy.bf16, w.w16, dx, stream);
  }
  GemmDesc g;
  g.m = tokens, g.n = w.in, g.k = w.out;
  g.a_tile = ScaleTile::k1x128, g.b_tile = ScaleTile::k128x128, g.b_scale_ld = scale_ld(w.out);
  g.out_dtype = dx_dtype, g.accumulate = accumulate;
  return fp8_.run(g, dy.q, dy.scale, w.w8t, w.w8t_scale, dx, stream);
}

absl::Status LinearCuda::wgrad(int64_t tokens, const LinearOperand& dy, const LinearOperand& x,
                               const DeviceLinear& w, cudaStream_t stream) {
  if (!fp8()) {
    Bf16GemmDesc g;  // dY [tokens, out] and X [tokens, in] are A and B stored [k, rows]
    g.m = w.out, g.n = w.in, g.k = tokens, g.out_dtype = DType::kF32, g.accumulate = true;
    g.a_kmajor = true, g.b_kmajor = true;
    return bf16_.run(g, dy.bf16, x.bf16, w.grad, stream);
  }
  GemmDesc g;
  g.m = w.out, g.n = w.in, g.k = tokens;
  g.a_tile = ScaleTile::k1x128, g.b_tile = ScaleTile::k1x128;
  g.out_dtype = DType::kF32, g.accumulate = true;
  return fp8_.run(g, dy.q_t, dy.scale_t, x.q_t, x.scale_t, w.grad, stream);
}

}  // namespace fp8rl
