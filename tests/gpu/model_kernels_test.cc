// Each model/cuda kernel against its CPU op in model/ops (the reference), with the tolerance it
// declares: bitwise where both sides do the same float32 operations in the same order (casts,
// embedding gather and scatter, bias add), bf16 output rounding (2^-8 relative) where the GPU
// stores bf16, summation-order slack (1e-5 .. 1e-4 of the RMS) for reductions, and relative
// Frobenius norms for GEMM outputs (same FP8 operands: 2e-3 as tests/gpu/gemm_test.cc).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cuda/device_runtime.h"
#include "model/cuda/elementwise_cuda.h"
#include "model/cuda/embedding_cuda.h"
#include "model/cuda/linear_cuda.h"
#include "model/cuda/rmsnorm_cuda.h"
#include "model/cuda/rope_cuda.h"
#include "model/cuda/swiglu_cuda.h"
#include "model/cuda/token_stats_cuda.h"
#include "model/ops/embedding.h"
#include "model/ops/linear.h"
#include "model/ops/rmsnorm.h"
#include "model/ops/rope.h"
#include "model/ops/swiglu.h"
#include "model/ops/token_stats.h"
#include "quant/block_quant.h"
#include "quant/cuda/block_quant_cuda.h"
#include "tests/catch.h"
#include "tests/gpu/model_test_util.h"

namespace fp8rl {
namespace {

using namespace gpu_test;

#define REQUIRE_CLOSE(report)        \
  do {                               \
    const std::string r_ = (report); \
    INFO(r_);                        \
    REQUIRE(r_.empty());             \
  } while (0)

cudaStream_t stream() {
  absl::StatusOr<DeviceRuntime*> rt = DeviceRuntime::get(0);
  FP8RL_CHECK_OK(rt.status());
  return (*rt)->stream();
}

std::vector<float> download_f32(const DevBuf& b) {
  GT_CUDA_OK(cudaStreamSynchronize(stream()));
  return b.download<float>();
}
std::vector<float> download_bf16(const DevBuf& b) {
  GT_CUDA_OK(cudaStreamSynchronize(stream()));
  return bf16_to_f32(b.download<uint16_t>());
}

TEST_CASE("cast_f32_to_bf16_cuda is core/dtype.h's rounding, specials included", "[model][cast]") {
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(1000), int64_t(128 * 131)}) {
    const std::vector<float> x = make_matrix(1, n, 7 + uint64_t(n), 23);
    auto dx = to_device(x);
    DevBuf dy(size_t(n) * 2 + 2);
    REQUIRE_OK(cast_f32_to_bf16_cuda(n, dx->get<float>(), dy.get<uint16_t>(), stream()));
    GT_CUDA_OK(cudaStreamSynchronize(stream()));
    std::vector<uint16_t> got = dy.download<uint16_t>();
    got.resize(static_cast<size_t>(n));
    REQUIRE(bitwise_report("bf16", to_bf16(x), got, 0).empty());
  }
}

TEST_CASE("embedding forward and scatter backward match the CPU bitwise", "[model][embedding]") {
  const int64_t vocab = 50, dim = 96, tokens = 300, rows = 384;
  Rng rng(3);
  std::vector<int32_t> ids(tokens);
  for (auto& id : ids) id = int32_t(rng.next_u64() % (rng.next_u64() % 2 ? 5 : vocab));  // repeats
  const std::vector<float> table = bf16_exact(vocab * dim, 1);
  auto dids = to_device(ids);
  auto dtable = to_device(to_bf16(table));
  DevBuf out(size_t(rows * dim) * 4);
  REQUIRE_OK(embedding_forward_cuda(tokens, rows, dim, dids->get<int32_t>(),
                                    dtable->get<uint16_t>(), out.get<float>(), stream()));
  std::vector<float> ref(size_t(rows * dim), 0.f);
  embedding_forward(tokens, dim, ids.data(), table.data(), ref.data());
  REQUIRE(bitwise_report("embedding", ref, download_f32(out), dim).empty());

  const std::vector<float> dout = make_matrix(tokens, dim, 5, 0);
  std::vector<float> dtab = make_matrix(vocab, dim, 6, 0), dtab_ref = dtab;
  embedding_backward(tokens, dim, vocab, ids.data(), dout.data(), dtab_ref.data());
  const EmbeddingScatterPlan plan = EmbeddingScatterPlan::build(ids);
  REQUIRE(plan.seg.size() == plan.unique_ids.size() + 1);
  auto du = to_device(plan.unique_ids), dseg = to_device(plan.seg), dord = to_device(plan.order);
  auto ddout = to_device(dout), ddtab = to_device(dtab);
  REQUIRE_OK(embedding_backward_cuda(int64_t(plan.unique_ids.size()), dim, du->get<int32_t>(),
                                     dseg->get<int32_t>(), dord->get<int32_t>(),
                                     ddout->get<float>(), ddtab->get<float>(), stream()));
  REQUIRE(bitwise_report("dtable", dtab_ref, download_f32(*ddtab), dim).empty());
}

