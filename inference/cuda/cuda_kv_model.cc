// The CUDA decoder over a paged KV pool (inference/cuda/cuda_kv_model.h).
#include "inference/cuda/cuda_kv_model.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_check.h"
#include "core/status.h"
#include "inference/cuda/paged_kv_cuda.h"
#include "model/cuda/attention.h"
#include "model/cuda/device_arena.h"
#include "model/cuda/elementwise_cuda.h"
#include "model/cuda/embedding_cuda.h"
#include "model/cuda/rmsnorm_cuda.h"
#include "model/cuda/rope_cuda.h"
#include "model/cuda/swiglu_cuda.h"
#include "quant/block_quant.h"

namespace fp8rl {

struct CudaKvModel::PagePool {
  std::vector<int32_t> free;
};

namespace {

// Rows of a step are padded to this (the FP8 GEMMs need m % 4; a few sizes keep plans few).
constexpr int64_t kRowPad = 16;

// One sequence's pages; they go back to the pool with the cache.
struct CudaKvCacheData final : KvCacheData {
  std::shared_ptr<CudaKvModel::PagePool> pool;
  std::vector<int32_t> pages;
  ~CudaKvCacheData() override { pool->free.insert(pool->free.end(), pages.begin(), pages.end()); }
};

CudaKvCacheData& cuda_cache(KvCache* cache, const std::shared_ptr<CudaKvModel::PagePool>& pool) {
  if (!cache->data) {
    auto d = std::make_unique<CudaKvCacheData>();
    d->pool = pool;
    cache->data = std::move(d);
  }
  return static_cast<CudaKvCacheData&>(*cache->data);
}

RmsNormDesc norm_desc(int64_t rows, int64_t dim, double eps) {
  RmsNormDesc d;
  d.rows = rows, d.dim = dim, d.eps = float(eps);
  return d;
}

}  // namespace

// The device buffers of one step, carved from the workspace.
struct CudaKvModel::StepBuffers {
  int32_t* ints = nullptr;  // the step metadata, laid out as the host staging
  float *x = nullptr, *proj = nullptr, *rstd = nullptr, *lse = nullptr;
  uint16_t *xn = nullptr, *q_raw = nullptr, *q = nullptr, *k_raw = nullptr, *k = nullptr;
  uint16_t *v = nullptr, *attn = nullptr, *gate = nullptr, *up = nullptr, *act = nullptr;
  uint8_t* q8 = nullptr;  // FP8 rowwise copy of a linear input
  float* s8 = nullptr;    // ... and its 1x128 scales
  uint16_t* h = nullptr;  // last rows, final-normed
  float* logits = nullptr;
  int32_t* argmax = nullptr;
  float* logprob = nullptr;
  float* greedy = nullptr;  // greedy_rows_cuda's scratch

