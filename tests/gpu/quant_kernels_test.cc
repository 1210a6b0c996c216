// Every quant/cuda kernel against its CPU twin, bitwise (FP8 payloads, scales, packed INT4, bf16
// and f32 outputs), on generated shapes with ragged edges, zero tiles, inf/NaN, values above 448
// and subnormals, aligned and misaligned buffers. Output buffers are poisoned on both sides, so an
// element the GPU leaves unwritten (or writes where the CPU does not) is a difference too.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "quant/block_quant.h"
#include "quant/cuda/amax_cuda.h"
#include "quant/cuda/block_quant_cuda.h"
#include "quant/cuda/int4_cuda.h"
#include "quant/cuda/weight_export_cuda.h"
#include "quant/int4.h"
#include "quant/weight_export.h"
#include "tests/catch.h"
#include "tests/gpu/gpu_test_util.h"

namespace fp8rl {
namespace {

using namespace gpu_test;

struct Shape {
  int64_t rows, cols;
};
// Ragged and aligned, tiny and multi-tile; the 16-multiples take the vectorised paths.
const Shape kShapes[] = {{1, 1},     {1, 128},   {3, 200},    {128, 128}, {130, 257},
                         {256, 384}, {17, 1000}, {512, 1024}, {64, 4096}, {200, 256},
                         {0, 128},   {128, 0},   {1024, 256}, {384, 640}};

constexpr uint8_t kPoison = 0xAB;

std::vector<uint8_t> source_bytes(const std::vector<float>& x, DType t) {
  std::vector<uint8_t> b(x.size() * dtype_size(t));
  if (t == DType::kF32) {
    if (!x.empty()) std::memcpy(b.data(), x.data(), b.size());
  } else {
    const std::vector<uint16_t> h = to_bf16(x);
    if (!h.empty()) std::memcpy(b.data(), h.data(), b.size());
  }
  return b;
}

template <typename T>
std::vector<T> poisoned(size_t n) {
  std::vector<T> v(n);
  if (n) std::memset(v.data(), kPoison, n * sizeof(T));
  return v;
}

ScaleParams scale_variant(int i) {
  ScaleParams p;
  switch (i % 4) {
    case 0:
      p.power_2 = true, p.amax_eps = 0.f;
      break;
    case 1:
      p.power_2 = false, p.amax_eps = 0.f;
      break;
    case 2:
      p.power_2 = true, p.amax_eps = 1e-12f;
      break;
    default:
      p.power_2 = false, p.amax_eps = 0.5f;
      break;
  }
  return p;
}

#define REQUIRE_BITWISE(report)      \
  do {                               \
    const std::string r_ = (report); \
    INFO(r_);                        \
    REQUIRE(r_.empty());             \
  } while (0)

TEST_CASE("quantize_1x128_cuda matches quantize_1x128_cpu bitwise", "[quant][1x128]") {
  int variant = 0;
  for (const Shape& sh : kShapes) {
    for (DType src : {DType::kBF16, DType::kF32}) {
      for (int copies = 1; copies <= 3; ++copies) {
        for (size_t misalign : {size_t(0), size_t(4)}) {
          if (misalign && (sh.rows * sh.cols == 0 || variant % 3 != 0)) continue;
          QuantDesc d;
          d.rows = sh.rows, d.cols = sh.cols, d.src_dtype = src;
          d.rowwise = copies & 1, d.columnwise = copies & 2;
          d.scale = scale_variant(variant);
          const int period = variant % 2 ? 23 : 3000;
          ++variant;
          INFO(d.to_string() << " period=" << period << " misalign=" << misalign);
          const int64_t n = d.rows * d.cols;
          const auto x = source_bytes(make_matrix(d.rows, d.cols, 1000 + variant, period), src);
          auto q_cpu = poisoned<uint8_t>(n), qt_cpu = poisoned<uint8_t>(n);
          auto s_cpu = poisoned<float>(d.col_tiles() * d.rows);
          auto st_cpu = poisoned<float>(d.row_tiles() * d.cols);
          REQUIRE_OK(quantize_1x128_cpu(d, x.data(), q_cpu.data(), s_cpu.data(), qt_cpu.data(),
                                        st_cpu.data()));
          DevBuf dx(x.size(), misalign), dq(n), dqt(n), ds(s_cpu.size() * 4),
              dst(st_cpu.size() * 4);
          dx.upload(x);
          REQUIRE_OK(quantize_1x128_cuda(d, dx.get(), dq.get<uint8_t>(), ds.get<float>(),
                                         dqt.get<uint8_t>(), dst.get<float>(), nullptr));
          REQUIRE_BITWISE(bitwise_report("q", q_cpu, dq.download<uint8_t>(), d.cols));
          REQUIRE_BITWISE(bitwise_report("scale_inv", s_cpu, ds.download<float>(), d.rows));
          REQUIRE_BITWISE(bitwise_report("q_t", qt_cpu, dqt.download<uint8_t>(), d.rows));
          REQUIRE_BITWISE(bitwise_report("scale_inv_t", st_cpu, dst.download<float>(), d.cols));
        }
      }
    }
  }
}

TEST_CASE("quantize_128x128_cuda matches quantize_128x128_cpu bitwise", "[quant][128x128]") {
  int variant = 0;
  for (const Shape& sh : kShapes) {
    for (DType src : {DType::kBF16, DType::kF32}) {
      for (int ld_mode = 0; ld_mode < 2; ++ld_mode) {
        QuantDesc d;
        d.rows = sh.rows, d.cols = sh.cols, d.src_dtype = src;
        d.scale = scale_variant(variant);
        d.scale_ld = ld_mode ? round_up(d.col_tiles(), 4) + 1 : 0;  // padding stays unwritten
        const int period = variant % 2 ? 40 : 3000;
        ++variant;
        INFO(d.to_string() << " period=" << period);
        const int64_t n = d.rows * d.cols;
        const auto x = source_bytes(make_matrix(d.rows, d.cols, 2000 + variant, period), src);
        auto q_cpu = poisoned<uint8_t>(n);
        auto s_cpu = poisoned<float>(d.row_tiles() * d.block_scale_ld());
        REQUIRE_OK(quantize_128x128_cpu(d, x.data(), q_cpu.data(), s_cpu.data()));
        // Every 5th case: x aligned to its element size only (the per-element path).
        DevBuf dx(x.size(), variant % 5 == 0 ? dtype_size(src) : 0), dq(n), ds(s_cpu.size() * 4);
        dx.upload(x);
        REQUIRE_OK(quantize_128x128_cuda(d, dx.get(), dq.get<uint8_t>(), ds.get<float>(), nullptr));
        REQUIRE_BITWISE(bitwise_report("q", q_cpu, dq.download<uint8_t>(), d.cols));
        REQUIRE_BITWISE(
            bitwise_report("scale_inv", s_cpu, ds.download<float>(), d.block_scale_ld()));
      }
    }
  }
}

// Random payload bytes (every code, NaN included) and scales (powers of two, arbitrary, 0, inf).
std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint8_t> b(n);
  for (auto& v : b) v = uint8_t(rng.next_u64());
  return b;
}
std::vector<float> random_scales(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> s(n);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t k = rng.next_u64() % 16;
    s[i] = k == 0   ? 0.f
           : k == 1 ? INFINITY
           : k < 8  ? std::ldexp(1.f, int(rng.next_u64() % 60) - 40)
                    : float(rng.uniform() * 1e-2);
  }
  return s;
}

