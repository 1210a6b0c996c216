// CPU reference of the block-scaled FP8 GEMM (quant/gemm_ref.h).
//
// Evaluation order for every output D[i][j], in float32 with each operation rounded on its own
// (the ISO C++ build mode keeps GCC from contracting to FMA; a product of two e4m3 values is
// exact in float32 in any case):
//   acc = 0
//   for kb = 0 .. ceil(k/128)-1:
//     block_sum = 0
//     for kk over the block, ascending: block_sum = block_sum + A[i][kk] * B[j][kk]
//     acc = acc + (sA(i, kb) * sB(j, kb)) * block_sum
//   D[i][j] = out(acc), or with accumulate out(float(D[i][j]) + acc); out is the identity for
//   float32 and round-to-nearest-even for bfloat16.
// D is row-major [m, n].
#include "quant/gemm_ref.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/float8.h"
#include "core/parallel.h"
#include "core/status.h"
#include "quant/block_quant.h"
#include "quant/cpu/kernel_util.h"

namespace fp8rl {
namespace {

using namespace quant_cpu;

// Output tile kept in L1 while the K blocks stream by; B is decoded once per tile and K block.
constexpr int64_t kTileM = 64;
constexpr int64_t kTileN = 64;
// Micro-kernel: kMicroM rows of A against kMicroN columns of B.
constexpr int64_t kMicroM = 4;
constexpr int64_t kMicroN = 8;
static_assert(kTileM % kMicroM == 0 && kTileN % kMicroN == 0);

const char* tile_name(ScaleTile t) { return t == ScaleTile::k1x128 ? "1x128" : "128x128"; }

// One e4m3 operand [rows, k] with its scales in either layout of quant/block_quant.h.
struct Operand {
  const uint8_t* q;
  const float* scale_inv;
  ScaleTile tile;
  int64_t rows;
  int64_t ld;  // 128x128 only