  static StepBuffers carve(const ModelConfig& c, bool fp8, int64_t rows, int64_t seqs, int64_t ints,
                           ArenaCarver& a) {
    const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
    const int64_t heads = c.num_attention_heads, Q = heads * hd;
    const int64_t KV = c.num_key_value_heads * hd;
    StepBuffers b;
    b.ints = a.take<int32_t>(ints);
    b.x = a.take<float>(rows * H);
    b.proj = a.take<float>(rows * H);
    b.rstd = a.take<float>(rows * std::max<int64_t>(heads, 1));
    b.lse = a.take<float>(rows * heads);
    b.xn = a.take<uint16_t>(rows * H);
    b.q_raw = a.take<uint16_t>(rows * Q);
    b.q = a.take<uint16_t>(rows * Q);
    b.k_raw = a.take<uint16_t>(rows * KV);
    b.k = a.take<uint16_t>(rows * KV);
    b.v = a.take<uint16_t>(rows * KV);
    b.attn = a.take<uint16_t>(rows * Q);
    b.gate = a.take<uint16_t>(rows * I);
    b.up = a.take<uint16_t>(rows * I);
    b.act = a.take<uint16_t>(rows * I);
    if (fp8) {
      const int64_t cols = std::max({H, Q, I});
      b.q8 = a.take<uint8_t>(rows * cols);
      b.s8 = a.take<float>(ceil_div(cols, 128) * rows);
    }
    b.h = a.take<uint16_t>(seqs * H);
    b.logits = a.take<float>(seqs * c.vocab_size);
    b.argmax = a.take<int32_t>(seqs);
    b.logprob = a.take<float>(seqs);
    b.greedy = a.take<float>(greedy_scratch_floats(seqs));
    return b;
  }
};

CudaKvModel::CudaKvModel(CudaDecoder decoder, const Decoder* host,
                         const CudaKvModelOptions& options)
    : decoder_(std::move(decoder)),
      host_(host),
      options_(options),
      free_(std::make_shared<PagePool>()) {}

CudaKvModel::~CudaKvModel() { clear_graphs(); }

void CudaKvModel::clear_graphs() {
  for (auto& [batch, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
}

int64_t CudaKvModel::bytes_per_token(const ModelConfig& c) {
  return c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * 2;
}

absl::StatusOr<std::unique_ptr<CudaKvModel>> CudaKvModel::create(
    CudaDecoder decoder, const Decoder* host, const CudaKvModelOptions& options) {
  FP8RL_REQUIRE(options.max_total_tokens > 0, "CUDA KV model: max_total_tokens ",
                options.max_total_tokens, " must be positive");
  FP8RL_REQUIRE(options.page_size > 0, "CUDA KV model: page_size ", options.page_size,
                " must be positive");
  FP8RL_REQUIRE(options.max_sequences >= 0, "CUDA KV model: max_sequences ", options.max_sequences,
                " is negative");
  const ModelConfig c = decoder.config();
  FP8RL_REQUIRE(c.num_attention_heads / c.num_key_value_heads <= 8,
                "CUDA KV model: ", c.num_attention_heads, " query heads over ",
                c.num_key_value_heads, " KV heads is more than the paged kernel's 8 per KV head");
  if (host != nullptr) {
    FP8RL_REQUIRE(host->config().vocab_size == c.vocab_size &&
                      host->config().hidden_size == c.hidden_size &&
                      host->config().num_hidden_layers == c.num_hidden_layers,
                  "CUDA KV model: the host decoder's config differs from the device decoder's");
  }
  std::unique_ptr<CudaKvModel> m(new CudaKvModel(std::move(decoder), host, options));
  m->pages_ = ceil_div(options.max_total_tokens, options.page_size) + options.max_sequences;
  const int64_t kv = c.num_key_value_heads * c.head_dim;
  FP8RL_ASSIGN_OR_RETURN(
      m->pool_,
      Tensor::empty_on(DType::kBF16, {c.num_hidden_layers, 2, m->pages_ * options.page_size, kv},
                       Device::cuda(m->decoder_.options().device)));
  // The whole table up front: its pointers never change under a captured graph.
  FP8RL_ASSIGN_OR_RETURN(m->rope_, m->decoder_.rope_tables(c.max_position_embeddings));
  m->free_->free.resize(size_t(m->pages_));
  // Popped from the back: hand out pages in ascending order.
  for (int64_t p = 0; p < m->pages_; ++p) m->free_->free[size_t(p)] = int32_t(m->pages_ - 1 - p);
  return m;
}

int64_t CudaKvModel::free_pages() const { return int64_t(free_->free.size()); }

absl::Status CudaKvModel::reserve(KvCache* cache, int64_t len) {
  CudaKvCacheData& d = cuda_cache(cache, free_);
  const int64_t need = ceil_div(len, options_.page_size);
  while (int64_t(d.pages.size()) < need) {
    if (free_->free.empty()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "KV cache full: ", pages_, " pages of ", options_.page_size,
          " tokens are in use (raise --max-total-tokens or lower the running requests)"));
    }
    d.pages.push_back(free_->free.back());
    free_->free.pop_back();
  }
  return absl::OkStatus();
}

absl::Status CudaKvModel::ensure_workspace(int64_t rows, int64_t seqs, int64_t ints) {
  if (workspace_.defined() && rows <= ws_rows_ && seqs <= ws_seqs_ && ints <= ws_ints_)
    return absl::OkStatus();
  // Grow with headroom so that a batch growing one sequence at a time rarely reallocates.
  ws_rows_ = std::max(rows, ws_rows_ + ws_rows_ / 2);
  ws_seqs_ = std::max(seqs, ws_seqs_ + ws_seqs_ / 2);
  ws_ints_ = std::max(ints, ws_ints_ + ws_ints_ / 2);
  ArenaCarver measure;
  StepBuffers::carve(config(), decoder_.linear().fp8(), ws_rows_, ws_seqs_, ws_ints_, measure);
  clear_graphs();  // they hold pointers into the old workspace
  workspace_ = Tensor();
  FP8RL_ASSIGN_OR_RETURN(workspace_, Tensor::empty_on(DType::kU8, {int64_t(measure.used())},
                                                      Device::cuda(decoder_.options().device)));
  // Padding rows are read (never used) by row-wise kernels: keep them finite.
  FP8RL_CUDA_CHECK(
      cudaMemsetAsync(workspace_.raw(), 0, workspace_.nbytes(), decoder_.runtime()->stream()));
  return absl::OkStatus();
}

// The int32 step metadata, in one block laid out alike on the host and the device: tokens
// [rows], positions [rows], pool slots [T], per decode token its page-table offset [T_dec], each
// step's last row [S], the fresh prompts' cu_seqlens [pre_seqs + 1], then the page tables. For a
// decode step every offset depends only on (rows, T, S): a captured graph stays valid.
struct CudaKvModel::StepLayout {
  int64_t rows = 0, T = 0, T_pre = 0, T_dec = 0, S = 0, pre_seqs = 0, max_pre = 0;
  int64_t table_len = 0;

