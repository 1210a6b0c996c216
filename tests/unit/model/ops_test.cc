// Every CPU op of the decoder against finite differences (fp32, tiny dims) and plain references.
#include <cmath>
#include <vector>

#include "model/ops/attention.h"
#include "model/ops/embedding.h"
#include "model/ops/gemm_f32.h"
#include "model/ops/linear.h"
#include "model/ops/rmsnorm.h"
#include "model/ops/rope.h"
#include "model/ops/swiglu.h"
#include "model/ops/token_stats.h"
#include "tests/catch.h"
#include "tests/unit/model/grad_check.h"

using namespace fp8rl;
using namespace fp8rl::test;

namespace {

constexpr float kEps = 1e-2f;  // finite-difference step (fp32 forward)
constexpr double kTol = 1e-2;  // relative to the gradient scale of the tensor

}  // namespace

TEST_CASE("gemm_f32 layouts match a naive product", "[model][ops]") {
  Rng rng(1);
  const int64_t m = 67, n = 130, k = 129;
  auto a = random_vector(m * k, rng), b = random_vector(k * n, rng);
  std::vector<float> ref(size_t(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t kk = 0; kk < k; ++kk) s += double(a[i * k + kk]) * b[kk * n + j];
      ref[i * n + j] = float(s);
    }
  std::vector<float> c(size_t(m * n), 1.f);
  gemm_nn_f32(m, n, k, a.data(), b.data(), c.data(), false);
  CHECK(rel_norm_error(c.data(), ref.data(), m * n) < 1e-6);
  // B^T stored [n, k]; A^T stored [k, m].
  std::vector<float> bt(size_t(n * k)), at(size_t(k * m));
  transpose_f32(k, n, b.data(), bt.data());
  transpose_f32(m, k, a.data(), at.data());
  gemm_nt_f32(m, n, k, a.data(), bt.data(), c.data(), false);
  CHECK(rel_norm_error(c.data(), ref.data(), m * n) < 1e-6);
  gemm_tn_f32(m, n, k, at.data(), b.data(), c.data(), true);  // accumulate: 2x
  for (float& r : ref) r *= 2;
  CHECK(rel_norm_error(c.data(), ref.data(), m * n) < 1e-6);
}

TEST_CASE("linear f32 gradients", "[model][ops]") {
  Rng rng(2);
  const LinearShape s{5, 7, 6};
  LinearOptions o;
  auto x = random_vector(s.tokens * s.in, rng), w = random_vector(s.out * s.in, rng);
  auto b = random_vector(s.out, rng), r = random_vector(s.tokens * s.out, rng);
  std::vector<float> y(size_t(s.tokens * s.out));
  auto loss = [&] {
    REQUIRE(linear_forward(o, s, x.data(), w.data(), b.data(), y.data()).ok());
    return dot(r, y.data());
  };
  std::vector<float> dx(x.size()), dw(w.size(), 0.f), db(b.size(), 0.f);
  REQUIRE(
      linear_backward(o, s, x.data(), w.data(), r.data(), dx.data(), dw.data(), db.data()).ok());
  check_grad("dx", numeric_grad(x.data(), int64_t(x.size()), loss, kEps), dx.data(), kTol);
  check_grad("dw", numeric_grad(w.data(), int64_t(w.size()), loss, kEps), dw.data(), kTol);
  check_grad("db", numeric_grad(b.data(), int64_t(b.size()), loss, kEps), db.data(), kTol);
}