TEST_CASE("dequantize_{1x128,128x128}_cuda match the CPU bitwise", "[quant][dequant]") {
  int variant = 0;
  for (const Shape& sh : kShapes) {
    for (DType out : {DType::kBF16, DType::kF32}) {
      for (bool tile1x128 : {true, false}) {
        QuantDesc d;
        d.rows = sh.rows, d.cols = sh.cols;
        d.scale_ld = tile1x128 ? 0 : d.col_tiles() + (variant % 3);
        ++variant;
        INFO(d.to_string() << " out=" << std::string(dtype_name(out)) << " 1x128=" << tile1x128);
        const int64_t n = d.rows * d.cols;
        const auto q = random_bytes(size_t(n), 3000 + variant);
        const auto s = random_scales(
            size_t(tile1x128 ? d.col_tiles() * d.rows : d.row_tiles() * d.block_scale_ld()),
            4000 + variant);
        auto o_cpu = poisoned<uint8_t>(size_t(n) * dtype_size(out));
        REQUIRE_OK(tile1x128 ? dequantize_1x128_cpu(d, q.data(), s.data(), o_cpu.data(), out)
                             : dequantize_128x128_cpu(d, q.data(), s.data(), o_cpu.data(), out));
        DevBuf dq(q.size(), variant % 4 == 0 ? 1 : 0), ds(s.size() * 4), dout(o_cpu.size());
        dq.upload(q);
        ds.upload(s);
        REQUIRE_OK(tile1x128 ? dequantize_1x128_cuda(d, dq.get<uint8_t>(), ds.get<float>(),
                                                     dout.get(), out, nullptr)
                             : dequantize_128x128_cuda(d, dq.get<uint8_t>(), ds.get<float>(),
                                                       dout.get(), out, nullptr));
        REQUIRE_BITWISE(bitwise_report("out bytes", o_cpu, dout.download<uint8_t>(),
                                       d.cols * int64_t(dtype_size(out))));
      }
    }
  }
}

