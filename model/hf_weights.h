// Reads an HF weight back as float32 whatever its storage: BF16/F16/F32, blockwise FP8
// (weight + weight_scale_inv) or compressed-tensors INT4 (weight_packed + weight_scale).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/safetensors.h"

namespace fp8rl {

enum class WeightStorage { kPlain, kFp8Blockwise, kInt4Packed };

struct WeightEntry {
  std::string name;  // the logical HF name, "<module>.weight" for quantized linears
  WeightStorage storage = WeightStorage::kPlain;
  Shape shape;  // logical shape
};

// The logical weights of a checkpoint: quantized linears appear once under "<module>.weight".
// Sorted by name.
std::vector<WeightEntry> list_logical_weights(const CheckpointReader& ckpt);

// `name` dequantized to float32 (FP8: q * scale_inv per 128x128 block; INT4: (nibble-8) * scale).
// NotFound when absent; InvalidArgument when the scale tensors do not match the payload's shape.
absl::StatusOr<Tensor> load_weight_f32(const CheckpointReader& ckpt, const std::string& name);

}  // namespace fp8rl
