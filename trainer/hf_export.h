// The policy as an HF checkpoint folder, the form SGLang's /update_weights_from_disk and HF tools
// load: BF16 weights, or blockwise FP8 / INT4 pack-quantized exactly as `fp8rl convert` writes
// them (the BF16 folder is converted by convert_hf_checkpoint, so both paths share every byte).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/safetensors.h"
#include "model/decoder.h"

namespace fp8rl {

enum class HfExportFormat { kBF16, kFP8Blockwise, kInt4Packed };

// "bf16", "fp8", "int4".
std::string_view hf_export_format_name(HfExportFormat format);

struct HfExportOptions {
  // The checkpoint the model came from: config.json's fields (quantization_config dropped) and
  // every non-weight file (tokenizer, generation_config, ...) are taken from here.
  std::string source_dir;
  std::string save_dir;  // must not exist; written through a staging folder renamed at the end
  HfExportFormat format = HfExportFormat::kBF16;
  int64_t int4_group_size = 128;  // kInt4Packed: group along the input dimension
};

struct HfExportReport {
  std::vector<TensorSpec> tensors;  // every tensor written, sorted by name
  uint64_t bytes = 0;               // their data bytes
};

// Writes `model`'s parameters (rounded to BF16) as an HF folder in the requested format. Errors
// name the tensor or file (an INT4 export of non-finite weights, an existing save_dir, a missing
// source folder); on error nothing is left at save_dir. Reads the model only: callers serialize
// it against writers of its parameters.
absl::StatusOr<HfExportReport> export_hf_checkpoint(const Decoder& model,
                                                    const HfExportOptions& options);

}  // namespace fp8rl