TEST_CASE("transpose_128x128_cuda matches transpose_128x128_cpu bitwise", "[quant][transpose]") {
  int variant = 0;
  for (const Shape& sh : kShapes) {
    QuantDesc d;
    d.rows = sh.rows, d.cols = sh.cols;
    d.scale_ld = variant % 2 ? round_up(d.col_tiles(), 4) : 0;
    ++variant;
    INFO(d.to_string());
    const int64_t n = d.rows * d.cols;
    const auto q = random_bytes(size_t(n), 5000 + variant);
    const auto s = random_scales(size_t(d.row_tiles() * d.block_scale_ld()), 6000 + variant);
    auto qt_cpu = poisoned<uint8_t>(size_t(n));
    auto st_cpu = poisoned<float>(size_t(d.row_tiles() * d.col_tiles()));
    REQUIRE_OK(transpose_128x128_cpu(d, q.data(), s.data(), qt_cpu.data(), st_cpu.data()));
    DevBuf dq(q.size()), ds(s.size() * 4), dqt(qt_cpu.size()), dst(st_cpu.size() * 4);
    dq.upload(q);
    ds.upload(s);
    REQUIRE_OK(transpose_128x128_cuda(d, dq.get<uint8_t>(), ds.get<float>(), dqt.get<uint8_t>(),
                                      dst.get<float>(), nullptr));
    REQUIRE_BITWISE(bitwise_report("q_t", qt_cpu, dqt.download<uint8_t>(), d.rows));
    REQUIRE_BITWISE(bitwise_report("scale_inv_t", st_cpu, dst.download<float>(), d.row_tiles()));
  }
}

struct Int4Case {
  int64_t rows, cols, group;
};
// Fast paths (group 8..256, cols % 8 == 0) and the generic ones (group 512, 100, 7; cols 1001).
const Int4Case kInt4Cases[] = {{4, 256, 128},  {33, 1000, 128}, {16, 512, 32}, {7, 96, 64},
                               {3, 1024, 256}, {5, 1024, 512},  {9, 300, 100}, {2, 1001, 128},
                               {6, 57, 7},     {1, 8, 8},       {0, 128, 128}, {64, 2048, 16},
                               {128, 128, 128}};

