// Stored zip archives (core/zip.h). Layout per PKWARE's APPNOTE: local header + data per record,
// then the central directory and the end-of-central-directory record.
#include "core/zip.h"

#include <zlib.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace fp8rl {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr size_t kLocalHeaderSize = 30, kCentralHeaderSize = 46, kEndSize = 22;
constexpr uint64_t kAlign = 64;
constexpr uint16_t kVersion = 20;         // 2.0: the oldest that knows folders; no ZIP64
constexpr uint16_t kDosDate = 0x21;       // 1980-01-01, time 00:00: archives are reproducible
constexpr uint16_t kPadExtraId = 0x4246;  // "FB", PyTorch's alignment padding field
constexpr uint64_t kZip32Max = 0xffffffffull;

void put16(std::string* s, uint16_t v) {
  s->push_back(char(v & 0xff));
  s->push_back(char(v >> 8));
}
void put32(std::string* s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s->push_back(char((v >> (8 * i)) & 0xff));
}
uint16_t get16(const char* p) { return uint16_t(uint8_t(p[0]) | uint8_t(p[1]) << 8); }
uint32_t get32(const char* p) { return uint32_t(get16(p)) | uint32_t(get16(p + 2)) << 16; }

}  // namespace

uint32_t crc32(std::string_view data, uint32_t crc) {
  // zlib takes 32-bit lengths.
  constexpr size_t kStep = size_t(1) << 30;
  uLong c = crc;
  for (size_t i = 0; i < data.size(); i += kStep) {
    const size_t n = std::min(kStep, data.size() - i);
    c = ::crc32(c, reinterpret_cast<const Bytef*>(data.data() + i), uInt(n));
  }
  return uint32_t(c);
}

absl::Status ZipWriter::emit(std::string_view bytes) {
  if (!error_.ok()) return error_;
  error_ = sink_(bytes);
  if (error_.ok()) offset_ += bytes.size();
  return error_;
}

absl::Status ZipWriter::add(std::string_view name, std::string_view data) {
  FP8RL_RETURN_IF_ERROR(error_);
  if (finished_) return absl::FailedPreconditionError("zip: add after finish");
  FP8RL_REQUIRE(!name.empty() && name.size() < 0xffff, "zip: record name of ", name.size(),
                " bytes");
  for (const Entry& e : entries_) {
    FP8RL_REQUIRE(e.name != name, "zip: duplicate record ", std::string(name));
  }
  // The data starts after the header, the name and a padding extra field of at least 4 bytes.
  const uint64_t unpadded = offset_ + kLocalHeaderSize + name.size();
  uint64_t pad = (kAlign - unpadded % kAlign) % kAlign;
  if (pad != 0 && pad < 4) pad += kAlign;
  if (data.size() > kZip32Max || offset_ > kZip32Max || unpadded + pad + data.size() > kZip32Max ||
      entries_.size() >= 0xffff) {
    return absl::OutOfRangeError(absl::StrCat("zip: record ", std::string(name), " of ",
                                              data.size(), " bytes at offset ", offset_,
                                              " would need ZIP64, which is not written"));
  }
  Entry e{std::string(name), crc32(data), uint32_t(data.size()), uint32_t(offset_)};
  std::string h;
  h.reserve(kLocalHeaderSize + name.size() + pad);
  put32(&h, kLocalSig);
  put16(&h, kVersion);
  put16(&h, 0);  // flags
  put16(&h, 0);  // stored
  put16(&h, 0);  // time
  put16(&h, kDosDate);
  put32(&h, e.crc);
  put32(&h, e.size);  // compressed
  put32(&h, e.size);  // uncompressed
  put16(&h, uint16_t(name.size()));
  put16(&h, uint16_t(pad));
  h.append(name);
  if (pad != 0) {
    put16(&h, kPadExtraId);
    put16(&h, uint16_t(pad - 4));
    h.append(size_t(pad - 4), 'Z');
  }
  FP8RL_RETURN_IF_ERROR(emit(h));
  FP8RL_RETURN_IF_ERROR(emit(data));
  entries_.push_back(std::move(e));
  return absl::OkStatus();
}

