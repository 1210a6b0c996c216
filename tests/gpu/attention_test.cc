// Flash attention (model/cuda/attention.h) against its CPU twin (model/ops/attention.h, fp32 on the
// same bf16-rounded inputs): forward out and lse, backward dq/dk/dv, on packed ragged batches
// (lengths 1 ... 1000, tile edges +-1), GQA ratios 1/2/4 and head_dim 32/64/128; and the
// argument checks, which must leave every buffer untouched.
#include "model/cuda/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "model/ops/attention.h"
#include "tests/catch.h"
#include "tests/gpu/gpu_test_util.h"

namespace fp8rl {
namespace {

using namespace gpu_test;

// Declared tolerances. The GPU rounds P (forward) and P, dS (backward) to bf16 before the second
// GEMM and writes bf16 outputs; the CPU stays in fp32. Errors are ||gpu - cpu|| / ||cpu|| and
// max |gpu - cpu| / max |cpu| per tensor; lse is compared absolutely (both sides use fp32 scores
// of the same inputs).
// Measured on the H100: out ~2e-3 / 3e-3, lse 4e-6, gradients ~4e-3 / 7e-3.
constexpr double kOutRelNorm = 5e-3, kOutMaxRel = 1e-2;
constexpr double kLseAbs = 1e-4;
constexpr double kGradRelNorm = 1e-2, kGradMaxRel = 2e-2;

struct Case {
  std::vector<int32_t> lens;
  int64_t q_heads, kv_heads, head_dim;
  float q_gain;  // > 1 sharpens the softmax (exercises the running-max rescale)
};

const std::vector<int32_t> kRagged = {1, 7, 128, 300, 1000};
const std::vector<int32_t> kEdges = {129, 64, 1, 255, 513, 127};

const Case kCases[] = {
    {kRagged, 2, 2, 128, 1.f}, {kRagged, 4, 2, 128, 2.f},    {kRagged, 4, 1, 128, 1.f},
    {kRagged, 4, 2, 64, 1.f},  {kRagged, 4, 1, 64, 3.f},     {kRagged, 2, 2, 32, 1.f},
    {kRagged, 4, 2, 32, 2.f},  {kRagged, 4, 1, 32, 1.f},     {kEdges, 2, 1, 128, 1.f},
    {kEdges, 4, 4, 64, 4.f},   {{200, 77}, 16, 8, 128, 1.f},
};

struct Errors {
  double rel_norm = 0, max_rel = 0;
};

Errors compare(const std::vector<float>& got, const std::vector<float>& ref) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(double(got[i]) - double(ref[i])));
    max_ref = std::max(max_ref, std::fabs(double(ref[i])));
  }
  // NaN anywhere makes rel_norm NaN, which fails every comparison below.
  return {rel_frobenius(got, ref), max_ref > 0 ? max_diff / max_ref : max_diff};
}

// n values of N(0, gain^2), rounded to bf16: the device copy and the CPU's fp32 view agree.
std::vector<uint16_t> random_bf16(size_t n, uint64_t seed, float gain) {
  Rng rng(seed);
  std::vector<float> x(n);
  for (float& v : x) v = float(rng.normal()) * gain;
  return to_bf16(x);
}