TEST_CASE("rmsnorm gradients", "[model][ops]") {
  Rng rng(3);
  const int64_t rows = 4, dim = 8;
  auto x = random_vector(rows * dim, rng), w = random_vector(dim, rng);
  auto r = random_vector(rows * dim, rng);
  std::vector<float> y(x.size()), rstd(static_cast<size_t>(rows));
  auto loss = [&] {
    rmsnorm_forward(rows, dim, 1e-6f, x.data(), w.data(), y.data(), rstd.data());
    return dot(r, y.data());
  };
  loss();
  // HF semantics: y = w * x / sqrt(mean(x^2) + eps).
  double ms = 0;
  for (int64_t i = 0; i < dim; ++i) ms += double(x[i]) * x[i] / dim;
  CHECK(y[3] == Approx(w[3] * x[3] / std::sqrt(ms + 1e-6)).epsilon(1e-5));
  std::vector<float> dx(x.size()), dw(size_t(dim), 0.f);
  rmsnorm_backward(rows, dim, x.data(), w.data(), rstd.data(), r.data(), dx.data(), dw.data());
  check_grad("dx", numeric_grad(x.data(), int64_t(x.size()), loss, kEps), dx.data(), kTol);
  check_grad("dw", numeric_grad(w.data(), dim, loss, kEps), dw.data(), kTol);
}

TEST_CASE("rope matches rotate_half and its inverse is the backward", "[model][ops]") {
  Rng rng(4);
  const int64_t tokens = 5, heads = 2, d = 8;
  const RopeTable table = RopeTable::build(tokens, d, 10000.0);
  const std::vector<int32_t> pos = {0, 1, 2, 0, 3};
  auto x = random_vector(tokens * heads * d, rng), r = random_vector(x.size(), rng);
  std::vector<float> y = x;
  rope_apply(table, tokens, heads, pos.data(), false, y.data());
  for (int64_t i = 0; i < heads * d; ++i) CHECK(y[i] == x[i]);  // position 0: identity
  // Token 4 (position 3), head 1, pair i = 1: [x1 cos - x5 sin, x5 cos + x1 sin].
  const double ang = 3.0 / std::pow(10000.0, 2.0 / 8.0);
  const float* xh = x.data() + (4 * heads + 1) * d;
  const float* yh = y.data() + (4 * heads + 1) * d;
  CHECK(yh[1] == Approx(xh[1] * std::cos(ang) - xh[5] * std::sin(ang)).epsilon(1e-5));
  CHECK(yh[5] == Approx(xh[5] * std::cos(ang) + xh[1] * std::sin(ang)).epsilon(1e-5));
  auto loss = [&] {
    y = x;
    rope_apply(table, tokens, heads, pos.data(), false, y.data());
    return dot(r, y.data());
  };
  std::vector<float> dx = r;
  rope_apply(table, tokens, heads, pos.data(), true, dx.data());
  check_grad("dx", numeric_grad(x.data(), int64_t(x.size()), loss, kEps), dx.data(), kTol);
}

TEST_CASE("packed causal GQA attention gradients", "[model][ops]") {
  Rng rng(5);
  const std::vector<int32_t> cu = {0, 5, 8};
  AttentionShape s;
  s.tokens = 8;
  s.q_heads = 2;
  s.kv_heads = 1;
  s.head_dim = 8;
  s.seqs = 2;
  s.cu_seqlens = cu.data();
  s.scale = float(1 / std::sqrt(8.0));
  auto q = random_vector(s.tokens * s.q_heads * s.head_dim, rng);
  auto k = random_vector(s.tokens * s.kv_heads * s.head_dim, rng);
  auto v = random_vector(k.size(), rng), r = random_vector(q.size(), rng);
  std::vector<float> out(q.size()), lse(size_t(s.tokens * s.q_heads));
  auto loss = [&] {
    attention_forward(s, q.data(), k.data(), v.data(), out.data(), lse.data());
    return dot(r, out.data());
  };
  loss();
  // The first token of each sequence sees only itself: its output is its own v.
  for (int64_t e = 0; e < s.head_dim; ++e) {
    CHECK(out[(5 * 2 + 1) * 8 + e] == Approx(v[5 * 8 + e]).epsilon(1e-6));
  }
  std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
  attention_backward(s, q.data(), k.data(), v.data(), out.data(), lse.data(), r.data(), dq.data(),
                     dk.data(), dv.data());
  check_grad("dq", numeric_grad(q.data(), int64_t(q.size()), loss, kEps), dq.data(), kTol);
  check_grad("dk", numeric_grad(k.data(), int64_t(k.size()), loss, kEps), dk.data(), kTol);
  check_grad("dv", numeric_grad(v.data(), int64_t(v.size()), loss, kEps), dv.data(), kTol);
}

