// PyTorch's checkpoint files without PyTorch: torch.save archives (one tensor, or a plain
// picklable value) and the `.metadata` of torch.distributed.checkpoint's FileSystemWriter, whose
// `.distcp` files hold one torch.save archive per chunk, back to back (reference/ckpt.md §2-3).
//
// Written as PyTorch 2.11 reads them (verified there): a tensor archive holds `archive/data.pkl`
// (a protocol-2 `torch._utils._rebuild_tensor_v2` call on a persistent-id storage),
// `archive/byteorder` ("little"), `archive/data/0` (the raw little-endian elements, 64-byte
// aligned) and `archive/version` ("3\n"); no `.format_version`, whose presence would make
// torch.load assume miniz's data descriptors. The metadata is a protocol-2 pickle of
// Metadata(state_dict_metadata, planner_data={}, storage_data, storage_meta, version="1.0.0"),
// with TensorProperties built through its constructor so no enum class is named.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/pickle.h"
#include "core/tensor.h"
#include "core/zip.h"

namespace fp8rl {

// torch.save(t) of a contiguous tensor of `dtype` and `shape` whose elements are `data`, written
// to `sink`; returns the archive's length. InvalidArgument when the byte count does not match or
// the dtype has no legacy torch storage class (float8 and e8m0 do not).
absl::StatusOr<uint64_t> write_torch_tensor(DType dtype, const Shape& shape, std::string_view data,
                                            const ZipWriter::Sink& sink);

// A tensor read from a torch.save archive; `data` points into the archive buffer.
struct TorchTensorView {
  DType dtype = DType::kF32;
  Shape shape;
  std::string_view data;
};

// Reads the one tensor a torch.save archive holds. Checks the zip (CRC32s), that data.pkl
// rebuilds a single tensor through _rebuild_tensor_v2 on a known storage class, that it is
// contiguous and lies inside its storage record, and that the byte order is little-endian.
// DataLoss naming `what` otherwise.
absl::StatusOr<TorchTensorView> read_torch_tensor(std::string_view archive, std::string_view what);

// torch.save(value) of a value that references no storage (common.pt). OutOfRange when it would
// need ZIP64.
absl::StatusOr<std::string> torch_save_value(const PyValue& value);
// The value of such an archive; DataLoss naming `what` for a damaged archive or pickle.
absl::StatusOr<PyValue> torch_load_value(std::string_view archive, std::string_view what);

// Where one chunk of a tensor lives: the box [offsets, offsets + sizes) of the global tensor is
// the torch.save archive at [offset, offset + length) of `relative_path`.
struct DcpChunk {
  Shape offsets, sizes;
  std::string relative_path;
  uint64_t offset = 0, length = 0;
};

struct DcpTensor {
  std::string fqn;
  DType dtype = DType::kBF16;
  Shape size;
  std::vector<DcpChunk> chunks;
};

// The `.metadata` pickle for `tensors` (chunk index = position in `chunks`). `save_id` goes into
// StorageMeta (slime's reader needs a StorageMeta present).
std::string dcp_metadata_dumps(const std::vector<DcpTensor>& tensors, const std::string& save_id);

struct DcpMetadata {
  std::vector<DcpTensor> tensors;
  std::vector<std::string> byte_items;  // fqns of BytesStorageMetadata entries (not read)
};

// Parses a `.metadata` pickle, fp8rl's or one Python wrote (protocol ≤ 5, native or
// constructor-form TensorProperties, any Metadata subclass such as Megatron's). Every chunk must
// have a storage entry. DataLoss naming `what` for a malformed file; Unimplemented for chunks
// stored through stream transforms (DCP's zstd extension).
absl::StatusOr<DcpMetadata> dcp_metadata_loads(std::string_view bytes, std::string_view what);

}  // namespace fp8rl