  float scale(int64_t row, int64_t kb) const {
    return tile == ScaleTile::k1x128 ? scale_inv[kb * rows + row]
                                     : scale_inv[(row / kQuantBlock) * ld + kb];
  }
};

template <typename Out>
void gemm_rows(const GemmDesc& d, const Operand& a, const Operand& b, Out* out, int64_t m0,
               int64_t m1) {
  alignas(64) float bt[kQuantBlock * kTileN];  // B tile, transposed: bt[kk][j]
  alignas(64) float acc[kTileM * kTileN];
  alignas(64) float arows[kMicroM][kQuantBlock];
  alignas(64) float sb[kTileN];
  float sa[kMicroM];
  const int64_t kblocks = ceil_div(d.k, kQuantBlock);
  const float* e4m3 = e4m3_table();
  for (int64_t i0 = m0; i0 < m1; i0 += kTileM) {
    const int64_t mi = std::min(kTileM, m1 - i0);
    for (int64_t j0 = 0; j0 < d.n; j0 += kTileN) {
      const int64_t nj = std::min(kTileN, d.n - j0);
      std::fill(acc, acc + kTileM * kTileN, 0.f);
      for (int64_t kb = 0; kb < kblocks; ++kb) {
        const int64_t k0 = kb * kQuantBlock;
        const int64_t kl = std::min(kQuantBlock, d.k - k0);
        // Rows past m and columns past n are zero and their results dropped, so the inner loops
        // run full width.
        for (int64_t j = 0; j < kTileN; ++j) {
          const uint8_t* bj = j < nj ? b.q + (j0 + j) * d.k + k0 : nullptr;
          for (int64_t kk = 0; kk < kl; ++kk) bt[kk * kTileN + j] = bj ? e4m3[bj[kk]] : 0.f;
          sb[j] = bj ? b.scale(j0 + j, kb) : 0.f;
        }
        for (int64_t i = 0; i < mi; i += kMicroM) {
          for (int64_t r = 0; r < kMicroM; ++r) {
            const uint8_t* ai = i + r < mi ? a.q + (i0 + i + r) * d.k + k0 : nullptr;
            for (int64_t kk = 0; kk < kl; ++kk) arows[r][kk] = ai ? e4m3[ai[kk]] : 0.f;
            sa[r] = ai ? a.scale(i0 + i + r, kb) : 0.f;
          }
          // A kMicroM x kMicroN block of block sums stays in registers across the K loop (the
          // unroll pragmas let GCC keep it there).
          for (int64_t jc = 0; jc < kTileN; jc += kMicroN) {
            float bsum[kMicroM][kMicroN] = {};
            for (int64_t kk = 0; kk < kl; ++kk) {
              const float* bk = bt + kk * kTileN + jc;
#pragma GCC unroll 4
              for (int64_t r = 0; r < kMicroM; ++r) {
#pragma GCC unroll 8
                for (int64_t j = 0; j < kMicroN; ++j)
                  bsum[r][j] = bsum[r][j] + arows[r][kk] * bk[j];
              }
            }
            for (int64_t r = 0; r < kMicroM; ++r) {
              float* acc_r = acc + (i + r) * kTileN + jc;
              for (int64_t j = 0; j < kMicroN; ++j) {
                acc_r[j] = acc_r[j] + (sa[r] * sb[jc + j]) * bsum[r][j];
              }
            }
          }
        }
      }
      for (int64_t i = 0; i < mi; ++i) {
        Out* o = out + (i0 + i) * d.n + j0;
        for (int64_t j = 0; j < nj; ++j) {
          const float v = d.accumulate ? load_f32(o[j]) + acc[i * kTileN + j] : acc[i * kTileN + j];
          store_as(v, o + j);
        }
      }
    }
  }
}

}  // namespace

absl::Status GemmDesc::validate() const {
  FP8RL_REQUIRE(m >= 0 && n >= 0 && k >= 0, "GemmDesc dims m=", m, " n=", n, " k=", k,
                " must be non-negative");
  FP8RL_REQUIRE(a_tile == ScaleTile::k1x128 || b_tile == ScaleTile::k1x128,
                "GemmDesc: 128x128 x 128x128 scaling is not supported (cuBLASLt and TE reject it; "
                "gradients need 1x128 tiles)");
  FP8RL_REQUIRE(out_dtype == DType::kF32 || out_dtype == DType::kBF16,
                "GemmDesc.out_dtype must be float32 or bfloat16, got ",
                std::string(dtype_name(out_dtype)));
  const int64_t kblocks = ceil_div(k, kQuantBlock);
  FP8RL_REQUIRE(a_scale_ld == 0 || a_scale_ld >= kblocks, "GemmDesc.a_scale_ld=", a_scale_ld,
                " is below ceil(k/128)=", kblocks);
  FP8RL_REQUIRE(b_scale_ld == 0 || b_scale_ld >= kblocks, "GemmDesc.b_scale_ld=", b_scale_ld,
                " is below ceil(k/128)=", kblocks);
  return absl::OkStatus();
}

std::string GemmDesc::to_string() const {
  return absl::StrCat("GemmDesc{m=", m, ", n=", n, ", k=", k, ", a_tile=", tile_name(a_tile),
                      ", b_tile=", tile_name(b_tile), ", a_scale_ld=", a_scale_ld,
                      ", b_scale_ld=", b_scale_ld, ", out=", std::string(dtype_name(out_dtype)),
                      ", accumulate=", accumulate ? 1 : 0, "}");
}

absl::Status gemm_blockscaled_cpu(const GemmDesc& desc, const uint8_t* a, const float* a_scale_inv,
                                  const uint8_t* b, const float* b_scale_inv, void* d) {
  FP8RL_RETURN_IF_ERROR(validate_for(desc, "gemm_blockscaled_cpu"));
  FP8RL_RETURN_IF_ERROR(require_buffer(a, desc.m * desc.k, "a"));
  FP8RL_RETURN_IF_ERROR(require_buffer(a_scale_inv, desc.m * desc.k, "a_scale_inv"));
  FP8RL_RETURN_IF_ERROR(require_buffer(b, desc.n * desc.k, "b"));
  FP8RL_RETURN_IF_ERROR(require_buffer(b_scale_inv, desc.n * desc.k, "b_scale_inv"));
  FP8RL_RETURN_IF_ERROR(require_buffer(d, desc.m * desc.n, "d"));
  const int64_t kblocks = ceil_div(desc.k, kQuantBlock);
  const Operand opa{a, a_scale_inv, desc.a_tile, desc.m,
                    desc.a_scale_ld ? desc.a_scale_ld : kblocks};
  const Operand opb{b, b_scale_inv, desc.b_tile, desc.n,
                    desc.b_scale_ld ? desc.b_scale_ld : kblocks};
  parallel_for(
      desc.m,
      [&](int64_t m0, int64_t m1) {
        if (desc.out_dtype == DType::kF32) {
          gemm_rows(desc, opa, opb, static_cast<float*>(d), m0, m1);
        } else {
          gemm_rows(desc, opa, opb, static_cast<uint16_t*>(d), m0, m1);
        }
      },
      grain_for(desc.n * std::max<int64_t>(1, desc.k)));
  return absl::OkStatus();
}

}  // namespace fp8rl