TEST_CASE("flash attention matches the CPU op (forward and backward)", "[attention]") {
  uint64_t seed = 1;
  for (const Case& c : kCases) {
    const int64_t tokens = std::accumulate(c.lens.begin(), c.lens.end(), int64_t(0));
    const int32_t max_len = *std::max_element(c.lens.begin(), c.lens.end());
    std::vector<int32_t> cu(c.lens.size() + 1, 0);
    for (size_t i = 0; i < c.lens.size(); ++i) cu[i + 1] = cu[i] + c.lens[i];
    const int64_t d = c.head_dim, nq = tokens * c.q_heads * d, nkv = tokens * c.kv_heads * d;
    INFO("tokens=" << tokens << " seqs=" << c.lens.size() << " q_heads=" << c.q_heads
                   << " kv_heads=" << c.kv_heads << " head_dim=" << d << " q_gain=" << c.q_gain);

    const auto q = random_bf16(size_t(nq), seed++, c.q_gain);
    const auto k = random_bf16(size_t(nkv), seed++, 1.f);
    const auto v = random_bf16(size_t(nkv), seed++, 1.f);
    const auto dout = random_bf16(size_t(nq), seed++, 1.f);

    AttentionShape s;
    s.tokens = tokens, s.q_heads = c.q_heads, s.kv_heads = c.kv_heads, s.head_dim = d;
    s.seqs = int64_t(c.lens.size()), s.scale = 1.f / std::sqrt(float(d));

    // CPU reference in fp32.
    s.cu_seqlens = cu.data();
    const auto qf = bf16_to_f32(q), kf = bf16_to_f32(k), vf = bf16_to_f32(v),
               doutf = bf16_to_f32(dout);
    std::vector<float> out_ref(static_cast<size_t>(nq)),
        lse_ref(static_cast<size_t>(tokens * c.q_heads));
    attention_forward(s, qf.data(), kf.data(), vf.data(), out_ref.data(), lse_ref.data());
    std::vector<float> dq_ref(static_cast<size_t>(nq)), dk_ref(static_cast<size_t>(nkv)),
        dv_ref(static_cast<size_t>(nkv));
    attention_backward(s, qf.data(), kf.data(), vf.data(), out_ref.data(), lse_ref.data(),
                       doutf.data(), dq_ref.data(), dk_ref.data(), dv_ref.data());

    // GPU.
    DevBuf d_cu(cu.size() * 4), d_q(size_t(nq) * 2), d_k(size_t(nkv) * 2), d_v(size_t(nkv) * 2),
        d_dout(size_t(nq) * 2), d_out(size_t(nq) * 2), d_lse(size_t(tokens * c.q_heads) * 4),
        d_dq(size_t(nq) * 2), d_dk(size_t(nkv) * 2), d_dv(size_t(nkv) * 2);
    d_cu.upload(cu), d_q.upload(q), d_k.upload(k), d_v.upload(v), d_dout.upload(dout);
    s.cu_seqlens = d_cu.get<int32_t>();
    const auto bf = [](const DevBuf& b) { return b.get<__nv_bfloat16>(); };
    REQUIRE_OK(cuda::attention_forward(s, max_len, bf(d_q), bf(d_k), bf(d_v), bf(d_out),
                                       d_lse.get<float>(), nullptr));
    const auto out = d_out.download<uint16_t>();
    const auto lse = d_lse.download<float>();
    const Errors e_out = compare(bf16_to_f32(out), out_ref);
    double lse_err = 0;
    for (size_t i = 0; i < lse.size(); ++i) {
      const double e = std::fabs(double(lse[i]) - double(lse_ref[i]));
      lse_err = std::isnan(e) ? INFINITY : std::max(lse_err, e);
    }

    // A larger max_seqlen only adds blocks that exit at once: the result is bitwise the same.
    REQUIRE_OK(cuda::attention_forward(s, tokens, bf(d_q), bf(d_k), bf(d_v), bf(d_out),
                                       d_lse.get<float>(), nullptr));
    {
      const std::string r = bitwise_report("out (max_seqlen = tokens)", out,
                                           d_out.download<uint16_t>(), c.q_heads * d);
      INFO(r);
      REQUIRE(r.empty());
    }

    DevBuf ws(cuda::attention_backward_workspace_bytes(s, max_len));
    REQUIRE_OK(cuda::attention_backward(s, max_len, bf(d_q), bf(d_k), bf(d_v), bf(d_out),
                                        d_lse.get<float>(), bf(d_dout), bf(d_dq), bf(d_dk),
                                        bf(d_dv), ws.get(), nullptr));
    const Errors e_dq = compare(bf16_to_f32(d_dq.download<uint16_t>()), dq_ref);
    const Errors e_dk = compare(bf16_to_f32(d_dk.download<uint16_t>()), dk_ref);
    const Errors e_dv = compare(bf16_to_f32(d_dv.download<uint16_t>()), dv_ref);

    std::printf(
        "attention T=%lld Hq=%lld Hkv=%lld D=%lld gain=%g: out %.2e/%.2e lse %.2e dq %.2e/%.2e "
        "dk %.2e/%.2e dv %.2e/%.2e (rel norm / max rel)\n",
        (long long)tokens, (long long)c.q_heads, (long long)c.kv_heads, (long long)d, c.q_gain,
        e_out.rel_norm, e_out.max_rel, lse_err, e_dq.rel_norm, e_dq.max_rel, e_dk.rel_norm,
        e_dk.max_rel, e_dv.rel_norm, e_dv.max_rel);
    CHECK(e_out.rel_norm <= kOutRelNorm);
    CHECK(e_out.max_rel <= kOutMaxRel);
    CHECK(lse_err <= kLseAbs);
    for (const Errors& e : {e_dq, e_dk, e_dv}) {
      CHECK(e.rel_norm <= kGradRelNorm);
      CHECK(e.max_rel <= kGradMaxRel);
    }
  }
}