TEST_CASE("int4_fake_quant_cuda matches int4_fake_quant_cpu bitwise", "[int4]") {
  int variant = 0;
  for (const Int4Case& c : kInt4Cases) {
    for (DType src : {DType::kBF16, DType::kF32}) {
      Int4Desc d;
      d.rows = c.rows, d.cols = c.cols, d.group_size = c.group, d.src_dtype = src;
      ++variant;
      INFO(d.to_string());
      const auto x = source_bytes(make_matrix(d.rows, d.cols, 7000 + variant, 23), src);
      auto y_cpu = poisoned<uint8_t>(x.size());
      REQUIRE_OK(int4_fake_quant_cpu(d, x.data(), y_cpu.data()));
      DevBuf dx(x.size()), dy(x.size());
      dx.upload(x);
      REQUIRE_OK(int4_fake_quant_cuda(d, dx.get(), dy.get(), nullptr));
      REQUIRE_BITWISE(bitwise_report("y bytes", y_cpu, dy.download<uint8_t>(),
                                     d.cols * int64_t(dtype_size(src))));
    }
  }
}

TEST_CASE("int4_pack_cuda and int4_unpack_cuda match the CPU bitwise", "[int4]") {
  int variant = 0;
  for (const Int4Case& c : kInt4Cases) {
    for (DType src : {DType::kBF16, DType::kF32}) {
      Int4Desc d;
      d.rows = c.rows, d.cols = c.cols, d.group_size = c.group, d.src_dtype = src;
      ++variant;
      INFO(d.to_string());
      const auto x = source_bytes(make_matrix(d.rows, d.cols, 8000 + variant, 0), src);
      auto p_cpu = poisoned<int32_t>(size_t(d.rows * d.packed_cols()));
      auto s_cpu = poisoned<uint16_t>(size_t(d.rows * d.groups()));
      REQUIRE_OK(int4_pack_cpu(d, x.data(), p_cpu.data(), s_cpu.data()));
      DevBuf dx(x.size()), dp(p_cpu.size() * 4), ds(s_cpu.size() * 2);
      dx.upload(x);
      REQUIRE_OK(int4_pack_cuda(d, dx.get(), dp.get<int32_t>(), ds.get<uint16_t>(), nullptr));
      REQUIRE_BITWISE(bitwise_report("packed", p_cpu, dp.download<int32_t>(), d.packed_cols()));
      REQUIRE_BITWISE(bitwise_report("scale", s_cpu, ds.download<uint16_t>(), d.groups()));
      for (DType out : {DType::kBF16, DType::kF32}) {
        auto o_cpu = poisoned<uint8_t>(size_t(d.rows * d.cols) * dtype_size(out));
        REQUIRE_OK(int4_unpack_cpu(d, p_cpu.data(), s_cpu.data(), o_cpu.data(), out));
        DevBuf dout(o_cpu.size());
        REQUIRE_OK(
            int4_unpack_cuda(d, dp.get<int32_t>(), ds.get<uint16_t>(), dout.get(), out, nullptr));
        REQUIRE_BITWISE(bitwise_report("unpacked bytes", o_cpu, dout.download<uint8_t>(),
                                       d.cols * int64_t(dtype_size(out))));
      }
    }
  }
}

TEST_CASE("int4_pack_cuda rejects a non-finite weight like the CPU", "[int4][errors]") {
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    for (int64_t group : {int64_t(128), int64_t(100)}) {
      Int4Desc d;
      d.rows = 6, d.cols = 512, d.group_size = group, d.src_dtype = DType::kF32;
      auto x = make_matrix(d.rows, d.cols, 9000, 0);
      x[4 * 512 + 300] = bad;
      x[5 * 512 + 7] = bad;  // a later one: the first in row-major order is reported
      std::vector<int32_t> p(size_t(d.rows * d.packed_cols()));
      std::vector<uint16_t> s(size_t(d.rows * d.groups()));
      const absl::Status cpu = int4_pack_cpu(d, x.data(), p.data(), s.data());
      DevBuf dx(x.size() * 4), dp(p.size() * 4), ds(s.size() * 2);
      dx.upload(x);
      const absl::Status gpu =
          int4_pack_cuda(d, dx.get(), dp.get<int32_t>(), ds.get<uint16_t>(), nullptr);
      INFO("cpu: " << cpu.ToString() << "\ngpu: " << gpu.ToString());
      REQUIRE(cpu.code() == absl::StatusCode::kInvalidArgument);
      REQUIRE(gpu.code() == absl::StatusCode::kInvalidArgument);
      REQUIRE(std::string(gpu.message()).find("row 4, column 300") != std::string::npos);
    }
  }
}