TEST_CASE("swiglu gradients", "[model][ops]") {
  Rng rng(6);
  const int64_t n = 12;
  auto g = random_vector(n, rng, 2.0), u = random_vector(n, rng), r = random_vector(n, rng);
  std::vector<float> act(static_cast<size_t>(n));
  auto loss = [&] {
    swiglu_forward(n, g.data(), u.data(), act.data());
    return dot(r, act.data());
  };
  std::vector<float> dg(static_cast<size_t>(n)), du(static_cast<size_t>(n));
  swiglu_backward(n, g.data(), u.data(), r.data(), dg.data(), du.data());
  check_grad("dgate", numeric_grad(g.data(), n, loss, kEps), dg.data(), kTol);
  check_grad("dup", numeric_grad(u.data(), n, loss, kEps), du.data(), kTol);
}

TEST_CASE("embedding gradients with repeated ids", "[model][ops]") {
  Rng rng(7);
  const int64_t vocab = 11, dim = 4;
  const std::vector<int32_t> ids = {3, 0, 3, 10, 7, 3};
  const int64_t t = int64_t(ids.size());
  auto table = random_vector(vocab * dim, rng), r = random_vector(t * dim, rng);
  std::vector<float> out(size_t(t * dim));
  auto loss = [&] {
    embedding_forward(t, dim, ids.data(), table.data(), out.data());
    return dot(r, out.data());
  };
  std::vector<float> dtable(table.size(), 0.f);
  embedding_backward(t, dim, vocab, ids.data(), r.data(), dtable.data());
  check_grad("dtable", numeric_grad(table.data(), int64_t(table.size()), loss, kEps), dtable.data(),
             kTol);
}

TEST_CASE("chunked logprob and entropy: values and gradients", "[model][ops]") {
  Rng rng(8);
  TokenStatsShape s{6, 5, 23, 7};  // chunks of 7, 7, 7, 2
  const std::vector<int32_t> targets = {4, 22, -1, 0, 13, 7};
  auto h = random_vector(s.tokens * s.hidden, rng), w = random_vector(s.vocab * s.hidden, rng);
  auto glp = random_vector(s.tokens, rng), gent = random_vector(s.tokens, rng);
  std::vector<float> lp(size_t(s.tokens)), ent(lp.size()), lse(lp.size()), mz(lp.size());
  auto loss = [&] {
    token_stats_forward(s, h.data(), w.data(), targets.data(), lp.data(), ent.data(), lse.data(),
                        mz.data());
    return dot(glp, lp.data()) + dot(gent, ent.data());
  };
  loss();
  // Against a full softmax in double.
  std::vector<float> logits(size_t(s.tokens * s.vocab));
  lm_logits(s, h.data(), w.data(), logits.data());
  for (int64_t t = 0; t < s.tokens; ++t) {
    const float* z = logits.data() + t * s.vocab;
    double mx = -1e30, sum = 0, ent_ref = 0;
    for (int64_t j = 0; j < s.vocab; ++j) mx = std::max(mx, double(z[j]));
    for (int64_t j = 0; j < s.vocab; ++j) sum += std::exp(z[j] - mx);
    const double lse_ref = mx + std::log(sum);
    for (int64_t j = 0; j < s.vocab; ++j) {
      const double lp_j = z[j] - lse_ref;
      ent_ref -= std::exp(lp_j) * lp_j;
    }
    CHECK(ent[t] == Approx(ent_ref).margin(1e-5));
    CHECK(lp[t] == Approx(targets[t] < 0 ? 0.0 : z[targets[t]] - lse_ref).margin(1e-5));
  }
  std::vector<float> dh(h.size()), dw(w.size(), 0.f);
  token_stats_backward(s, h.data(), w.data(), targets.data(), glp.data(), gent.data(), lse.data(),
                       mz.data(), dh.data(), dw.data());
  check_grad("dh", numeric_grad(h.data(), int64_t(h.size()), loss, kEps), dh.data(), kTol);
  check_grad("dw", numeric_grad(w.data(), int64_t(w.size()), loss, kEps), dw.data(), kTol);
}