TEST_CASE("rmsnorm forward (fused residual add) and backward match the CPU op",
          "[model][rmsnorm]") {
  // Residual stream rows (float32): dims not a multiple of 64 or of the backward's 512-column
  // stride, up to the 8192 limit; more rows than the backward's 256 row runs; dx in place over dy.
  struct Case {
    int64_t rows, dim;
    bool residual, accumulate, in_place;
  };
  for (const Case& c : {Case{37, 1000, true, true, false}, Case{129, 64, false, false, true},
                        Case{1000, 2048, true, true, false}, Case{300, 5120, false, false, false},
                        Case{3, 8192, true, false, true}}) {
    INFO("rows=" << c.rows << " dim=" << c.dim);
    const int64_t n = c.rows * c.dim;
    const std::vector<float> a = bf16_exact(n, 11, 3.f), r = bf16_exact(n, 12),
                             dy = bf16_exact(n, 13);
    const std::vector<float> w = make_matrix(1, c.dim, 14, 0);
    std::vector<float> s = a;
    if (c.residual)
      for (int64_t i = 0; i < n; ++i) s[i] = a[i] + r[i];
    std::vector<float> y_ref(static_cast<size_t>(n)), rstd_ref(size_t(c.rows));
    rmsnorm_forward(c.rows, c.dim, 1e-6f, s.data(), w.data(), y_ref.data(), rstd_ref.data());

    RmsNormDesc d;
    d.rows = c.rows, d.dim = c.dim, d.eps = 1e-6f, d.accumulate_dx = c.accumulate;
    auto dx_in = to_device(a), dres = to_device(r), dw = to_device(w);
    DevBuf sum(size_t(n) * 4), y(size_t(n) * 2), rstd(size_t(c.rows) * 4);
    REQUIRE_OK(rmsnorm_forward_cuda(d, dx_in->get<float>(),
                                    c.residual ? dres->get<float>() : nullptr,
                                    c.residual ? sum.get<float>() : nullptr, dw->get<float>(),
                                    y.get<uint16_t>(), rstd.get<float>(), stream()));
    if (c.residual) REQUIRE(bitwise_report("sum", s, download_f32(sum), c.dim).empty());
    REQUIRE_CLOSE(close_report("rstd", download_f32(rstd), rstd_ref, 1e-5, 0));
    REQUIRE_CLOSE(close_report("y", download_bf16(y), y_ref, 1.0 / 256, 1e-6));

    // Backward from the forward's input s.
    std::vector<float> dx_ref(static_cast<size_t>(n)), dw_ref = make_matrix(1, c.dim, 15, 0);
    const std::vector<float> dw0 = dw_ref;
    std::vector<float> dx0 =
        c.accumulate ? make_matrix(c.rows, c.dim, 16, 0) : std::vector<float>(size_t(n), 0.f);
    rmsnorm_backward(c.rows, c.dim, s.data(), w.data(), rstd_ref.data(), dy.data(), dx_ref.data(),
                     dw_ref.data());
    for (int64_t i = 0; i < n; ++i) dx_ref[i] += dx0[i];
    auto dsrc = to_device(s), ddy = to_device(dy), ddx = to_device(dx0), ddw = to_device(dw0);
    auto drstd = to_device(rstd_ref);
    DevBuf partial(size_t(rmsnorm_backward_scratch_floats(c.dim)) * 4);
    DevBuf& dx = c.in_place ? *ddy : *ddx;
    DevBuf dx16(size_t(n) * 2);  // the bf16 copy of dx, in every case but the in-place ones
    REQUIRE_OK(rmsnorm_backward_cuda(d, dsrc->get<float>(), dw->get<float>(), drstd->get<float>(),
                                     ddy->get<float>(), dx.get<float>(),
                                     c.in_place ? nullptr : dx16.get<uint16_t>(), ddw->get<float>(),
                                     partial.get<float>(), stream()));
    const std::vector<float> got_dx = download_f32(dx);
    REQUIRE_CLOSE(close_report("dx", got_dx, dx_ref, 1e-4, 1e-5));
    if (!c.in_place)
      REQUIRE(bitwise_report("dx16", to_bf16(got_dx), dx16.download<uint16_t>(), c.dim).empty());
    REQUIRE_CLOSE(close_report("dw", download_f32(*ddw), dw_ref, 1e-4, 1e-5));
  }
  RmsNormDesc wide;
  wide.rows = 1, wide.dim = kRmsNormMaxDim + 2;
  DevBuf b(4);
  REQUIRE(rmsnorm_forward_cuda(wide, b.get<float>(), nullptr, nullptr, b.get<float>(),
                               b.get<uint16_t>(), b.get<float>(), stream())
              .code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("qk_norm_rope_cuda and its backward match rmsnorm + rope_apply", "[model][rope]") {
  struct Case {
    int64_t tokens, heads, hd;
    bool norm;
  };
  // 1000 x 8 rows: several rows per warp in the backward's fixed row split.
  for (const Case& c : {Case{77, 3, 64, true}, Case{1000, 8, 128, true}, Case{45, 2, 32, true},
                        Case{77, 3, 128, false}}) {
    INFO("tokens=" << c.tokens << " heads=" << c.heads << " head_dim=" << c.hd
                   << " norm=" << c.norm);
    const int64_t rows = c.tokens * c.heads, n = rows * c.hd;
    const RopeTable table = RopeTable::build(2048, c.hd, 1e6);
    Rng rng(5);
    std::vector<int32_t> pos(static_cast<size_t>(c.tokens));
    for (auto& p : pos) p = int32_t(rng.next_u64() % 2048);
    const std::vector<float> x = bf16_exact(n, 21, 2.f), dy = bf16_exact(n, 22);
    const std::vector<float> w = make_matrix(1, c.hd, 23, 0), dw0 = make_matrix(1, c.hd, 24, 0);
    auto dcos = to_device(table.cos), dsin = to_device(table.sin), dpos = to_device(pos);
    auto dx = to_device(to_bf16(x)), dw = to_device(w), ddw = to_device(dw0);

    // Reference: float32 norm, then the rotation; backward in the reverse order.
    std::vector<float> y = x, rstd(static_cast<size_t>(rows), 0.f);
    if (c.norm) rmsnorm_forward(rows, c.hd, 1e-6f, x.data(), w.data(), y.data(), rstd.data());
    rope_apply(table, c.tokens, c.heads, pos.data(), false, y.data());
    std::vector<float> g = dy, dx_ref = dy, dw_ref = dw0;
    rope_apply(table, c.tokens, c.heads, pos.data(), true, g.data());
    if (c.norm)
      rmsnorm_backward(rows, c.hd, x.data(), w.data(), rstd.data(), g.data(), dx_ref.data(),
                       dw_ref.data());
    else
      dx_ref = g;

    DevBuf out(size_t(n) * 2), drstd(size_t(rows) * 4);
    REQUIRE_OK(qk_norm_rope_cuda(c.tokens, c.heads, c.hd, 1e-6, dx->get<uint16_t>(),
                                 c.norm ? dw->get<float>() : nullptr, drstd.get<float>(),
                                 dcos->get<float>(), dsin->get<float>(), dpos->get<int32_t>(),
                                 out.get<uint16_t>(), stream()));
    REQUIRE_CLOSE(close_report("out", download_bf16(out), y, 1.0 / 256, 1e-6));
    if (c.norm) REQUIRE_CLOSE(close_report("rstd", download_f32(drstd), rstd, 1e-5, 0));

    auto dd = to_device(to_bf16(dy));
    DevBuf partial(size_t(qk_norm_rope_backward_scratch_floats(c.hd)) * 4);
    REQUIRE_OK(qk_norm_rope_backward_cuda(
        c.tokens, c.heads, c.hd, dx->get<uint16_t>(), c.norm ? dw->get<float>() : nullptr,
        drstd.get<float>(), dcos->get<float>(), dsin->get<float>(), dpos->get<int32_t>(),
        dd->get<uint16_t>(), ddw->get<float>(), partial.get<float>(), stream()));
    REQUIRE_CLOSE(close_report("dx", download_bf16(*dd), dx_ref, 1.0 / 256, 1e-3));
    REQUIRE_CLOSE(close_report("dw", download_f32(*ddw), dw_ref, 1e-4, 1e-5));
  }
}

TEST_CASE("swiglu forward and backward match the CPU op", "[model][swiglu]") {
  const int64_t n = 2 * 12345;
  const std::vector<float> g = bf16_exact(n, 31, 4.f), u = bf16_exact(n, 32),
                           da = bf16_exact(n, 33);
  std::vector<float> act(static_cast<size_t>(n)), dg(static_cast<size_t>(n)),
      du(static_cast<size_t>(n));
  swiglu_forward(n, g.data(), u.data(), act.data());
  swiglu_backward(n, g.data(), u.data(), da.data(), dg.data(), du.data());
  auto dgate = to_device(to_bf16(g)), dup = to_device(to_bf16(u)), ddact = to_device(to_bf16(da));
  DevBuf dact(size_t(n) * 2), dgo(size_t(n) * 2);
  REQUIRE_OK(swiglu_forward_cuda(n, dgate->get<uint16_t>(), dup->get<uint16_t>(),
                                 dact.get<uint16_t>(), stream()));
  REQUIRE_CLOSE(close_report("act", download_bf16(dact), act, 1.0 / 256, 1e-6));
  // dup in place over dact, as the decoder may.
  REQUIRE_OK(swiglu_backward_cuda(n, dgate->get<uint16_t>(), dup->get<uint16_t>(),
                                  ddact->get<uint16_t>(), dgo.get<uint16_t>(),
                                  ddact->get<uint16_t>(), stream()));
  REQUIRE_CLOSE(close_report("dgate", download_bf16(dgo), dg, 1.0 / 256, 1e-6));
  REQUIRE_CLOSE(close_report("dup", download_bf16(*ddact), du, 1.0 / 256, 1e-6));
}

TEST_CASE("quantize_swiglu_1x128_cuda is swiglu_forward_cuda then the 1x128 quantization",
          "[model][swiglu][fp8]") {
  // Ragged edges (rows, cols not multiples of 128; cols % 16 != 0 takes the element path), and
  // an inf and a NaN gate in the last case.
  struct Case {
    int64_t rows, cols;
    bool specials;
  };
  for (const Case& c : {Case{256, 384, false}, Case{200, 384, false}, Case{200, 328, false},
                        Case{130, 70, false}, Case{128, 256, true}}) {
    INFO("rows=" << c.rows << " cols=" << c.cols);
    const int64_t n = c.rows * c.cols;
    std::vector<uint16_t> g = to_bf16(bf16_exact(n, 51, 4.f)), u = to_bf16(bf16_exact(n, 52));
    if (c.specials) g[17] = 0x7f80u, g[n - 3] = 0x7fc1u;  // +inf, NaN
    auto dg = to_device(g), du = to_device(u);
    DevBuf act(size_t(n) * 2);
    REQUIRE_OK(swiglu_forward_cuda(n, dg->get<uint16_t>(), du->get<uint16_t>(), act.get<uint16_t>(),
                                   stream()));
    GT_CUDA_OK(cudaStreamSynchronize(stream()));
    const std::vector<uint16_t> act_h = act.download<uint16_t>();
    QuantDesc d;
    d.rows = c.rows, d.cols = c.cols, d.src_dtype = DType::kBF16, d.columnwise = true;
    const int64_t srows = ceil_div(c.cols, kQuantBlock) * c.rows;
    const int64_t scols = ceil_div(c.rows, kQuantBlock) * c.cols;
    std::vector<uint8_t> q(static_cast<size_t>(n)), qt(static_cast<size_t>(n));
    std::vector<float> sc(static_cast<size_t>(srows)), sct(static_cast<size_t>(scols));
    REQUIRE_OK(quantize_1x128_cpu(d, act_h.data(), q.data(), sc.data(), qt.data(), sct.data()));
    DevBuf dq(static_cast<size_t>(n)), ds(size_t(srows) * 4), dqt(static_cast<size_t>(n)),
        dst(size_t(scols) * 4);
    REQUIRE_OK(quantize_swiglu_1x128_cuda(d, dg->get(), du->get(), dq.get<uint8_t>(),
                                          ds.get<float>(), dqt.get<uint8_t>(), dst.get<float>(),
                                          stream()));
    GT_CUDA_OK(cudaStreamSynchronize(stream()));
    REQUIRE(bitwise_report("q", q, dq.download<uint8_t>(), c.cols).empty());
    REQUIRE(bitwise_report("scale", sc, ds.download<float>(), c.rows).empty());
    REQUIRE(bitwise_report("q_t", qt, dqt.download<uint8_t>(), c.rows).empty());
    REQUIRE(bitwise_report("scale_t", sct, dst.download<float>(), c.cols).empty());
  }
  QuantDesc f32;
  f32.rows = 128, f32.cols = 128, f32.src_dtype = DType::kF32;
  DevBuf b(128 * 128 * 4);
  REQUIRE(quantize_swiglu_1x128_cuda(f32, b.get(), b.get(), b.get<uint8_t>(), b.get<float>(),
                                     nullptr, nullptr, stream())
              .code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("quantize_swiglu_backward_1x128_cuda is swiglu_backward_cuda then the 1x128 quantization",
          "[model][swiglu][fp8]") {
  struct Case {
    int64_t rows, cols;
    bool specials;
  };
  for (const Case& c :
       {Case{256, 384, false}, Case{200, 384, false}, Case{130, 70, false}, Case{128, 256, true}}) {
    INFO("rows=" << c.rows << " cols=" << c.cols);
    const int64_t n = c.rows * c.cols;
    std::vector<uint16_t> g = to_bf16(bf16_exact(n, 61, 4.f)), u = to_bf16(bf16_exact(n, 62)),
                          da = to_bf16(bf16_exact(n, 63, 1e-3f));
    if (c.specials) g[17] = 0x7f80u, da[n - 3] = 0x7fc1u;  // +inf gate, NaN gradient
    auto dg = to_device(g), du = to_device(u), dda = to_device(da);
    DevBuf dgate(size_t(n) * 2), dup(size_t(n) * 2);
    REQUIRE_OK(swiglu_backward_cuda(n, dg->get<uint16_t>(), du->get<uint16_t>(),
                                    dda->get<uint16_t>(), dgate.get<uint16_t>(),
                                    dup.get<uint16_t>(), stream()));
    GT_CUDA_OK(cudaStreamSynchronize(stream()));
    QuantDesc d;
    d.rows = c.rows, d.cols = c.cols, d.src_dtype = DType::kBF16, d.columnwise = true;
    const int64_t srows = ceil_div(c.cols, kQuantBlock) * c.rows;
    const int64_t scols = ceil_div(c.rows, kQuantBlock) * c.cols;
    struct Copies {
      DevBuf q, s, qt, st;
      Fp8Copies view() {
        return {q.get<uint8_t>(), s.get<float>(), qt.get<uint8_t>(), st.get<float>()};
      }
    };
    Copies out[2] = {{DevBuf(size_t(n)), DevBuf(size_t(srows) * 4), DevBuf(size_t(n)),
                      DevBuf(size_t(scols) * 4)},
                     {DevBuf(size_t(n)), DevBuf(size_t(srows) * 4), DevBuf(size_t(n)),
                      DevBuf(size_t(scols) * 4)}};
    REQUIRE_OK(quantize_swiglu_backward_1x128_cuda(d, dg->get(), du->get(), dda->get(),
                                                   out[0].view(), out[1].view(), stream()));
    GT_CUDA_OK(cudaStreamSynchronize(stream()));
    const DevBuf* grads[2] = {&dgate, &dup};
    for (int o = 0; o < 2; ++o) {
      INFO((o == 0 ? "dgate" : "dup"));
      const std::vector<uint16_t> ref = grads[o]->download<uint16_t>();
      std::vector<uint8_t> q(static_cast<size_t>(n)), qt(static_cast<size_t>(n));
      std::vector<float> sc(static_cast<size_t>(srows)), sct(static_cast<size_t>(scols));
      REQUIRE_OK(quantize_1x128_cpu(d, ref.data(), q.data(), sc.data(), qt.data(), sct.data()));
      REQUIRE(bitwise_report("q", q, out[o].q.download<uint8_t>(), c.cols).empty());
      REQUIRE(bitwise_report("scale", sc, out[o].s.download<float>(), c.rows).empty());
      REQUIRE(bitwise_report("q_t", qt, out[o].qt.download<uint8_t>(), c.rows).empty());
      REQUIRE(bitwise_report("scale_t", sct, out[o].st.download<float>(), c.cols).empty());
    }
  }
}

TEST_CASE("bias add is bitwise bf16(y + b); bias grad sums columns", "[model][bias]") {
  const int64_t rows = 333, cols = 96;
  const std::vector<float> y = bf16_exact(rows * cols, 41), b = make_matrix(1, cols, 42, 0);
  std::vector<float> ref(y.size());
  for (int64_t i = 0; i < rows * cols; ++i)
    ref[i] = fp8rl::bf16_to_f32(f32_to_bf16(y[i] + b[i % cols]));
  auto dy = to_device(to_bf16(y)), db = to_device(b);
  REQUIRE_OK(bias_add_cuda(rows, cols, db->get<float>(), dy->get<uint16_t>(), stream()));
  REQUIRE(bitwise_report("y + b", ref, download_bf16(*dy), cols).empty());

  std::vector<float> g(size_t(cols), 0.5f);
  for (int64_t i = 0; i < rows * cols; ++i) g[i % cols] += y[i];
  auto dg = to_device(std::vector<float>(size_t(cols), 0.5f));
  auto dsrc = to_device(to_bf16(y));
  DevBuf partial(size_t(column_reduce_scratch_floats(cols)) * 4);
  REQUIRE_OK(bias_grad_cuda(rows, cols, dsrc->get<uint16_t>(), dg->get<float>(),
                            partial.get<float>(), stream()));
  REQUIRE_CLOSE(close_report("db", download_f32(*dg), g, 1e-5, 1e-6));
}

TEST_CASE("token stats match the CPU op over vocabulary chunks", "[model][token_stats]") {
  absl::StatusOr<DeviceRuntime*> rt = DeviceRuntime::get(0);
  REQUIRE_OK(rt.status());
  Bf16Gemm gemm(*rt);
  const int64_t tokens = 77, hidden = 64, vocab = 1000;
  for (int64_t chunk : {int64_t(256), int64_t(4096)}) {  // ragged last chunk; one chunk
    INFO("vocab_chunk=" << chunk);
    const TokenStatsShape s{tokens, hidden, vocab, chunk};
    const std::vector<float> h = bf16_exact(tokens * hidden, 51),
                             w = bf16_exact(vocab * hidden, 52, 0.3f);
    Rng rng(53);
    std::vector<int32_t> targets(tokens);
    for (auto& t : targets) t = rng.next_u64() % 5 == 0 ? -1 : int32_t(rng.next_u64() % vocab);
    targets[0] = 0, targets[1] = int32_t(vocab - 1);
    std::vector<float> lp(tokens), ent(tokens), lse(tokens), mean(tokens);
    token_stats_forward(s, h.data(), w.data(), targets.data(), lp.data(), ent.data(), lse.data(),
                        mean.data());
    auto dh = to_device(to_bf16(h)), dw = to_device(to_bf16(w)), dt = to_device(targets);
    DevBuf glp(tokens * 4), gent(tokens * 4), glse(tokens * 4), gmean(tokens * 4);
    ArenaCarver measure;
    TokenStatsScratch::carve(s, measure);
    DevBuf scratch(measure.used());
    ArenaCarver carver(scratch.get());
    const TokenStatsScratch sc = TokenStatsScratch::carve(s, carver);
    REQUIRE_OK(token_stats_forward_cuda(gemm, s, dh->get<uint16_t>(), dw->get<uint16_t>(),
                                        dt->get<int32_t>(), glp.get<float>(), gent.get<float>(),
                                        glse.get<float>(), gmean.get<float>(), sc, stream()));
    REQUIRE_CLOSE(close_report("logprob", download_f32(glp), lp, 1e-5, 1e-5));
    REQUIRE_CLOSE(close_report("entropy", download_f32(gent), ent, 1e-5, 1e-5));
    REQUIRE_CLOSE(close_report("lse", download_f32(glse), lse, 1e-5, 1e-5));

    const std::vector<float> dlp = make_matrix(1, tokens, 54, 0),
                             dent = make_matrix(1, tokens, 55, 0);
    std::vector<float> dh_ref(size_t(tokens * hidden)), dw_ref = make_matrix(vocab, hidden, 56, 0);
    const std::vector<float> dw0 = dw_ref;
    token_stats_backward(s, h.data(), w.data(), targets.data(), dlp.data(), dent.data(), lse.data(),
                         mean.data(), dh_ref.data(), dw_ref.data());
    auto ddlp = to_device(dlp), ddent = to_device(dent);
    DevBuf ddh(size_t(tokens * hidden) * 4);
    auto ddw = to_device(dw0);
    REQUIRE_OK(token_stats_backward_cuda(gemm, s, dh->get<uint16_t>(), dw->get<uint16_t>(),
                                         dt->get<int32_t>(), ddlp->get<float>(),
                                         ddent->get<float>(), glse.get<float>(), gmean.get<float>(),
                                         ddh.get<float>(), ddw->get<float>(), sc, stream()));
    // dL/dz is rounded to bf16 before the two GEMMs: 2^-9 relative per element.
    const double e_dh = rel_frobenius(download_f32(ddh), dh_ref);
    std::vector<float> got_dw = download_f32(*ddw);
    for (size_t i = 0; i < got_dw.size(); ++i) got_dw[i] -= dw0[i], dw_ref[i] -= dw0[i];
    const double e_dw = rel_frobenius(got_dw, dw_ref);
    INFO("dh rel " << e_dh << " dw rel " << e_dw);
    REQUIRE(e_dh <= 4e-3);
    REQUIRE(e_dw <= 4e-3);
  }
}

// One linear layer in both precisions against model/ops/linear.cc on bf16-exact inputs (so the
// FP8 quantization sees the same values on both sides), in == 192 and out == 160 not multiples
// of 128, tokens padded to 256 with zero rows.
TEST_CASE("LinearCuda matches linear_forward / linear_backward in bf16 and fp8",
          "[model][linear]") {
  absl::StatusOr<DeviceRuntime*> rt = DeviceRuntime::get(0);
  REQUIRE_OK(rt.status());
  const int64_t tokens = 200, padded = 256, in = 192, out = 160;
  const std::vector<float> w = bf16_exact(out * in, 61, 0.1f);
  std::vector<float> x = bf16_exact(tokens * in, 62), dy = bf16_exact(tokens * out, 63);
  for (LinearPrecision p : {LinearPrecision::kBF16, LinearPrecision::kFP8}) {
    INFO(linear_precision_name(p));
    LinearOptions o;
    o.precision = p;
    absl::StatusOr<LinearCuda> lin = LinearCuda::create(*rt, o);
    REQUIRE_OK(lin.status());
    std::vector<float> y_ref(size_t(tokens * out)), dx_ref(size_t(tokens * in));
    std::vector<float> dw_ref = make_matrix(out, in, 64, 0);
    const std::vector<float> dw0 = dw_ref;
    REQUIRE_OK(linear_forward(o, {tokens, in, out}, x.data(), w.data(), nullptr, y_ref.data()));
    REQUIRE_OK(linear_backward(o, {tokens, in, out}, x.data(), w.data(), dy.data(), dx_ref.data(),
                               dw_ref.data(), nullptr));

    ArenaCarver measure;
    DeviceLinear dl;
    carve_device_linear(p, out, in, measure, &dl);
    DevBuf wmem(measure.used());
    ArenaCarver carver(wmem.get());
    carve_device_linear(p, out, in, carver, &dl);
    auto dgrad_buf = to_device(dw0);
    dl.grad = dgrad_buf->get<float>();
    auto dwf = to_device(w);
    DevBuf tmp(size_t(LinearCuda::set_weight_scratch_floats(out, in)) * 4);
    REQUIRE_OK(lin->set_weight(dwf->get<float>(), tmp.get<float>(), dl, stream()));

    std::vector<float> xp = x, dyp = dy;
    xp.resize(size_t(padded * in), 0.f), dyp.resize(size_t(padded * out), 0.f);
    auto dx16 = to_device(to_bf16(xp)), ddy16 = to_device(to_bf16(dyp));
    DevBuf xq(size_t(padded * in)), xs(size_t(2 * padded) * 4), xqt(size_t(padded * in)),
        xst(size_t(2 * in) * 4), gq(size_t(padded * out)), gs(size_t(2 * padded) * 4),
        gqt(size_t(padded * out)), gst(size_t(2 * out) * 4);
    LinearOperand xo, go;
    if (p == LinearPrecision::kBF16) {
      xo.bf16 = dx16->get<uint16_t>(), go.bf16 = ddy16->get<uint16_t>();
    } else {
      REQUIRE_OK(lin->quantize(QuantRole::kFwdInput, padded, in, DType::kBF16, dx16->get(),
                               xq.get<uint8_t>(), xs.get<float>(), xqt.get<uint8_t>(),
                               xst.get<float>(), stream()));
      REQUIRE_OK(lin->quantize(QuantRole::kBwdGrad, padded, out, DType::kBF16, ddy16->get(),
                               gq.get<uint8_t>(), gs.get<float>(), gqt.get<uint8_t>(),
                               gst.get<float>(), stream()));
      xo.q = xq.get<uint8_t>(), xo.scale = xs.get<float>();
      xo.q_t = xqt.get<uint8_t>(), xo.scale_t = xst.get<float>();
      go.q = gq.get<uint8_t>(), go.scale = gs.get<float>();
      go.q_t = gqt.get<uint8_t>(), go.scale_t = gst.get<float>();
    }
    DevBuf y(size_t(padded * out) * 4), dx(size_t(padded * in) * 4);
    REQUIRE_OK(lin->forward(padded, xo, dl, y.get(), DType::kF32, false, stream()));
    REQUIRE_OK(lin->dgrad(padded, go, dl, dx.get(), DType::kF32, false, stream()));
    REQUIRE_OK(lin->wgrad(padded, go, xo, dl, stream()));
    std::vector<float> got_y = download_f32(y), got_dx = download_f32(dx);
    for (float v : std::vector<float>(got_y.begin() + tokens * out, got_y.end())) REQUIRE(v == 0.f);
    got_y.resize(size_t(tokens * out)), got_dx.resize(size_t(tokens * in));
    std::vector<float> got_dw = download_f32(*dgrad_buf);
    for (size_t i = 0; i < got_dw.size(); ++i) got_dw[i] -= dw0[i], dw_ref[i] -= dw0[i];
    const double tol = p == LinearPrecision::kBF16 ? 1e-5 : 2e-3;
    const double ey = rel_frobenius(got_y, y_ref), edx = rel_frobenius(got_dx, dx_ref),
                 edw = rel_frobenius(got_dw, dw_ref);
    INFO("y " << ey << " dx " << edx << " dw " << edw << " (tol " << tol << ")");
    REQUIRE(ey <= tol);
    REQUIRE(edx <= tol);
    REQUIRE(edw <= tol);
  }
}

}  // namespace
}  // namespace fp8rl