absl::Status ZipWriter::finish() {
  FP8RL_RETURN_IF_ERROR(error_);
  if (finished_) return absl::FailedPreconditionError("zip: finish called twice");
  const uint64_t cd_offset = offset_;
  std::string cd;
  for (const Entry& e : entries_) {
    put32(&cd, kCentralSig);
    put16(&cd, kVersion);  // made by (MS-DOS attributes)
    put16(&cd, kVersion);  // needed
    put16(&cd, 0);
    put16(&cd, 0);
    put16(&cd, 0);
    put16(&cd, kDosDate);
    put32(&cd, e.crc);
    put32(&cd, e.size);
    put32(&cd, e.size);
    put16(&cd, uint16_t(e.name.size()));
    put16(&cd, 0);  // extra
    put16(&cd, 0);  // comment
    put16(&cd, 0);  // disk
    put16(&cd, 0);  // internal attributes
    put32(&cd, 0);  // external attributes
    put32(&cd, e.header_offset);
    cd.append(e.name);
  }
  if (cd_offset + cd.size() > kZip32Max) {
    return absl::OutOfRangeError(
        absl::StrCat("zip: central directory at offset ", cd_offset, " would need ZIP64"));
  }
  const uint32_t cd_size = uint32_t(cd.size());
  put32(&cd, kEndSig);
  put16(&cd, 0);  // this disk
  put16(&cd, 0);  // the central directory's disk
  put16(&cd, uint16_t(entries_.size()));
  put16(&cd, uint16_t(entries_.size()));
  put32(&cd, cd_size);
  put32(&cd, uint32_t(cd_offset));
  put16(&cd, 0);  // comment
  FP8RL_RETURN_IF_ERROR(emit(cd));
  finished_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::string> make_stored_zip(
    const std::vector<std::pair<std::string, std::string_view>>& records) {
  std::string out;
  ZipWriter w([&out](std::string_view b) {
    out.append(b);
    return absl::OkStatus();
  });
  for (const auto& [name, data] : records) FP8RL_RETURN_IF_ERROR(w.add(name, data));
  FP8RL_RETURN_IF_ERROR(w.finish());
  return out;
}

absl::StatusOr<std::vector<ZipRecord>> read_stored_zip(std::string_view archive,
                                                       std::string_view what) {
  auto loss = [&](auto&&... parts) {
    return absl::DataLossError(absl::StrCat(std::string(what), ": ", parts...));
  };
  // The end record is the last 22 bytes unless the archive has a comment (at most 64 KiB).
  if (archive.size() < kEndSize) return loss("truncated (", archive.size(), " bytes, no zip end)");
  int64_t end = -1;
  const int64_t lowest = std::max<int64_t>(0, int64_t(archive.size()) - int64_t(kEndSize) - 0xffff);
  for (int64_t p = int64_t(archive.size() - kEndSize); p >= lowest; --p) {
    const char* e = archive.data() + p;
    if (get32(e) == kEndSig && size_t(p) + kEndSize + get16(e + 20) == archive.size()) {
      end = p;
      break;
    }
  }
  if (end < 0) return loss("no zip end record (truncated or not a zip archive)");
  const char* e = archive.data() + end;
  const uint16_t count = get16(e + 10);
  const uint32_t cd_size = get32(e + 12), cd_offset = get32(e + 16);
  if (get16(e + 4) != 0 || get16(e + 6) != 0 || get16(e + 8) != count) {
    return absl::UnimplementedError(absl::StrCat(std::string(what), ": multi-disk zip archive"));
  }
  if (cd_offset == 0xffffffffu || count == 0xffff) {
    return absl::UnimplementedError(absl::StrCat(std::string(what), ": ZIP64 archive"));
  }
  if (uint64_t(cd_offset) + cd_size > uint64_t(end)) {
    return loss("central directory [", cd_offset, ", +", cd_size, ") runs past its end record");
  }

  std::vector<ZipRecord> records;
  std::set<std::string, std::less<>> names;
  size_t p = cd_offset;
  for (uint16_t i = 0; i < count; ++i) {
    if (p + kCentralHeaderSize > uint64_t(cd_offset) + cd_size ||
        get32(archive.data() + p) != kCentralSig) {
      return loss("central directory entry ", i, " is damaged");
    }
    const char* c = archive.data() + p;
    const uint16_t flags = get16(c + 8), method = get16(c + 10);
    const uint32_t crc = get32(c + 16), csize = get32(c + 20), usize = get32(c + 24);
    const uint16_t name_len = get16(c + 28), extra_len = get16(c + 30), comment_len = get16(c + 32);
    const uint32_t header = get32(c + 42);
    if (p + kCentralHeaderSize + name_len > uint64_t(cd_offset) + cd_size) {
      return loss("central directory entry ", i, " is damaged");
    }
    std::string name(c + kCentralHeaderSize, name_len);
    if (csize == 0xffffffffu || usize == 0xffffffffu || header == 0xffffffffu) {
      return absl::UnimplementedError(
          absl::StrCat(std::string(what), ": record ", name, " uses ZIP64"));
    }
    if (method != 0 || (flags & 1) != 0) {
      return absl::UnimplementedError(absl::StrCat(std::string(what), ": record ", name,
                                                   " is compressed or encrypted (method ", method,
                                                   ", flags ", flags, ")"));
    }
    if (csize != usize) return loss("record ", name, ": stored sizes disagree");
    if (!names.insert(name).second) return loss("record ", name, " appears twice");
    // The local header repeats the name; its extra field may differ (padding).
    if (uint64_t(header) + kLocalHeaderSize > uint64_t(cd_offset) ||
        get32(archive.data() + header) != kLocalSig) {
      return loss("record ", name, ": local header at ", header, " is damaged");
    }
    const char* l = archive.data() + header;
    const uint64_t data_begin = uint64_t(header) + kLocalHeaderSize + get16(l + 26) + get16(l + 28);
    if (get16(l + 26) != name_len || std::string_view(l + kLocalHeaderSize, name_len) != name) {
      return loss("record ", name, ": local header names another record");
    }
    if (data_begin + usize > uint64_t(cd_offset)) {
      return loss("record ", name, ": data [", data_begin, ", +", usize,
                  ") runs into the central directory (truncated?)");
    }
    const std::string_view data = archive.substr(size_t(data_begin), usize);
    const uint32_t actual = crc32(data);
    if (actual != crc) {
      return loss("record ", name, ": CRC32 mismatch (stored ", crc, ", computed ", actual,
                  "): the data is corrupt");
    }
    records.push_back({std::move(name), data});
    p += kCentralHeaderSize + name_len + extra_len + comment_len;
  }
  return records;
}

}  // namespace fp8rl