TEST_CASE("export_weight_{fp8,int4}_cuda match the CPU composition bitwise", "[export]") {
  int variant = 0;
  const Shape shapes[] = {{256, 384}, {130, 257}, {128, 1024}, {1, 16}, {384, 640}, {64, 200}};
  for (const Shape& sh : shapes) {
    for (ExportSource src : {ExportSource::kF32, ExportSource::kBF16, ExportSource::kFP8Block}) {
      for (ExportTarget tgt : {ExportTarget::kFP8Block, ExportTarget::kInt4Packed}) {
        WeightExportDesc d;
        d.rows = sh.rows, d.cols = sh.cols, d.source = src, d.target = tgt;
        d.scale = scale_variant(variant);
        d.group_size = variant % 3 == 0 ? 32 : 128;
        d.dst_scale_ld = variant % 2 ? round_up(ceil_div(d.cols, 128), 4) : 0;
        d.src_scale_ld = variant % 4 == 1 ? ceil_div(d.cols, 128) + 2 : 0;
        ++variant;
        INFO(d.to_string());
        // FP8 targets see specials (NaN survives the export); INT4 needs finite weights.
        const int period = tgt == ExportTarget::kFP8Block ? 3000 : 0;
        const auto xf = make_matrix(d.rows, d.cols, 10000 + variant, period);
        std::vector<uint8_t> srcb;
        std::vector<float> src_s;
        if (src == ExportSource::kFP8Block) {
          QuantDesc qd;
          qd.rows = d.rows, qd.cols = d.cols, qd.src_dtype = DType::kF32,
          qd.scale_ld = d.src_scale_ld;
          srcb.assign(size_t(d.rows * d.cols), 0);
          src_s.assign(size_t(qd.row_tiles() * qd.block_scale_ld()), 1.f);
          REQUIRE_OK(quantize_128x128_cpu(qd, xf.data(), srcb.data(), src_s.data()));
        } else {
          srcb = source_bytes(xf, src == ExportSource::kF32 ? DType::kF32 : DType::kBF16);
        }
        DevBuf dsrc(srcb.size()), dss(std::max<size_t>(4, src_s.size() * 4));
        dsrc.upload(srcb);
        if (!src_s.empty()) dss.upload(src_s);
        if (tgt == ExportTarget::kFP8Block) {
          const QuantDesc qd = d.fp8_desc();
          auto q_cpu = poisoned<uint8_t>(size_t(d.rows * d.cols));
          auto s_cpu = poisoned<float>(size_t(qd.row_tiles() * qd.block_scale_ld()));
          REQUIRE_OK(
              export_weight_fp8_cpu(d, srcb.data(), src_s.data(), q_cpu.data(), s_cpu.data()));
          DevBuf dq(q_cpu.size()), ds(s_cpu.size() * 4);
          REQUIRE_OK(export_weight_fp8_cuda(d, dsrc.get(), dss.get<float>(), dq.get<uint8_t>(),
                                            ds.get<float>(), nullptr));
          REQUIRE_BITWISE(bitwise_report("q", q_cpu, dq.download<uint8_t>(), d.cols));
          REQUIRE_BITWISE(
              bitwise_report("scale_inv", s_cpu, ds.download<float>(), qd.block_scale_ld()));
        } else {
          const Int4Desc id = d.int4_desc();
          auto p_cpu = poisoned<int32_t>(size_t(d.rows * id.packed_cols()));
          auto s_cpu = poisoned<uint16_t>(size_t(d.rows * id.groups()));
          const absl::Status cpu =
              export_weight_int4_cpu(d, srcb.data(), src_s.data(), p_cpu.data(), s_cpu.data());
          DevBuf dp(p_cpu.size() * 4), ds(s_cpu.size() * 2);
          const absl::Status gpu = export_weight_int4_cuda(
              d, dsrc.get(), dss.get<float>(), dp.get<int32_t>(), ds.get<uint16_t>(), nullptr);
          INFO("cpu: " << cpu.ToString() << "\ngpu: " << gpu.ToString());
          REQUIRE(cpu.code() == gpu.code());
          if (!cpu.ok()) continue;
          REQUIRE_BITWISE(
              bitwise_report("packed", p_cpu, dp.download<int32_t>(), id.packed_cols()));
          REQUIRE_BITWISE(bitwise_report("scale", s_cpu, ds.download<uint16_t>(), id.groups()));
        }
      }
    }
  }
}

