// Megatron torch_dist checkpoints of a Trainer (policy weights + AdamW state), readable by
// PyTorch's torch.distributed.checkpoint, Megatron-Core and slime's torch_dist → HF converter,
// and resumed by fp8rl bit for bit.
//
// Format (reference/ckpt.md §6, "primary": the legacy common.pt variant of Megatron ≤ core 0.18,
// which newer Megatron still reads):
//   SAVE/latest_checkpointed_iteration.txt  "N", replaced atomically after iter_N is complete
//   SAVE/iter_NNNNNNN/                      built in a hidden staging folder, then renamed
//     metadata.json   {"sharded_backend": "torch_dist", "sharded_backend_version": 1,
//                      "common_backend": "torch", "common_backend_version": 1}
//     common.pt       torch.save({'args': argparse.Namespace(...), 'checkpoint_version': 3.0,
//                      'iteration': N, 'optimizer': {'optimizer': {'param_groups': [...]}},
//                      'opt_param_scheduler': {...}, 'num_floating_point_operations_so_far': 0})
//     .metadata       DCP Metadata (core/dcp.h)
//     __0_0.distcp    one torch.save archive per chunk, back to back
// Tensors, under Megatron-Core's names (trainer/megatron_layout.h): the model weights in BF16
// (each decoder.layers.* key stacked over layers, one chunk per layer), and in float32 the
// optimizer state under Megatron's model-space names optimizer.state.{fp32_param, exp_avg,
// exp_avg_sq}.<key>, chunked like the weight. AdamW's step count is param_groups[i]['step'] (as
// TransformerEngine's FusedAdam keeps it). Iteration = the caller's count of optimizer steps.
//
// Decisions:
// - Resume restores the fp32 masters, moments and step count and sets the weights from the
//   masters (Trainer::sync_params_from_optimizer, as a step does), so training continues exactly
//   as if never interrupted. The BF16 weights, bf16(master), are for other readers; load checks
//   them against the masters.
// - The vocabulary rows are padded with zeros to a multiple of make_vocab_size_divisible_by
//   (Megatron's default 128), so the shapes match a Megatron run with tensor parallel size 1;
//   slime's converter drops the padding with --vocab-size.
// - Chunks are split along rows to stay below max_chunk_bytes, keeping every zip under 4 GiB.
// - Not written: rng_state (the trainer draws no random numbers), TransformerEngine
//   _extra_state, the reference model. Megatron itself loads these checkpoints with
//   --no-load-rng and --dist-ckpt-strictness log_unexpected.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor.h"
#include "trainer/train_step.h"

namespace fp8rl {

// Run settings recorded in common.pt's args next to those the trainer knows itself (model
// dimensions from the policy's ModelConfig; lr, schedule and Adam settings from TrainerOptions).
struct CheckpointArgs {
  int64_t micro_batch_size = 1;   // --micro-batch-size
  int64_t global_batch_size = 1;  // --global-batch-size (the scheduler's samples per step)
  int64_t seq_length = 0;         // --seq-length; 0 records max_position_embeddings
  int64_t seed = 1234;            // --seed
  std::string hf_checkpoint;      // slime's --hf-checkpoint; empty records None
  int64_t make_vocab_size_divisible_by = 128;    // --make-vocab-size-divisible-by (1: no padding)
  uint64_t max_chunk_bytes = uint64_t(1) << 30;  // float32 bytes per chunk at most

  // InvalidArgument naming the field.
  absl::Status validate() const;
};

struct CheckpointInfo {
  std::string path;  // the iteration folder
  int64_t iteration = 0;
  uint64_t bytes = 0;  // bytes written into it
};

// SAVE_DIR/iter_NNNNNNN (Megatron's 'iter_{:07d}').
std::string checkpoint_iteration_dir(const std::string& save_dir, int64_t iteration);

// Writes iteration `iteration` (>= 0) of `trainer` under save_dir, then points
// latest_checkpointed_iteration.txt at it. AlreadyExists when that iteration folder exists;
// I/O errors as absl statuses. A crash or error leaves at most a hidden staging folder (which
// loads ignore) and the previous tracker. Reads the trainer only; not thread-safe with train().
// FailedPrecondition while the trainer's host state is stale (a device optimizer: call
// Trainer::sync_to_host first); megatron_state_dict likewise.
absl::StatusOr<CheckpointInfo> save_checkpoint(const Trainer& trainer, const std::string& save_dir,
                                               int64_t iteration, const CheckpointArgs& args);

// Restores the policy weights and optimizer state from load_dir's iteration `iteration`, or the
// one latest_checkpointed_iteration.txt names when 0 (a tracker saying "release" loads
// load_dir/release). Returns the iteration. Everything is read and checked before anything in the
// trainer changes, so on error the trainer is untouched:
// - NotFound: no tracker (nothing saved yet) or no such iteration folder;
// - InvalidArgument naming the field or tensor: a checkpoint of another model (args, names,
//   shapes, dtypes), or without optimizer state;
// - DataLoss naming the file and tensor: missing or truncated files, CRC32 mismatches, malformed
//   pickles, chunks that do not tile their tensor, BF16 weights that disagree with the masters.
absl::StatusOr<int64_t> load_checkpoint(Trainer* trainer, const std::string& load_dir,
                                        int64_t iteration = 0);

// The tensors save_checkpoint writes, whole (not chunked), by DCP key in file order: BF16 weights,
// then the float32 optimizer state. For tests and tools.
absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> megatron_state_dict(
    const Trainer& trainer, const CheckpointArgs& args);

}  // namespace fp8rl