  int64_t tok() const { return 0; }
  int64_t pos() const { return rows; }
  int64_t slot() const { return 2 * rows; }
  int64_t tab_off() const { return 2 * rows + T; }
  int64_t last() const { return 2 * rows + T + T_dec; }
  int64_t cu() const { return last() + S; }
  int64_t table() const { return cu() + pre_seqs + 1; }
  int64_t ints() const { return table() + table_len; }
};

absl::Status CudaKvModel::run(std::span<const KvStep> steps, KvOutput* out) {
  const ModelConfig& c = config();
  const int64_t P = options_.page_size, V = c.vocab_size;
  const cudaStream_t st = decoder_.runtime()->stream();

  // Rows: fresh prompts first (the flash kernel takes them as one packed batch), then every
  // token that attends to a cache (the paged kernel).
  std::vector<size_t> order;
  for (int pass = 0; pass < 2; ++pass)
    for (size_t i = 0; i < steps.size(); ++i)
      if ((steps[i].cache->len == 0) == (pass == 0)) order.push_back(i);
  StepLayout L;
  L.S = int64_t(steps.size());
  for (size_t i : order) {
    const KvStep& s = steps[i];
    FP8RL_REQUIRE(s.cache != nullptr && !s.tokens.empty(), "kv forward: a step without tokens");
    const int64_t n = int64_t(s.tokens.size());
    FP8RL_RETURN_IF_ERROR(reserve(s.cache, s.cache->len + n));
    L.T += n;
    if (s.cache->len == 0) {
      L.T_pre += n, ++L.pre_seqs, L.max_pre = std::max(L.max_pre, n);
    } else {
      L.table_len += int64_t(static_cast<CudaKvCacheData&>(*s.cache->data).pages.size());
    }
  }
  L.T_dec = L.T - L.T_pre;
  L.rows = round_up(L.T, kRowPad);

  staging_.assign(size_t(L.ints()), 0);
  int32_t* ints = staging_.data();
  int64_t row = 0, tab = 0, pre = 0;
  for (size_t i : order) {
    const KvStep& s = steps[i];
    const auto& pages = static_cast<const CudaKvCacheData&>(*s.cache->data).pages;
    const int64_t n = int64_t(s.tokens.size()), len = s.cache->len, tab0 = tab;
    if (len > 0) {
      std::copy(pages.begin(), pages.end(), ints + L.table() + tab);
      tab += int64_t(pages.size());
    }
    for (int64_t j = 0; j < n; ++j, ++row) {
      const int64_t p = len + j;
      ints[L.tok() + row] = s.tokens[size_t(j)];
      ints[L.pos() + row] = int32_t(p);
      ints[L.slot() + row] = int32_t(int64_t(pages[size_t(p / P)]) * P + p % P);
      if (len > 0) ints[L.tab_off() + row - L.T_pre] = int32_t(tab0);
    }
    if (len == 0) {
      ints[L.cu() + pre + 1] = ints[L.cu() + pre] + int32_t(n);
      ++pre;
    }
    ints[L.last() + int64_t(i)] = int32_t(row - 1);
  }

  // The page tables can hold every page: the int block never grows with the contexts.
  FP8RL_RETURN_IF_ERROR(ensure_workspace(L.rows, L.S, L.ints() - L.table_len + pages_));
  ArenaCarver carver(workspace_.raw());
  const StepBuffers b =
      StepBuffers::carve(c, decoder_.linear().fp8(), ws_rows_, ws_seqs_, ws_ints_, carver);
  FP8RL_CUDA_CHECK(cudaMemcpyAsync(b.ints, ints, size_t(L.ints()) * 4, cudaMemcpyHostToDevice, st));
  const bool decode = L.T_pre == 0 && L.T == L.S;
  if (decode && tuned_.insert(L.S).second) FP8RL_RETURN_IF_ERROR(tune_decode(L, b));
  if (options_.cuda_graphs && decode) {
    // Replay (or capture, then replay) the graph of this batch size.
    auto it = graphs_.find(L.S);
    if (it == graphs_.end()) {
      FP8RL_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
      const absl::Status enqueued = enqueue(L, b);
      cudaGraph_t graph = nullptr;
      const cudaError_t ended = cudaStreamEndCapture(st, &graph);
      FP8RL_RETURN_IF_ERROR(enqueued);
      FP8RL_CUDA_CHECK(ended);
      cudaGraphExec_t exec = nullptr;
      const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      FP8RL_CUDA_CHECK(made);
      it = graphs_.emplace(L.S, exec).first;
    }
    FP8RL_CUDA_CHECK(cudaGraphLaunch(it->second, st));
  } else {
    FP8RL_RETURN_IF_ERROR(enqueue(L, b));
  }

  const int64_t S = L.S;
  out->argmax.resize(size_t(S));
  out->argmax_logprob.resize(size_t(S));
  FP8RL_CUDA_CHECK(
      cudaMemcpyAsync(out->argmax.data(), b.argmax, size_t(S) * 4, cudaMemcpyDeviceToHost, st));
  FP8RL_CUDA_CHECK(cudaMemcpyAsync(out->argmax_logprob.data(), b.logprob, size_t(S) * 4,
                                   cudaMemcpyDeviceToHost, st));
  bool any_rows = false;
  for (const KvStep& s : steps) any_rows |= s.need_logits;
  if (any_rows && out->logits.size() < size_t(S * V)) out->logits.resize(size_t(S * V));
  for (int64_t i = 0; i < S; ++i) {
    if (!steps[size_t(i)].need_logits) continue;
    FP8RL_CUDA_CHECK(cudaMemcpyAsync(out->logits.data() + i * V, b.logits + i * V, size_t(V) * 4,
                                     cudaMemcpyDeviceToHost, st));
  }
  FP8RL_CUDA_CHECK(cudaStreamSynchronize(st));
  for (const KvStep& s : steps) s.cache->len += int64_t(s.tokens.size());
  return absl::OkStatus();
}

absl::Status CudaKvModel::tune_decode(const StepLayout& L, const StepBuffers& b) {
  const DeviceLayerParams& p = decoder_.device_params().layers[0];
  LinearCuda& lin = decoder_.linear();
  const cudaStream_t st = decoder_.runtime()->stream();
  // The operand buffers hold whatever the last step left: the timings do not depend on values.
  const auto in = [&](const uint16_t* x) {
    LinearOperand o;
    if (lin.fp8()) {
      o.q = b.q8, o.scale = b.s8;
    } else {
      o.bf16 = x;
    }
    return o;
  };
  for (auto [x, w, y, dtype] :
       {std::tuple{b.xn, &p.q_proj, static_cast<void*>(b.q_raw), DType::kBF16},
        std::tuple{b.xn, &p.k_proj, static_cast<void*>(b.k_raw), DType::kBF16},
        std::tuple{b.attn, &p.o_proj, static_cast<void*>(b.proj), DType::kF32},
        std::tuple{b.xn, &p.gate_proj, static_cast<void*>(b.gate), DType::kBF16},
        std::tuple{b.act, &p.down_proj, static_cast<void*>(b.proj), DType::kF32}}) {
    FP8RL_RETURN_IF_ERROR(lin.autotune_forward(L.rows, in(x), *w, y, dtype, st));
  }
  Bf16GemmDesc g;
  g.m = L.S, g.n = config().vocab_size, g.k = config().hidden_size, g.out_dtype = DType::kF32;
  return decoder_.head_gemm()
      .autotune(g, b.h, decoder_.device_params().head, b.logits, st)
      .status();
}

absl::Status CudaKvModel::enqueue(const StepLayout& L, const StepBuffers& b) {
  const ModelConfig& c = config();
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t heads = c.num_attention_heads, kv_heads = c.num_key_value_heads;
  const int64_t Q = heads * hd, KV = kv_heads * hd, V = c.vocab_size, P = options_.page_size;
  const int64_t rows = L.rows;
  const cudaStream_t st = decoder_.runtime()->stream();
  const int32_t* d_pos = b.ints + L.pos();
  const float scale = float(1.0 / std::sqrt(double(hd)));

  const DeviceParams& params = decoder_.device_params();
  LinearCuda& lin = decoder_.linear();
  const double eps = c.rms_norm_eps;
  // A linear input as the precision multiplies it: bf16 rows or their FP8 1x128 copy.
  const auto operand = [&](const uint16_t* x, int64_t cols) -> absl::StatusOr<LinearOperand> {
    LinearOperand o;
    if (!lin.fp8()) {
      o.bf16 = x;
      return o;
    }
    FP8RL_RETURN_IF_ERROR(lin.quantize(QuantRole::kFwdInput, rows, cols, DType::kBF16, x, b.q8,
                                       b.s8, nullptr, nullptr, st));
    o.q = b.q8, o.scale = b.s8;
    return o;
  };
  const int64_t plane = pages_ * P * KV;  // one layer's K (or V) pool
  uint16_t* pool = pool_.data<uint16_t>();

  FP8RL_RETURN_IF_ERROR(
      embedding_forward_cuda(L.T, rows, H, b.ints + L.tok(), params.embed, b.x, st));
  FP8RL_RETURN_IF_ERROR(rmsnorm_forward_cuda(norm_desc(rows, H, eps), b.x, nullptr, nullptr,
                                             params.layers[0].input_layernorm, b.xn, b.rstd, st));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const DeviceLayerParams& p = params.layers[size_t(l)];
    FP8RL_ASSIGN_OR_RETURN(LinearOperand in, operand(b.xn, H));
    FP8RL_RETURN_IF_ERROR(qkv_forward_cuda(lin, rows, in, p, b.q_raw, b.k_raw, b.v, st));
    FP8RL_RETURN_IF_ERROR(qk_norm_rope_cuda(rows, heads, hd, eps, b.q_raw, p.q_norm, b.rstd,
                                            rope_.cos, rope_.sin, d_pos, b.q, st));
    FP8RL_RETURN_IF_ERROR(qk_norm_rope_cuda(rows, kv_heads, hd, eps, b.k_raw, p.k_norm, b.rstd,
                                            rope_.cos, rope_.sin, d_pos, b.k, st));
    uint16_t* k_pool = pool + 2 * l * plane;
    uint16_t* v_pool = k_pool + plane;
    FP8RL_RETURN_IF_ERROR(kv_append_cuda(L.T, KV, b.ints + L.slot(), b.k, b.v, k_pool, v_pool, st));
    if (L.T_pre > 0) {
      AttentionShape a;
      a.tokens = L.T_pre, a.q_heads = heads, a.kv_heads = kv_heads, a.head_dim = hd;
      a.seqs = L.pre_seqs, a.cu_seqlens = b.ints + L.cu(), a.scale = scale;
      using nvbf = __nv_bfloat16;
      FP8RL_RETURN_IF_ERROR(cuda::attention_forward(
          a, L.max_pre, reinterpret_cast<const nvbf*>(b.q), reinterpret_cast<const nvbf*>(b.k),
          reinterpret_cast<const nvbf*>(b.v), reinterpret_cast<nvbf*>(b.attn), b.lse, st));
    }
    if (L.T_dec > 0) {
      const PagedAttentionShape a{L.T_dec, heads, kv_heads, hd, P, scale};
      FP8RL_RETURN_IF_ERROR(paged_attention_cuda(a, b.q + L.T_pre * Q, k_pool, v_pool,
                                                 b.ints + L.table(), b.ints + L.tab_off(),
                                                 d_pos + L.T_pre, b.attn + L.T_pre * Q, st));
    }
    FP8RL_ASSIGN_OR_RETURN(in, operand(b.attn, Q));
    FP8RL_RETURN_IF_ERROR(lin.forward(rows, in, p.o_proj, b.proj, DType::kF32, false, st));
    FP8RL_RETURN_IF_ERROR(rmsnorm_forward_cuda(norm_desc(rows, H, eps), b.x, b.proj, b.x,
                                               p.post_attention_layernorm, b.xn, b.rstd, st));
    FP8RL_ASSIGN_OR_RETURN(in, operand(b.xn, H));
    FP8RL_RETURN_IF_ERROR(lin.forward(rows, in, p.gate_proj, b.gate, DType::kBF16, false, st));
    FP8RL_RETURN_IF_ERROR(lin.forward(rows, in, p.up_proj, b.up, DType::kBF16, false, st));
    FP8RL_RETURN_IF_ERROR(swiglu_forward_cuda(rows * I, b.gate, b.up, b.act, st));
    FP8RL_ASSIGN_OR_RETURN(in, operand(b.act, I));
    FP8RL_RETURN_IF_ERROR(lin.forward(rows, in, p.down_proj, b.proj, DType::kF32, false, st));
    // x += mlp, then the next layer's input norm (the final norm after the last layer).
    const float* w =
        l + 1 == c.num_hidden_layers ? params.norm : params.layers[size_t(l + 1)].input_layernorm;
    FP8RL_RETURN_IF_ERROR(
        rmsnorm_forward_cuda(norm_desc(rows, H, eps), b.x, b.proj, b.x, w, b.xn, b.rstd, st));
  }

