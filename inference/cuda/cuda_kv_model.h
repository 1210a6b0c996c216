// The CUDA decoder behind the generation engine: a step forwards the new tokens of every running
// sequence in one batch through the CudaDecoder's weights and kernels (BF16 or FP8-blockwise
// linears, fused norms and RoPE), keeping keys and values in a paged bf16 pool on the device.
// Fresh prompts attend with the flash kernel; tokens with a cache (decode) with the paged kernel.
// Only the last token of each sequence reaches the LM head, and only the rows the engine asks
// for (sampling, extra log-probs) leave the device: a greedy step returns its argmax and
// log-prob, a few bytes per sequence.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor.h"
#include "inference/kv_model.h"
#include "model/cuda/cuda_decoder.h"
#include "model/decoder.h"

namespace fp8rl {

struct CudaKvModelOptions {
  // Positions the pool holds over all sequences (SGLang's --max-total-tokens) ...
  int64_t max_total_tokens = 0;
  // ... plus one page for each of this many sequences: a sequence wastes less than a page, so a
  // scheduler that admits by tokens never finds the pool short.
  int64_t max_sequences = 0;
  int64_t page_size = 64;
  // Replay decode steps (one new token per sequence, no fresh prompt) as CUDA graphs, one per
  // batch size, captured on first use: a step then costs one launch instead of hundreds.
  bool cuda_graphs = true;
};

class CudaKvModel final : public KvModel {
 public:
  // Runs `decoder` (best created without gradients); `host` (may be null) is the CPU decoder
  // whose parameters weights_changed() uploads, and must outlive the model. InvalidArgument for
  // a non-positive max_total_tokens or page_size, or a config the paged kernel cannot run (more
  // than 8 query heads per KV head).
  static absl::StatusOr<std::unique_ptr<CudaKvModel>> create(CudaDecoder decoder,
                                                             const Decoder* host,
                                                             const CudaKvModelOptions& options);
  // Pool bytes one cached position takes: K and V of every layer in bf16.
  static int64_t bytes_per_token(const ModelConfig& config);
  ~CudaKvModel() override;

  const ModelConfig& config() const override { return decoder_.config(); }
  int64_t vocab_chunk() const override { return decoder_.options().vocab_chunk; }
  // ResourceExhausted when the pool has no page left for a step (the scheduler's token budget
  // should make that impossible).
  absl::Status run(std::span<const KvStep> steps, KvOutput* out) override;
  absl::Status fork(const KvCache& from, KvCache* to) override;
  absl::StatusOr<PromptScores> score(std::span<const int32_t> tokens, bool with_logits) override;
  // FailedPrecondition without a host decoder.
  absl::Status weights_changed() override;

  const CudaDecoder& decoder() const { return decoder_; }
  // Turns decode graphs on or off from the next step (options.cuda_graphs at creation).
  void set_cuda_graphs(bool on) { options_.cuda_graphs = on; }
  int64_t free_pages() const;
  int64_t total_pages() const { return pages_; }
  size_t pool_bytes() const { return pool_.nbytes(); }

  struct PagePool;  // free list shared with the caches

 private:
  struct StepLayout;
  struct StepBuffers;
  CudaKvModel(CudaDecoder decoder, const Decoder* host, const CudaKvModelOptions& options);
  // Gives `cache` the pages it needs to hold `len` positions.
  absl::Status reserve(KvCache* cache, int64_t len);
  // Device scratch of a step of `rows` padded tokens, `seqs` sequences and `ints` int32 values
  // of step metadata; grows, never shrinks.
  absl::Status ensure_workspace(int64_t rows, int64_t seqs, int64_t ints);
  // Enqueues a step's forward, from the embedding to the greedy choice, on the runtime's stream
  // (nothing that synchronises: it may be captured into a graph).
  absl::Status enqueue(const StepLayout& layout, const StepBuffers& buffers);
  void clear_graphs();
  // At the first decode step of a batch size (graphs or not, so both run the same algorithms):
  // autotunes the GEMMs of its linear shapes and of the LM head (small-M GEMMs are where the
  // heuristic's first choice is weakest).
  absl::Status tune_decode(const StepLayout& layout, const StepBuffers& buffers);

  CudaDecoder decoder_;
  const Decoder* host_;
  CudaKvModelOptions options_;
  int64_t pages_ = 0;
  Tensor pool_;  // [layers][K, V][pages * page_size, kv_heads * head_dim] bf16
  std::shared_ptr<PagePool> free_;
  Tensor workspace_;
  int64_t ws_rows_ = 0, ws_seqs_ = 0, ws_ints_ = 0;
  std::vector<int32_t> staging_;               // host side of the step metadata
  CudaDecoder::RopeTables rope_;               // for every position the model has
  std::map<int64_t, cudaGraphExec_t> graphs_;  // decode steps by batch size
  std::set<int64_t> tuned_;                    // decode batch sizes already autotuned
};

}  // namespace fp8rl