// The FP8 -> INT4 export levels e4m3 values with one FMA when the block scale k is a power of two
// in [2^-60, 2^60] (int4_code_e4m3): exhaustively, block row b has scale k_b (every power of two
// in [2^-70, 2^70], then a few that are not) in its first column block, row a of a block holds a
// group of every e4m3 code up to min(a, 126) (the amax, repeating) and a group of their negatives.
// Group sizes 128 (one sign a group) and 256 (both signs, the second half under the same scale or
// another one).
TEST_CASE("export_weight_int4_cuda matches the CPU for every e4m3 group and block scale",
          "[export][int4][exhaustive]") {
  std::vector<float> ks;
  for (int e = -70; e <= 70; ++e) ks.push_back(std::ldexp(1.f, e));
  for (float m : {1.5f, 1.25f, 0.75f, 1.0000001f, 3.f})
    for (int e : {-40, -3, 0, 7, 40}) ks.push_back(std::ldexp(m, e));
  WeightExportDesc d;
  d.rows = int64_t(ks.size()) * 128, d.cols = 256, d.source = ExportSource::kFP8Block;
  d.target = ExportTarget::kInt4Packed;
  std::vector<uint8_t> srcb(size_t(d.rows * d.cols));
  std::vector<float> src_s(size_t(ks.size() * 2));
  for (size_t b = 0; b < ks.size(); ++b) {
    src_s[2 * b] = ks[b];
    // A 256-group spans both column blocks: the same scale in even block rows, another in odd.
    src_s[2 * b + 1] = b % 2 ? ks[(b + 37) % ks.size()] : ks[b];
    for (int a = 0; a < 128; ++a) {
      uint8_t* row = srcb.data() + ((b * 128 + a) * size_t(d.cols));
      for (int c = 0; c < 128; ++c) {
        row[c] = uint8_t(std::min(c, std::min(a, 126)));
        row[128 + c] = uint8_t(row[c] | 0x80);
      }
    }
  }
  DevBuf dsrc(srcb.size()), dss(src_s.size() * 4);
  dsrc.upload(srcb);
  dss.upload(src_s);
  for (int64_t g : {128, 256}) {
    d.group_size = g;
    INFO(d.to_string());
    const Int4Desc id = d.int4_desc();
    auto p_cpu = poisoned<int32_t>(size_t(d.rows * id.packed_cols()));
    auto s_cpu = poisoned<uint16_t>(size_t(d.rows * id.groups()));
    REQUIRE_OK(export_weight_int4_cpu(d, srcb.data(), src_s.data(), p_cpu.data(), s_cpu.data()));
    DevBuf dp(p_cpu.size() * 4), ds(s_cpu.size() * 2);
    REQUIRE_OK(export_weight_int4_cuda(d, dsrc.get(), dss.get<float>(), dp.get<int32_t>(),
                                       ds.get<uint16_t>(), nullptr));
    REQUIRE_BITWISE(bitwise_report("packed", p_cpu, dp.download<int32_t>(), id.packed_cols()));
    REQUIRE_BITWISE(bitwise_report("scale", s_cpu, ds.download<uint16_t>(), id.groups()));
  }
}