TEST_CASE("flash attention rejects bad arguments and leaves buffers untouched", "[attention]") {
  const std::vector<int32_t> cu = {0, 5, 16};
  const int64_t tokens = 16, hq = 4, hkv = 2, d = 64;
  DevBuf dcu(cu.size() * 4), q(tokens * hq * d * 2 + 16), k(tokens * hkv * d * 2),
      v(tokens * hkv * d * 2), out(tokens * hq * d * 2), lse(tokens * hq * 4),
      dout(tokens * hq * d * 2), dq(tokens * hq * d * 2), dk(tokens * hkv * d * 2),
      dv(tokens * hkv * d * 2);
  dcu.upload(cu);
  AttentionShape good;
  good.tokens = tokens, good.q_heads = hq, good.kv_heads = hkv, good.head_dim = d, good.seqs = 2;
  good.cu_seqlens = dcu.get<int32_t>(), good.scale = 0.125f;
  DevBuf ws(cuda::attention_backward_workspace_bytes(good, 11));
  const auto bf = [](const DevBuf& b) { return b.get<__nv_bfloat16>(); };
  const auto untouched = out.download<uint8_t>();

  struct Bad {
    const char* field;  // must appear in the message
    AttentionShape shape;
    int64_t max_seqlen = 11;
    const __nv_bfloat16* q = nullptr;  // nullptr: the good buffer
    __nv_bfloat16* out = nullptr;
  };
  std::vector<Bad> bad;
  auto with = [&](const char* field, auto&& edit) {
    Bad b{field, good};
    edit(b);
    bad.push_back(b);
  };
  with("head_dim", [](Bad& b) { b.shape.head_dim = 48; });
  with("head_dim", [](Bad& b) { b.shape.head_dim = 256; });
  with("kv_heads", [](Bad& b) { b.shape.kv_heads = 3; });
  with("kv_heads", [](Bad& b) { b.shape.kv_heads = 0; });
  with("scale", [](Bad& b) { b.shape.scale = 0.f; });
  with("scale", [](Bad& b) { b.shape.scale = NAN; });
  with("tokens", [](Bad& b) { b.shape.tokens = -1; });
  with("seqs", [](Bad& b) { b.shape.seqs = -2; });
  with("cu_seqlens", [](Bad& b) { b.shape.cu_seqlens = nullptr; });
  with("max_seqlen", [](Bad& b) { b.max_seqlen = -1; });
  with("q", [&](Bad& b) {  // 2-byte aligned: cp.async needs 16
    b.q = reinterpret_cast<const __nv_bfloat16*>(q.get<uint8_t>() + 2);
  });
  with("out", [&](Bad& b) { b.out = reinterpret_cast<__nv_bfloat16*>(8); });  // misaligned
  for (const Bad& b : bad) {
    INFO("expects an error naming " << b.field);
    const absl::Status f =
        cuda::attention_forward(b.shape, b.max_seqlen, b.q ? b.q : bf(q), bf(k), bf(v),
                                b.out ? b.out : bf(out), lse.get<float>(), nullptr);
    INFO(f.ToString());
    CHECK(f.code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(f.message()).find(b.field) != std::string::npos);
    const absl::Status g = cuda::attention_backward(
        b.shape, b.max_seqlen, b.q ? b.q : bf(q), bf(k), bf(v), b.out ? b.out : bf(out),
        lse.get<float>(), bf(dout), bf(dq), bf(dk), bf(dv), ws.get(), nullptr);
    INFO(g.ToString());
    CHECK(g.code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(g.message()).find(b.field) != std::string::npos);
  }
  const absl::Status no_ws =
      cuda::attention_backward(good, 11, bf(q), bf(k), bf(v), bf(out), lse.get<float>(), bf(dout),
                               bf(dq), bf(dk), bf(dv), nullptr, nullptr);
  CHECK(no_ws.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(no_ws.message()).find("workspace") != std::string::npos);
  const std::string r =
      bitwise_report("out after rejected calls", untouched, out.download<uint8_t>(), 0);
  INFO(r);
  CHECK(r.empty());

  // No tokens: nothing to do, null buffers allowed.
  AttentionShape empty = good;
  empty.tokens = 0, empty.seqs = 0;
  CHECK(
      cuda::attention_forward(empty, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr).ok());
  CHECK(cuda::attention_backward(empty, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                 nullptr, nullptr, nullptr, nullptr, nullptr)
            .ok());
}

}  // namespace
}  // namespace fp8rl
