// Safetensors files (memory-mapped reads, streaming writes) and HF checkpoint folders made of one
// model.safetensors or of shards listed in model.safetensors.index.json.
//
// Format: 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {str: str},
//    "<name>": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...}
// then the data section. Offsets are relative to the data section; tensors must tile it exactly
// (no gaps, no overlap, nothing past the end), as the Python `safetensors` package checks.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace fp8rl {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

// A read-only, memory-mapped safetensors file. Thread-safe after open().
class SafetensorsFile {
 public:
  // Maps `path` and validates the whole header: length within the file, JSON shape, known dtypes,
  // byte count == numel * dtype size, offsets tiling the data section exactly, no duplicate keys,
  // header at most 100 MB (the Python package's limit). Errors name the file and the tensor:
  // InvalidArgument for a corrupt file, NotFound when it does not exist.
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> open(const std::string& path);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // Tensors in data-section order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr when absent.
  const TensorInfo* find(std::string_view name) const;
  // Zero-copy CPU view of a tensor; the mapping lives as long as any view. The pages are mapped
  // read-only: clone() a tensor before writing to it. NotFound if absent.
  absl::StatusOr<Tensor> tensor(std::string_view name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::shared_ptr<void> mapping_;  // munmap on release
  const uint8_t* data_ = nullptr;  // start of the data section
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  size_t nbytes() const { return size_t(shape_numel(shape)) * dtype_size(dtype); }
};

// Writes one safetensors file tensor by tensor, so memory is bounded by the largest tensor: every
// tensor is declared up front (the header comes first), then written in declaration order.
// Not thread-safe. A writer that is destroyed before finish() removes its partial file.
class SafetensorsWriter {
 public:
  // Validates the specs (unique names, shapes whose byte counts fit) and writes the header to
  // `path`, replacing any file there.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> create(
      const std::string& path, std::vector<TensorSpec> specs,
      std::map<std::string, std::string> metadata = {});
  ~SafetensorsWriter();

  // Writes the next declared tensor; FailedPrecondition if `name` is not next or the size differs.
  absl::Status write(std::string_view name, const void* data, size_t nbytes);
  absl::Status write(std::string_view name, const Tensor& t);  // CPU tensor, dtype/shape checked
  // Flushes and closes; FailedPrecondition if tensors are missing, and then the file is removed.
  // After an I/O error the file is removed and every later call returns that error.
  absl::Status finish();
  // Bytes of tensor data declared (the index's total_size counts these).
  uint64_t data_bytes() const;

 private:
  SafetensorsWriter() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes `tensors` (CPU) to one file in the given order.
absl::Status save_safetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

inline constexpr char kSafetensorsSingleFile[] = "model.safetensors";
inline constexpr char kSafetensorsIndexFile[] = "model.safetensors.index.json";

// An HF checkpoint folder: model.safetensors, or the shards named by model.safetensors.index.json.
// Shards are opened (mapped) on open(). Thread-safe after open().
class CheckpointReader {
 public:
  // Errors name the folder and file: no weights, corrupt index, a shard missing or corrupt, a
  // tensor listed in the index but absent from its shard, a tensor in two shards.
  static absl::StatusOr<CheckpointReader> open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool sharded() const { return sharded_; }
  // Shard file names relative to dir(), sorted (or just "model.safetensors").
  const std::vector<std::string>& shard_files() const { return shard_files_; }
  // Tensor names of one shard, in data order.
  std::vector<std::string> shard_tensor_names(const std::string& shard_file) const;
  // All tensor names, sorted.
  std::vector<std::string> names() const;
  const TensorInfo* find(std::string_view name) const;
  // Name of the shard holding `name`, or NotFound.
  absl::StatusOr<std::string> shard_of(std::string_view name) const;
  absl::StatusOr<Tensor> tensor(std::string_view name) const;
  // Index "metadata" (e.g. total_size), empty object when unsharded.
  const std::map<std::string, std::string>& index_metadata() const { return index_metadata_; }

 private:
  std::string dir_;
  bool sharded_ = false;
  std::vector<std::string> shard_files_;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> shards_;
  std::map<std::string, std::string, std::less<>> weight_map_;  // tensor -> shard file
  std::map<std::string, std::string> index_metadata_;
};

// Writes model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {...}}.
absl::Status write_safetensors_index(const std::string& dir, uint64_t total_size,
                                     const std::map<std::string, std::string>& weight_map);

}  // namespace fp8rl
