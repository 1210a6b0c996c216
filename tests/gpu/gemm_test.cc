// BlockScaledGemm (cuBLASLt VEC128 / BLK128x128) against gemm_blockscaled_cpu: relative Frobenius
// error <= 2e-3 with bf16 output (1e-3 with f32), for fprop / dgrad / wgrad tilings, padded and
// compact 128x128 scale strides (padding poisoned with NaN), ragged m, n, k, accumulation; the TE
// chain through the GPU quantizers; the BF16 GEMM; and the errors for shapes it cannot take.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/cuda/device_runtime.h"
#include "quant/block_quant.h"
#include "quant/cuda/block_quant_cuda.h"
#include "quant/cuda/block_scaled_gemm.h"
#include "quant/gemm_ref.h"
#include "tests/catch.h"
#include "tests/gpu/gpu_test_util.h"

namespace fp8rl {
namespace {

using namespace gpu_test;

DeviceRuntime* runtime() {
  absl::StatusOr<DeviceRuntime*> rt = DeviceRuntime::get(0);
  FP8RL_CHECK_OK(rt.status());
  return *rt;
}

// One e4m3 operand [rows, k] quantized on the CPU, with its scales.
struct Operand {
  std::vector<uint8_t> q;
  std::vector<float> s;
};

Operand make_operand(int64_t rows, int64_t k, ScaleTile tile, int64_t ld, uint64_t seed) {
  const std::vector<float> x = make_matrix(rows, k, seed, 0);
  QuantDesc d;
  d.rows = rows, d.cols = k, d.src_dtype = DType::kF32, d.scale_ld = ld;
  Operand op;
  op.q.assign(size_t(rows * k), 0);
  if (tile == ScaleTile::k1x128) {
    op.s.assign(size_t(d.col_tiles() * rows), 0.f);
    FP8RL_CHECK_OK(quantize_1x128_cpu(d, x.data(), op.q.data(), op.s.data(), nullptr, nullptr));
  } else {
    op.s.assign(size_t(d.row_tiles() * d.block_scale_ld()), NAN);  // padding poisoned
    FP8RL_CHECK_OK(quantize_128x128_cpu(d, x.data(), op.q.data(), op.s.data()));
  }
  return op;
}

std::vector<float> as_f32(const std::vector<uint8_t>& bytes, DType t) {
  std::vector<float> f(bytes.size() / dtype_size(t));
  for (size_t i = 0; i < f.size(); ++i) {
    if (t == DType::kF32) {
      std::memcpy(&f[i], &bytes[4 * i], 4);
    } else {
      uint16_t h;
      std::memcpy(&h, &bytes[2 * i], 2);
      f[i] = fp8rl::bf16_to_f32(h);
    }
  }
  return f;
}

// Runs desc on the GPU and the CPU from the same operands; returns rel. Frobenius error, or -1
// when the GPU refused the problem (the status is stored in *refused).
double gpu_vs_cpu(const GemmDesc& d, const Operand& a, const Operand& b, uint64_t seed,
                  absl::Status* refused) {
  const size_t osz = dtype_size(d.out_dtype);
  std::vector<uint8_t> d0(size_t(d.m * d.n) * osz);
  if (d.accumulate) {
    const auto init = make_matrix(d.m, d.n, seed, 0);
    for (size_t i = 0; i < init.size(); ++i) {
      if (d.out_dtype == DType::kF32) {
        std::memcpy(&d0[4 * i], &init[i], 4);
      } else {
        const uint16_t h = f32_to_bf16(init[i]);
        std::memcpy(&d0[2 * i], &h, 2);
      }
    }
  }
  std::vector<uint8_t> d_cpu = d0;
  FP8RL_CHECK_OK(
      gemm_blockscaled_cpu(d, a.q.data(), a.s.data(), b.q.data(), b.s.data(), d_cpu.data()));
  DevBuf da(a.q.size()), dsa(a.s.size() * 4), db(b.q.size()), dsb(b.s.size() * 4), dd(d0.size());
  da.upload(a.q), dsa.upload(a.s), db.upload(b.q), dsb.upload(b.s);
  if (d.accumulate) dd.upload(d0);
  BlockScaledGemm gemm(runtime());
  const absl::Status st = gemm.run(d, da.get<uint8_t>(), dsa.get<float>(), db.get<uint8_t>(),
                                   dsb.get<float>(), dd.get(), nullptr);
  if (!st.ok()) {
    *refused = st;
    return -1;
  }
  GT_CUDA_OK(cudaStreamSynchronize(runtime()->stream()));
  return rel_frobenius(as_f32(dd.download<uint8_t>(), d.out_dtype), as_f32(d_cpu, d.out_dtype));
}

struct GemmCase {
  int64_t m, n, k;
  ScaleTile at, bt;
  int64_t b_ld;  // for a 128x128 B (or A): -1 compact, else the stride
  DType out;
  bool acc;
  bool may_refuse = false;  // shapes cuBLASLt may reject (InvalidArgument, never a wrong result)
};

TEST_CASE("BlockScaledGemm matches gemm_blockscaled_cpu", "[gemm]") {
  using T = ScaleTile;
  const GemmCase cases[] = {
      {256, 384, 512, T::k1x128, T::k128x128, -1, DType::kBF16, false},  // fprop, L=4=L4
      {128, 256, 640, T::k1x128, T::k128x128, -1, DType::kBF16, false},  // compact L=5: repacked
      {128, 256, 640, T::k1x128, T::k128x128, 8, DType::kBF16, false},   // padded L4=8, NaN pad
      {128, 256, 640, T::k1x128, T::k128x128, 11, DType::kBF16, false},  // over-padded: repacked
      {384, 128, 384, T::k1x128, T::k1x128, -1, DType::kF32, false},     // wgrad tiling
      {256, 256, 256, T::k128x128, T::k1x128, -1, DType::kBF16, false},  // 2D x 1D
      {192, 320, 1024, T::k1x128, T::k128x128, -1, DType::kBF16, true},  // accumulate
      {192, 320, 1024, T::k1x128, T::k1x128, -1, DType::kF32, true},
      {512, 768, 1024, T::k1x128, T::k128x128, -1, DType::kBF16, false},
      {196, 200, 512, T::k1x128, T::k128x128, -1, DType::kBF16, false, true},  // m % 8 != 0
      {128, 136, 320, T::k1x128, T::k128x128, -1, DType::kBF16, false, true},  // k % 128 != 0
      {100, 104, 48, T::k1x128, T::k1x128, -1, DType::kF32, false, true},      // k < 128
  };
  int i = 0;
  for (const GemmCase& c : cases) {
    GemmDesc d;
    d.m = c.m, d.n = c.n, d.k = c.k, d.a_tile = c.at, d.b_tile = c.bt;
    d.out_dtype = c.out, d.accumulate = c.acc;
    if (c.at == T::k128x128) d.a_scale_ld = c.b_ld < 0 ? 0 : c.b_ld;
    if (c.bt == T::k128x128) d.b_scale_ld = c.b_ld < 0 ? 0 : c.b_ld;
    ++i;
    INFO(d.to_string());
    const Operand a = make_operand(d.m, d.k, d.a_tile, d.a_scale_ld, 100 + i);
    const Operand b = make_operand(d.n, d.k, d.b_tile, d.b_scale_ld, 200 + i);
    absl::Status refused;
    const double err = gpu_vs_cpu(d, a, b, 300 + i, &refused);
    if (err < 0) {
      // Only the ragged cases may be refused, and then as InvalidArgument naming the problem.
      INFO("refused: " << refused.ToString());
      REQUIRE(c.may_refuse);
      REQUIRE(refused.code() == absl::StatusCode::kInvalidArgument);
      WARN("cuBLASLt refused " << d.to_string() << ": " << refused.ToString());
      continue;
    }
    INFO("rel frobenius = " << err);
    REQUIRE(err <= (c.out == DType::kBF16 ? 2e-3 : 1e-3));
  }
}

// X [M, K], W [N, K], dY [M, N] in bf16 through the GPU quantizers, then the three TE GEMMs
// (fprop, dgrad with the GPU-transposed weight, wgrad with the columnwise copies).
TEST_CASE("fprop, dgrad and wgrad through the GPU quantizers", "[gemm][chain]") {
  const int64_t M = 384, N = 512, K = 640;
  const auto xh = to_bf16(make_matrix(M, K, 1, 0));
  const auto wh = to_bf16(make_matrix(N, K, 2, 0));
  const auto gh = to_bf16(make_matrix(M, N, 3, 0));
  DevBuf x(xh.size() * 2), w(wh.size() * 2), g(gh.size() * 2);
  x.upload(xh), w.upload(wh), g.upload(gh);

  QuantDesc qx;  // X: rowwise (fprop) + columnwise (wgrad)
  qx.rows = M, qx.cols = K, qx.rowwise = true, qx.columnwise = true;
  DevBuf xq(M * K), xs(qx.col_tiles() * M * 4), xqt(M * K), xst(qx.row_tiles() * K * 4);
  REQUIRE_OK(quantize_1x128_cuda(qx, x.get(), xq.get<uint8_t>(), xs.get<float>(),
                                 xqt.get<uint8_t>(), xst.get<float>(), nullptr));
  QuantDesc qg = qx;  // dY: rowwise (dgrad) + columnwise (wgrad)
  qg.cols = N;
  DevBuf gq(M * N), gs(qg.col_tiles() * M * 4), gqt(M * N), gst(qg.row_tiles() * N * 4);
  REQUIRE_OK(quantize_1x128_cuda(qg, g.get(), gq.get<uint8_t>(), gs.get<float>(),
                                 gqt.get<uint8_t>(), gst.get<float>(), nullptr));
  QuantDesc qw;  // W: 128x128 with the cuBLASLt-padded stride, and its transpose (compact)
  qw.rows = N, qw.cols = K, qw.scale_ld = round_up(ceil_div(K, 128), 4);
  DevBuf wq(N * K), ws(qw.row_tiles() * qw.scale_ld * 4), wqt(N * K),
      wst(qw.row_tiles() * qw.col_tiles() * 4);
  REQUIRE_OK(quantize_128x128_cuda(qw, w.get(), wq.get<uint8_t>(), ws.get<float>(), nullptr));
  REQUIRE_OK(transpose_128x128_cuda(qw, wq.get<uint8_t>(), ws.get<float>(), wqt.get<uint8_t>(),
                                    wst.get<float>(), nullptr));
  GT_CUDA_OK(cudaDeviceSynchronize());

  struct Gemm {
    const char* name;
    GemmDesc d;
    const DevBuf *a, *sa, *b, *sb;
  };
  GemmDesc fprop;  // Y[M,N] = X . W^T
  fprop.m = M, fprop.n = N, fprop.k = K, fprop.b_tile = ScaleTile::k128x128,
  fprop.b_scale_ld = qw.scale_ld;
  GemmDesc dgrad;  // dX[M,K] = dY . W: B = W^T [K, N] with compact scales (repacked)
  dgrad.m = M, dgrad.n = K, dgrad.k = N, dgrad.b_tile = ScaleTile::k128x128;
  GemmDesc wgrad;  // dW[N,K] = dY^T . X: A = dY^T [N, M], B = X^T [K, M], both 1x128 along M
  wgrad.m = N, wgrad.n = K, wgrad.k = M, wgrad.a_tile = wgrad.b_tile = ScaleTile::k1x128;
  wgrad.out_dtype = DType::kF32;
  const Gemm gemms[] = {{"fprop", fprop, &xq, &xs, &wq, &ws},
                        {"dgrad", dgrad, &gq, &gs, &wqt, &wst},
                        {"wgrad", wgrad, &gqt, &gst, &xqt, &xst}};
  BlockScaledGemm gemm(runtime());
  for (const Gemm& gm : gemms) {
    const GemmDesc& d = gm.d;
    INFO(gm.name << " " << d.to_string());
    DevBuf out(d.m * d.n * dtype_size(d.out_dtype));
    REQUIRE_OK(gemm.run(d, gm.a->get<uint8_t>(), gm.sa->get<float>(), gm.b->get<uint8_t>(),
                        gm.sb->get<float>(), out.get(), nullptr));
    GT_CUDA_OK(cudaStreamSynchronize(runtime()->stream()));
    const auto aq = gm.a->download<uint8_t>(), bq = gm.b->download<uint8_t>();
    const auto as = gm.sa->download<float>(), bs = gm.sb->download<float>();
    std::vector<uint8_t> ref(out.bytes());
    REQUIRE_OK(gemm_blockscaled_cpu(d, aq.data(), as.data(), bq.data(), bs.data(), ref.data()));
    const double err =
        rel_frobenius(as_f32(out.download<uint8_t>(), d.out_dtype), as_f32(ref, d.out_dtype));
    INFO("rel frobenius = " << err);
    REQUIRE(err <= (d.out_dtype == DType::kBF16 ? 2e-3 : 1e-3));
  }
}

TEST_CASE("Bf16Gemm matches a float64 reference", "[gemm][bf16]") {
  for (DType out : {DType::kBF16, DType::kF32}) {
    for (bool acc : {false, true}) {
      Bf16GemmDesc d;
      d.m = 200, d.n = 136, d.k = 328, d.out_dtype = out, d.accumulate = acc;
      INFO(d.to_string());
      const auto ah = to_bf16(make_matrix(d.m, d.k, 11, 0));
      const auto bh = to_bf16(make_matrix(d.n, d.k, 12, 0));
      const auto init = make_matrix(d.m, d.n, 13, 0);
      std::vector<float> ref(size_t(d.m * d.n));
      for (int64_t i = 0; i < d.m; ++i)
        for (int64_t j = 0; j < d.n; ++j) {
          double s =
              acc ? double(out == DType::kF32 ? init[i * d.n + j]
                                              : fp8rl::bf16_to_f32(f32_to_bf16(init[i * d.n + j])))
                  : 0.0;
          for (int64_t k = 0; k < d.k; ++k)
            s += double(fp8rl::bf16_to_f32(ah[i * d.k + k])) *
                 double(fp8rl::bf16_to_f32(bh[j * d.k + k]));
          ref[i * d.n + j] = float(s);
        }
      DevBuf da(ah.size() * 2), db(bh.size() * 2), dd(size_t(d.m * d.n) * dtype_size(out));
      da.upload(ah), db.upload(bh);
      if (acc) {
        if (out == DType::kF32)
          dd.upload(init);
        else
          dd.upload(to_bf16(init));
      }
      Bf16Gemm gemm(runtime());
      REQUIRE_OK(gemm.run(d, da.get<uint16_t>(), db.get<uint16_t>(), dd.get(), nullptr));
      GT_CUDA_OK(cudaStreamSynchronize(runtime()->stream()));
      const double err = rel_frobenius(as_f32(dd.download<uint8_t>(), out), ref);
      INFO("rel frobenius = " << err);
      REQUIRE(err <= (out == DType::kBF16 ? 4e-3 : 1e-5));
    }
  }
}

TEST_CASE("BlockScaledGemm refuses what the hardware path cannot take, naming the constraint",
          "[gemm][errors]") {
  BlockScaledGemm gemm(runtime());
  DevBuf buf(1 << 20);
  uint8_t* p = buf.get<uint8_t>();
  float* s = buf.get<float>();
  auto expect = [&](GemmDesc d, const void* a, const float* sa, const void* b, const float* sb,
                    void* out, absl::StatusCode code, const char* words) {
    const absl::Status st = gemm.run(d, static_cast<const uint8_t*>(a), sa,
                                     static_cast<const uint8_t*>(b), sb, out, nullptr);
    INFO(d.to_string() << " -> " << st.ToString());
    REQUIRE(st.code() == code);
    REQUIRE(std::string(st.message()).find(words) != std::string::npos);
  };
  GemmDesc ok;
  ok.m = 64, ok.n = 64, ok.k = 128;
  GemmDesc d = ok;
  d.k = 120;
  expect(d, p, s, p, s, p, absl::StatusCode::kInvalidArgument, "multiple of 16");
  d = ok, d.m = 66;
  expect(d, p, s, p, s, p, absl::StatusCode::kInvalidArgument, "multiples of 4");
  d = ok, d.n = 68;  // n % 8 != 0 with bf16 output
  expect(d, p, s, p, s, p, absl::StatusCode::kInvalidArgument, "leading dimension");
  expect(ok, p + 1, s, p, s, p, absl::StatusCode::kInvalidArgument, "16-byte aligned");
  expect(ok, p, s, p, s, p + 8, absl::StatusCode::kInvalidArgument, "16-byte aligned");
  expect(ok, p, s + 1, p, s, p, absl::StatusCode::kInvalidArgument, "16-byte aligned");
  d = ok, d.a_tile = d.b_tile = ScaleTile::k128x128;
  expect(d, p, s, p, s, p, absl::StatusCode::kInvalidArgument, "128x128 x 128x128");
  d = ok, d.out_dtype = DType::kF16;
  expect(d, p, s, p, s, p, absl::StatusCode::kInvalidArgument, "out_dtype");
  expect(ok, nullptr, s, p, s, p, absl::StatusCode::kInvalidArgument, "null");
}

TEST_CASE("block-scaled support needs sm_90 and cuBLASLt >= 12.9", "[gemm][errors]") {
  DeviceInfo info = runtime()->info();
  INFO(info.to_string());
  REQUIRE(check_blockscaled_support(info).ok());  // the H100 this runs on
  DeviceInfo ampere = info;
  ampere.cc_major = 8, ampere.cc_minor = 0;
  REQUIRE(check_blockscaled_support(ampere).code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE(std::string(check_blockscaled_support(ampere).message()).find("9.0") !=
          std::string::npos);
  DeviceInfo blackwell = info;
  blackwell.cc_major = 10;
  REQUIRE(check_blockscaled_support(blackwell).code() == absl::StatusCode::kFailedPrecondition);
  DeviceInfo old_lt = info;
  old_lt.cublaslt_version = 120800;
  REQUIRE(check_blockscaled_support(old_lt).code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE(std::string(check_blockscaled_support(old_lt).message()).find("12.9") !=
          std::string::npos);
}

TEST_CASE("autotuned plans still match the CPU reference", "[gemm]") {
  BlockScaledGemm gemm(runtime());
  for (ScaleTile bt : {ScaleTile::k128x128, ScaleTile::k1x128}) {
    GemmDesc d;
    d.m = 256, d.n = 512, d.k = 768, d.b_tile = bt;
    INFO(d.to_string());
    const Operand a = make_operand(d.m, d.k, d.a_tile, 0, 41),
                  b = make_operand(d.n, d.k, d.b_tile, 0, 42);
    DevBuf da(a.q.size()), dsa(a.s.size() * 4), db(b.q.size()), dsb(b.s.size() * 4),
        dd(d.m * d.n * 2);
    da.upload(a.q), dsa.upload(a.s), db.upload(b.q), dsb.upload(b.s);
    absl::StatusOr<GemmAlgoInfo> info = gemm.autotune(
        d, da.get<uint8_t>(), dsa.get<float>(), db.get<uint8_t>(), dsb.get<float>(), dd.get());
    REQUIRE_OK(info.status());
    INFO(info->to_string());
    REQUIRE(info->tuned);
    GT_CUDA_OK(cudaMemset(dd.get(), 0xAB, dd.bytes()));
    GT_CUDA_OK(cudaDeviceSynchronize());
    REQUIRE_OK(gemm.run(d, da.get<uint8_t>(), dsa.get<float>(), db.get<uint8_t>(), dsb.get<float>(),
                        dd.get()));
    GT_CUDA_OK(cudaStreamSynchronize(runtime()->stream()));
    std::vector<uint8_t> ref(dd.bytes());
    REQUIRE_OK(gemm_blockscaled_cpu(d, a.q.data(), a.s.data(), b.q.data(), b.s.data(), ref.data()));
    const double err =
        rel_frobenius(as_f32(dd.download<uint8_t>(), d.out_dtype), as_f32(ref, d.out_dtype));
    INFO("rel frobenius = " << err);
    REQUIRE(err <= 2e-3);
  }
}

TEST_CASE("plans are cached by shape", "[gemm]") {
  DeviceRuntime* rt = runtime();
  GemmDesc d;
  d.m = 128, d.n = 128, d.k = 256;
  const Operand a = make_operand(d.m, d.k, d.a_tile, 0, 1),
                b = make_operand(d.n, d.k, d.b_tile, 0, 2);
  DevBuf da(a.q.size()), dsa(a.s.size() * 4), db(b.q.size()), dsb(b.s.size() * 4),
      dd(d.m * d.n * 2);
  da.upload(a.q), dsa.upload(a.s), db.upload(b.q), dsb.upload(b.s);
  BlockScaledGemm gemm(rt);
  REQUIRE_OK(gemm.run(d, da.get<uint8_t>(), dsa.get<float>(), db.get<uint8_t>(), dsb.get<float>(),
                      dd.get()));
  const size_t plans = rt->plans().size();
  REQUIRE_OK(gemm.run(d, da.get<uint8_t>(), dsa.get<float>(), db.get<uint8_t>(), dsb.get<float>(),
                      dd.get()));
  REQUIRE(rt->plans().size() == plans);
  d.n = 256;  // a new shape, a new plan
  DevBuf db2(d.n * d.k), dsb2(2 * 2 * 4), dd2(d.m * d.n * 2);
  const Operand b2 = make_operand(d.n, d.k, d.b_tile, 0, 3);
  db2.upload(b2.q), dsb2.upload(b2.s);
  REQUIRE_OK(gemm.run(d, da.get<uint8_t>(), dsa.get<float>(), db2.get<uint8_t>(), dsb2.get<float>(),
                      dd2.get()));
  REQUIRE(rt->plans().size() == plans + 1);
  GT_CUDA_OK(cudaStreamSynchronize(rt->stream()));
}

}  // namespace
}  // namespace fp8rl