// The bf16 fast path computes the group scale as bf16(max(amax * RN(1/7), 1e-5))
// (int4_scale_bf16): every finite non-negative bf16 amax, one group each (the amax and 127 random
// bf16 values of at most its magnitude, either sign), packed and fake-quantized.
TEST_CASE("int4 kernels match the CPU for every finite bf16 group amax", "[int4][exhaustive]") {
  constexpr int64_t kGroups = 0x7f80;  // bf16 bits 0x0000 .. 0x7f7f
  Int4Desc d;
  d.rows = 255, d.cols = kGroups / 255 * 128, d.group_size = 128, d.src_dtype = DType::kBF16;
  std::vector<uint16_t> x(size_t(d.rows * d.cols));
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (int64_t gi = 0; gi < kGroups; ++gi) {
    uint16_t* grp = x.data() + gi * 128;
    const uint16_t amax = uint16_t(gi);
    for (int i = 0; i < 128; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      const uint32_t r = uint32_t(state >> 33);
      grp[i] = uint16_t((r % (uint32_t(amax) + 1)) | ((r >> 20) & 1u ? 0x8000u : 0u));
    }
    grp[(gi * 37) % 128] = uint16_t(amax | (gi & 1 ? 0x8000u : 0u));
  }
  DevBuf dx(x.size() * 2);
  dx.upload(x);
  auto p_cpu = poisoned<int32_t>(size_t(d.rows * d.packed_cols()));
  auto s_cpu = poisoned<uint16_t>(size_t(d.rows * d.groups()));
  REQUIRE_OK(int4_pack_cpu(d, x.data(), p_cpu.data(), s_cpu.data()));
  DevBuf dp(p_cpu.size() * 4), ds(s_cpu.size() * 2);
  REQUIRE_OK(int4_pack_cuda(d, dx.get(), dp.get<int32_t>(), ds.get<uint16_t>(), nullptr));
  REQUIRE_BITWISE(bitwise_report("packed", p_cpu, dp.download<int32_t>(), d.packed_cols()));
  REQUIRE_BITWISE(bitwise_report("scale", s_cpu, ds.download<uint16_t>(), d.groups()));
  auto y_cpu = poisoned<uint16_t>(x.size());
  REQUIRE_OK(int4_fake_quant_cpu(d, x.data(), y_cpu.data()));
  DevBuf dy(x.size() * 2);
  REQUIRE_OK(int4_fake_quant_cuda(d, dx.get(), dy.get(), nullptr));
  REQUIRE_BITWISE(bitwise_report("fake-quant", y_cpu, dy.download<uint16_t>(), d.cols));
}

TEST_CASE("tensor_amax_cuda matches tensor_amax_cpu bitwise", "[amax]") {
  int variant = 0;
  for (int64_t n :
       {int64_t(0), int64_t(1), int64_t(1000), int64_t(1) << 20, (int64_t(1) << 22) + 3}) {
    for (DType t : {DType::kBF16, DType::kF32}) {
      for (int period : {0, 23}) {
        ++variant;
        INFO("n=" << n << " dtype=" << std::string(dtype_name(t)) << " period=" << period);
        const auto x = source_bytes(make_matrix(1, n, 11000 + variant, period), t);
        const float cpu = tensor_amax_cpu(t, x.data(), n);
        DevBuf dx(std::max<size_t>(x.size(), 1), variant % 3 == 0 ? dtype_size(t) : 0), dout(4);
        if (!x.empty()) dx.upload(x);
        REQUIRE_OK(tensor_amax_cuda(t, dx.get(), n, dout.get<float>(), nullptr));
        const float gpu = dout.download<float>()[0];
        INFO("cpu=" << cpu << " gpu=" << gpu);
        REQUIRE(bits_of(cpu) == bits_of(gpu));
      }
    }
  }
}