  FP8RL_RETURN_IF_ERROR(gather_rows_cuda(L.S, H, b.ints + L.last(), b.xn, b.h, st));
  Bf16GemmDesc g;
  g.m = L.S, g.n = V, g.k = H, g.out_dtype = DType::kF32;
  FP8RL_RETURN_IF_ERROR(decoder_.head_gemm().run(g, b.h, params.head, b.logits, st));
  return greedy_rows_cuda(L.S, V, b.logits, b.argmax, b.logprob, b.greedy, st);
}

absl::Status CudaKvModel::fork(const KvCache& from, KvCache* to) {
  *to = KvCache();
  if (!from.data) return absl::OkStatus();
  FP8RL_RETURN_IF_ERROR(reserve(to, from.len));
  const auto& src = static_cast<const CudaKvCacheData&>(*from.data).pages;
  const auto& dst = static_cast<const CudaKvCacheData&>(*to->data).pages;
  const ModelConfig& c = config();
  const int64_t P = options_.page_size, KV = c.num_key_value_heads * c.head_dim;
  const size_t page_bytes = size_t(P * KV) * 2, plane_bytes = size_t(pages_) * page_bytes;
  uint8_t* base = static_cast<uint8_t*>(pool_.raw());
  // Page i of every layer's K and V planes: one strided copy.
  for (size_t i = 0; i < dst.size(); ++i) {
    FP8RL_CUDA_CHECK(cudaMemcpy2DAsync(base + size_t(dst[i]) * page_bytes, plane_bytes,
                                       base + size_t(src[i]) * page_bytes, plane_bytes, page_bytes,
                                       size_t(2 * c.num_hidden_layers), cudaMemcpyDeviceToDevice,
                                       decoder_.runtime()->stream()));
  }
  to->len = from.len;
  return absl::OkStatus();
}

absl::StatusOr<PromptScores> CudaKvModel::score(std::span<const int32_t> tokens, bool with_logits) {
  const ScoringBatch in = scoring_batch(tokens);
  FP8RL_ASSIGN_OR_RETURN(const CudaDecoderForward fwd, decoder_.forward(in.batch, in.targets));
  PromptScores scores;
  scores.logprob.assign(fwd.logprob.begin(), fwd.logprob.end() - 1);
  if (with_logits) {
    FP8RL_ASSIGN_OR_RETURN(scores.logits, decoder_.logits(fwd));
  }
  return scores;
}

absl::Status CudaKvModel::weights_changed() {
  if (host_ == nullptr)
    return absl::FailedPreconditionError("CUDA KV model: no host decoder to upload weights from");
  return decoder_.upload(host_->params());
}

}  // namespace fp8rl
