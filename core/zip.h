// Stored (uncompressed) zip archives, the container torch.save writes: a writer whose records
// start 64-byte aligned (as PyTorch aligns them, so a reader may mmap them), and a reader that
// checks every record's CRC32.
//
// Only what fp8rl needs: no compression, no encryption, no ZIP64 (records and archives stay below
// 4 GiB; checkpoint writers split larger tensors), no data descriptors written (PyTorch's are
// accepted when reading, the central directory carries the sizes).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fp8rl {

// CRC-32 (ISO-HDLC, zip's), continuing from `crc` (0 to start).
uint32_t crc32(std::string_view data, uint32_t crc = 0);

// Writes one archive record by record to a byte sink. Offsets in the archive are relative to its
// first byte, so the archive may be appended to a larger file (DCP's .distcp items are). Not
// thread-safe.
class ZipWriter {
 public:
  // Receives the archive's bytes in order; an error stops the writer and is returned by every
  // later call.
  using Sink = std::function<absl::Status(std::string_view bytes)>;
  explicit ZipWriter(Sink sink) : sink_(std::move(sink)) {}

  // Appends a stored record whose data starts at a multiple of 64 bytes (padded with an "FB"
  // extra field, as PyTorch does). OutOfRange when the record or the archive would need ZIP64;
  // InvalidArgument for an empty or duplicate name; FailedPrecondition after finish().
  absl::Status add(std::string_view name, std::string_view data);
  // Writes the central directory and the end record.
  absl::Status finish();
  // Bytes handed to the sink so far.
  uint64_t size() const { return offset_; }

 private:
  struct Entry {
    std::string name;
    uint32_t crc = 0;
    uint32_t size = 0;
    uint32_t header_offset = 0;
  };
  absl::Status emit(std::string_view bytes);

  Sink sink_;
  std::vector<Entry> entries_;
  uint64_t offset_ = 0;
  absl::Status error_;
  bool finished_ = false;
};

// A whole archive in memory from (name, data) records, in order.
absl::StatusOr<std::string> make_stored_zip(
    const std::vector<std::pair<std::string, std::string_view>>& records);

// One record of a parsed archive; `data` points into the archive's buffer.
struct ZipRecord {
  std::string name;
  std::string_view data;
};

// Parses an archive held entirely in `archive` (central directory order). Every record must be
// stored (not compressed), unencrypted, inside the buffer, with a local header agreeing with the
// central directory and data whose CRC32 matches. DataLoss naming `what` and the record
// otherwise (a truncated or bit-flipped archive); Unimplemented for compressed or ZIP64 records.
absl::StatusOr<std::vector<ZipRecord>> read_stored_zip(std::string_view archive,
                                                       std::string_view what);

}  // namespace fp8rl