TEST_CASE("int4_pack_cuda_async and export_weight_int4_cuda_async flag non-finite weights",
          "[int4][export]") {
  Int4Desc d;
  d.rows = 4, d.cols = 256, d.src_dtype = DType::kBF16;
  auto xf = make_matrix(d.rows, d.cols, 12000, 0);
  const auto clean = to_bf16(xf);
  xf[2 * 256 + 17] = NAN;
  const auto dirty = to_bf16(xf);
  DevBuf dx(clean.size() * 2), dp(d.rows * d.packed_cols() * 4), ds(d.rows * d.groups() * 2),
      flag(8);
  WeightExportDesc e;
  e.rows = d.rows, e.cols = d.cols, e.source = ExportSource::kBF16,
  e.target = ExportTarget::kInt4Packed;
  for (const auto* x : {&clean, &dirty}) {
    for (bool via_export : {false, true}) {
      dx.upload(*x);
      GT_CUDA_OK(cudaMemset(flag.get(), 0xff, 8));
      GT_CUDA_OK(cudaDeviceSynchronize());
      const absl::Status st =
          via_export ? export_weight_int4_cuda_async(e, dx.get(), nullptr, dp.get<int32_t>(),
                                                     ds.get<uint16_t>(),
                                                     flag.get<unsigned long long>(), nullptr)
                     : int4_pack_cuda_async(d, dx.get(), dp.get<int32_t>(), ds.get<uint16_t>(),
                                            flag.get<unsigned long long>(), nullptr);
      REQUIRE_OK(st);
      const unsigned long long bad = flag.download<unsigned long long>()[0];
      INFO("export=" << via_export << " dirty=" << (x == &dirty) << " first_bad=" << bad);
      REQUIRE(bad == (x == &dirty ? 2ull * 256 + 17 : ~0ull));
      if (x == &clean) {
        std::vector<int32_t> p(d.rows * d.packed_cols());
        std::vector<uint16_t> sc(d.rows * d.groups());
        REQUIRE_OK(int4_pack_cpu(d, x->data(), p.data(), sc.data()));
        REQUIRE_BITWISE(bitwise_report("packed", p, dp.download<int32_t>(), d.packed_cols()));
      }
    }
  }
}

TEST_CASE("quant launchers reject buffers not aligned to their element size", "[quant][errors]") {
  DevBuf b(1 << 16);
  QuantDesc d;
  d.rows = 16, d.cols = 128, d.src_dtype = DType::kF32;
  const absl::Status st = quantize_1x128_cuda(d, b.get<uint8_t>() + 2, b.get<uint8_t>(),
                                              b.get<float>(), nullptr, nullptr, nullptr);
  INFO(st.ToString());
  REQUIRE(st.code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(std::string(st.message()).find("aligned to its element size") != std::string::npos);
  Int4Desc i4;
  i4.rows = 2, i4.cols = 64, i4.src_dtype = DType::kBF16;
  REQUIRE(int4_fake_quant_cuda(i4, b.get<uint8_t>() + 1, b.get(), nullptr).code() ==
          absl::StatusCode::kInvalidArgument);
  REQUIRE(tensor_amax_cuda(DType::kF32, b.get<uint8_t>() + 2, 8, b.get<float>(), nullptr).code() ==
          absl::StatusCode::kInvalidArgument);
}

TEST_CASE("quant launchers reject bad descriptors", "[quant][errors]") {
  QuantDesc d;
  d.rows = 4, d.cols = 4;
  d.src_dtype = DType::kF16;
  DevBuf b(64);
  REQUIRE(
      quantize_1x128_cuda(d, b.get(), b.get<uint8_t>(), b.get<float>(), nullptr, nullptr, nullptr)
          .code() == absl::StatusCode::kInvalidArgument);
  d.src_dtype = DType::kBF16;
  d.rowwise = false, d.columnwise = true;
  REQUIRE(quantize_1x128_cuda(d, b.get(), nullptr, nullptr, nullptr, nullptr, nullptr).code() ==
          absl::StatusCode::kInvalidArgument);
  d.rowwise = true, d.columnwise = false;
  d.scale_ld = 0;
  REQUIRE(
      dequantize_1x128_cuda(d, b.get<uint8_t>(), b.get<float>(), b.get(), DType::kF8E4M3, nullptr)
          .code() == absl::StatusCode::kInvalidArgument);
  Int4Desc i4;
  i4.rows = 1, i4.cols = 8, i4.group_size = 0;
  REQUIRE(int4_fake_quant_cuda(i4, b.get(), b.get(), nullptr).code() ==
          absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fp8rl
