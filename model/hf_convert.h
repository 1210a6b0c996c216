// `fp8rl convert`: an HF BF16 checkpoint folder -> blockwise FP8 (DeepSeek-V3 layout) or INT4
// compressed-tensors pack-quantized. Streams tensor by tensor: memory is bounded by the largest
// tensor, not the model. The output appears only when complete (staging folder + rename).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/scale.h"

namespace fp8rl {

enum class ConvertFormat { kFp8, kInt4 };

struct ConvertProgress {
  int64_t done = 0;                   // tensors written so far
  int64_t total = 0;                  // tensors in the checkpoint
  const std::string* name = nullptr;  // the tensor just written
  uint64_t bytes_done = 0, bytes_total = 0;
};

struct ConvertOptions {
  std::string model_dir;
  std::string save_dir;  // must not exist
  ConvertFormat format = ConvertFormat::kFp8;
  // FP8: scale rule of the 128x128 weight blocks (default: the FWD_WEIGHT environment knobs).
  ScaleParams fp8_scale = scale_params_from_env(QuantRole::kFwdWeight);
  // INT4: group size along the input dimension, and compressed-tensors ignore rules.
  int64_t group_size = 128;
  std::vector<std::string> int4_ignore;  // empty: default_int4_ignore_rules()
  // Called after each tensor (from the converting thread).
  std::function<void(const ConvertProgress&)> on_progress;
};

struct ConvertReport {
  int64_t tensors_quantized = 0;
  int64_t tensors_copied = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  int64_t files_copied = 0;  // tokenizer and other non-weight files
};

// Errors name the file and tensor: a missing or corrupt input, a config.json missing fields or
// already quantized, a tensor of an unsupported dtype, non-finite weights for INT4, an output
// folder that exists. On error nothing is left at save_dir.
absl::StatusOr<ConvertReport> convert_hf_checkpoint(const ConvertOptions& options);

// Copies every file of folder `from` that is not a weight file, the index or config.json
// (tokenizer, generation_config, README, ...) into `to`; returns how many. Hidden files are
// skipped.
absl::StatusOr<int64_t> copy_non_weight_files(const std::string& from, const std::string& to);

// The config.json `quantization_config` written for each format.
nlohmann::json fp8_quantization_config(const std::vector<std::string>& modules_not_converted);
nlohmann::json int4_quantization_config(int64_t group_size, const std::vector<std::string>& ignore);

}  // namespace fp8rl
