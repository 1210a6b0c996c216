// Safetensors files: memory-mapped reads with full header validation, and streaming writes.
#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "core/fs.h"
#include "core/status.h"

namespace fp8rl {
namespace {

using Json = nlohmann::json;

// The Python package refuses headers above 100 MB; so do we, before parsing anything.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr char kMetadataKey[] = "__metadata__";

absl::Status corrupt(const std::string& path, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", std::string(what)));
}

absl::Status corrupt_tensor(const std::string& path, const std::string& name,
                            std::string_view what) {
  return corrupt(path, absl::StrCat("tensor \"", name, "\": ", std::string(what)));
}

// Bytes of a `dtype` tensor of `shape`; InvalidArgument for a negative dim or an overflow.
absl::StatusOr<uint64_t> checked_nbytes(const Shape& shape, DType dtype) {
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat("negative dim in ", shape_to_string(shape)));
    }
    // Keep numel within int64 (Tensor's element count), checking before each multiplication.
    if (d != 0 && numel > uint64_t(INT64_MAX) / uint64_t(d)) {
      return absl::InvalidArgumentError(
          absl::StrCat("element count of ", shape_to_string(shape), " overflows"));
    }
    numel *= uint64_t(d);
  }
  uint64_t size = dtype_size(dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / size) {
    return absl::InvalidArgumentError(
        absl::StrCat("byte count of ", shape_to_string(shape), " overflows"));
  }
  return numel * size;
}

// Parses JSON, rejecting a duplicate key in any object (nlohmann would keep the last silently).
absl::StatusOr<Json> parse_json_rejecting_duplicates(std::string_view text) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto on_event = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) open_objects.emplace_back();
    if (event == Json::parse_event_t::object_end) open_objects.pop_back();
    if (event == Json::parse_event_t::key && duplicate.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second) duplicate = key;
    }
    return true;
  };
  Json j = Json::parse(text.begin(), text.end(), on_event, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!duplicate.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("duplicate key \"", duplicate, "\""));
  }
  return j;
}

absl::StatusOr<Shape> parse_shape(const Json& j) {
  if (!j.is_array()) return absl::InvalidArgumentError("\"shape\" is not an array");
  Shape shape;
  for (const Json& d : j) {
    if (!d.is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat("shape dim ", d.dump(), " is not an integer"));
    }
    if (d.is_number_unsigned() && d.get<uint64_t>() > uint64_t(INT64_MAX)) {
      return absl::InvalidArgumentError(absl::StrCat("shape dim ", d.dump(), " is too large"));
    }
    int64_t v = d.get<int64_t>();
    if (v < 0) return absl::InvalidArgumentError(absl::StrCat("shape dim ", v, " is negative"));
    shape.push_back(v);
  }
  return shape;
}

absl::StatusOr<TensorInfo> parse_tensor_entry(const std::string& name, const Json& entry) {
  if (!entry.is_object()) return absl::InvalidArgumentError("entry is not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) {
      return absl::InvalidArgumentError(absl::StrCat("missing \"", key, "\""));
    }
  }
  TensorInfo info;
  info.name = name;
  const Json& dtype = entry["dtype"];
  if (!dtype.is_string()) return absl::InvalidArgumentError("\"dtype\" is not a string");
  FP8RL_ASSIGN_OR_RETURN(info.dtype,
                         dtype_from_safetensors_name(dtype.get_ref<const std::string&>()));
  FP8RL_ASSIGN_OR_RETURN(info.shape, parse_shape(entry["shape"]));
  const Json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"data_offsets\" ", offsets.dump(), " is not two non-negative integers [begin, end]"));
  }
  info.begin = offsets[0].get<uint64_t>();
  info.end = offsets[1].get<uint64_t>();
  if (info.end < info.begin) {
    return absl::InvalidArgumentError(
        absl::StrCat("data_offsets end ", info.end, " is before begin ", info.begin));
  }
  FP8RL_ASSIGN_OR_RETURN(uint64_t nbytes, checked_nbytes(info.shape, info.dtype));
  if (info.end - info.begin != nbytes) {
    return absl::InvalidArgumentError(absl::StrCat("data_offsets span ", info.end - info.begin,
                                                   " bytes but ",
                                                   std::string(safetensors_dtype_name(info.dtype)),
                                                   shape_to_string(info.shape), " needs ", nbytes));
  }
  return info;
}

absl::StatusOr<std::map<std::string, std::string>> parse_metadata(const Json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("__metadata__ is not an object");
  std::map<std::string, std::string> metadata;
  for (const auto& [key, value] : j.items()) {
    if (!value.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("__metadata__ \"", key, "\" is not a string: ", value.dump()));
    }
    metadata[key] = value.get<std::string>();
  }
  return metadata;
}

// Checks that `tensors` (sorted by offsets) tile [0, data_size) with no gap and no overlap.
absl::Status check_tiling(const std::string& path, const std::vector<TensorInfo>& tensors,
                          uint64_t data_size) {
  uint64_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors) {
    if (t.end > data_size) {
      return corrupt_tensor(
          path, t.name,
          absl::StrCat("data_offsets [", t.begin, ", ", t.end,
                       "] run past the end of the data section (", data_size, " bytes)"));
    }
    if (t.begin < expected) {
      return corrupt_tensor(path, t.name,
                            absl::StrCat("data_offsets [", t.begin, ", ", t.end,
                                         "] overlap tensor \"", previous->name, "\""));
    }
    if (t.begin > expected) {
      return corrupt_tensor(
          path, t.name,
          absl::StrCat("gap of ", t.begin - expected, " bytes before it in the data section"));
    }
    expected = t.end;
    previous = &t;
  }
  if (expected != data_size) {
    return corrupt(path, absl::StrCat(data_size - expected,
                                      " trailing bytes after the last tensor in the data section"));
  }
  return absl::OkStatus();
}

struct Mapping {
  std::shared_ptr<void> base;  // munmap on release
  uint64_t size = 0;
};

absl::StatusOr<Mapping> map_fd(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("stat ", path));
  if (!S_ISREG(st.st_mode)) return corrupt(path, "not a regular file");
  Mapping m;
  m.size = uint64_t(st.st_size);
  if (m.size < 8) {
    return corrupt(
        path, absl::StrCat("file is ", m.size, " bytes, shorter than the 8-byte header length"));
  }
  void* p = ::mmap(nullptr, m.size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) return absl::ErrnoToStatus(errno, absl::StrCat("mmap ", path));
  size_t size = m.size;
  m.base = std::shared_ptr<void>(p, [size](void* q) { ::munmap(q, size); });
  return m;
}

absl::StatusOr<Mapping> map_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, path);
  absl::StatusOr<Mapping> m = map_fd(fd, path);
  ::close(fd);  // the mapping outlives the descriptor
  return m;
}

uint64_t load_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  FP8RL_ASSIGN_OR_RETURN(Mapping m, map_file(path));
  const auto* base = static_cast<const uint8_t*>(m.base.get());
  uint64_t header_len = load_le64(base);
  if (header_len > m.size - 8) {
    return corrupt(path, absl::StrCat("header length ", header_len,
                                      " runs past the end of the file (", m.size, " bytes)"));
  }
  if (header_len > kMaxHeaderBytes) {
    return corrupt(path, absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                      kMaxHeaderBytes, " bytes"));
  }
  std::string_view text(reinterpret_cast<const char*>(base + 8), header_len);
  absl::StatusOr<Json> header = parse_json_rejecting_duplicates(text);
  if (!header.ok()) {
    return corrupt(path, absl::StrCat("header: ", std::string(header.status().message())));
  }
  if (!header->is_object()) return corrupt(path, "header is not a JSON object");

  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  for (const auto& [key, value] : header->items()) {
    if (key == kMetadataKey) {
      absl::StatusOr<std::map<std::string, std::string>> metadata = parse_metadata(value);
      if (!metadata.ok()) return corrupt(path, std::string(metadata.status().message()));
      f->metadata_ = *std::move(metadata);
      continue;
    }
    absl::StatusOr<TensorInfo> info = parse_tensor_entry(key, value);
    if (!info.ok()) return corrupt_tensor(path, key, std::string(info.status().message()));
    f->tensors_.push_back(*std::move(info));
  }
  std::sort(f->tensors_.begin(), f->tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  FP8RL_RETURN_IF_ERROR(check_tiling(path, f->tensors_, m.size - 8 - header_len));
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_[f->tensors_[i].name] = i;
  f->data_ = base + 8 + header_len;
  f->mapping_ = std::move(m.base);
  return f;
}

SafetensorsFile::~SafetensorsFile() = default;

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<Tensor> SafetensorsFile::tensor(std::string_view name) const {
  const TensorInfo* info = find(name);
  if (!info) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", std::string(name), "\""));
  }
  // The mapping is read-only (PROT_READ); callers that modify a tensor clone() it first.
  void* data = const_cast<uint8_t*>(data_ + info->begin);
  return Tensor::from_blob(data, info->dtype, info->shape, Device::cpu(), mapping_);
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter

struct SafetensorsWriter::Impl {
  std::string path;
  std::FILE* file = nullptr;  // null once finished or abandoned
  std::vector<TensorSpec> specs;
  size_t next = 0;  // index of the next spec to write
  uint64_t data_bytes = 0;
  absl::Status error;  // why the file was abandoned; returned by every later call

  absl::Status write_bytes(const void* data, size_t nbytes) {
    if (nbytes && std::fwrite(data, 1, nbytes, file) != nbytes) {
      return fail(absl::ErrnoToStatus(errno, absl::StrCat("write ", path)));
    }
    return absl::OkStatus();
  }

  // Closes and removes the partial file.
  void abandon() {
    if (!file) return;
    std::fclose(file);
    file = nullptr;
    std::remove(path.c_str());
  }

  // Abandons the file; `why` is returned now and by every later call.
  absl::Status fail(absl::Status why) {
    abandon();
    error = why;
    return why;
  }

  absl::Status check_open() const {
    if (!error.ok()) return error;
    if (!file) return absl::FailedPreconditionError(absl::StrCat(path, ": writer is finished"));
    return absl::OkStatus();
  }

  // The spec `name` must match: the next one in declaration order.
  absl::StatusOr<const TensorSpec*> next_spec(std::string_view name) const {
    FP8RL_RETURN_IF_ERROR(check_open());
    if (next == specs.size()) {
      return absl::FailedPreconditionError(absl::StrCat(path, ": all ", specs.size(),
                                                        " declared tensors are written; got \"",
                                                        std::string(name), "\""));
    }
    if (specs[next].name != name) {
      return absl::FailedPreconditionError(absl::StrCat(path, ": tensor \"", specs[next].name,
                                                        "\" is next in declaration order; got \"",
                                                        std::string(name), "\""));
    }
    return &specs[next];
  }
};

namespace {

// The header JSON for `specs` laid out contiguously in order, padded with spaces to a multiple of 8
// bytes as the Python package does (so the data section starts 8-byte aligned).
absl::StatusOr<std::string> build_header(const std::string& path,
                                         const std::vector<TensorSpec>& specs,
                                         const std::map<std::string, std::string>& metadata,
                                         uint64_t* data_bytes) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const TensorSpec& spec : specs) {
    if (spec.name == kMetadataKey || header.contains(spec.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor name \"", spec.name, "\" is reserved or repeated"));
    }
    absl::StatusOr<uint64_t> nbytes = checked_nbytes(spec.shape, spec.dtype);
    if (!nbytes.ok()) {
      return corrupt_tensor(path, spec.name, std::string(nbytes.status().message()));
    }
    if (*nbytes > std::numeric_limits<uint64_t>::max() - offset) {
      return corrupt_tensor(path, spec.name, "data section size overflows");
    }
    header[spec.name] = {{"dtype", std::string(safetensors_dtype_name(spec.dtype))},
                         {"shape", spec.shape},
                         {"data_offsets", {offset, offset + *nbytes}}};
    offset += *nbytes;
  }
  *data_bytes = offset;
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // names or metadata that are not UTF-8
    return absl::InvalidArgumentError(absl::StrCat(path, ": header: ", e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::create(
    const std::string& path, std::vector<TensorSpec> specs,
    std::map<std::string, std::string> metadata) {
  uint64_t data_bytes = 0;
  FP8RL_ASSIGN_OR_RETURN(std::string header, build_header(path, specs, metadata, &data_bytes));
  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter());
  w->impl_ = std::make_unique<Impl>();
  Impl& impl = *w->impl_;
  impl.path = path;
  impl.specs = std::move(specs);
  impl.data_bytes = data_bytes;
  impl.file = std::fopen(path.c_str(), "wbe");
  if (!impl.file) return absl::ErrnoToStatus(errno, absl::StrCat("create ", path));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
  FP8RL_RETURN_IF_ERROR(impl.write_bytes(len, sizeof len));
  FP8RL_RETURN_IF_ERROR(impl.write_bytes(header.data(), header.size()));
  return w;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (impl_) impl_->abandon();
}

absl::Status SafetensorsWriter::write(std::string_view name, const void* data, size_t nbytes) {
  FP8RL_ASSIGN_OR_RETURN(const TensorSpec* spec, impl_->next_spec(name));
  if (nbytes != spec->nbytes()) {
    return absl::FailedPreconditionError(
        absl::StrCat(impl_->path, ": tensor \"", spec->name, "\" is declared as ", spec->nbytes(),
                     " bytes (", std::string(safetensors_dtype_name(spec->dtype)),
                     shape_to_string(spec->shape), "); got ", nbytes));
  }
  if (nbytes && !data) {
    return absl::InvalidArgumentError(
        absl::StrCat(impl_->path, ": tensor \"", spec->name, "\": null data"));
  }
  FP8RL_RETURN_IF_ERROR(impl_->write_bytes(data, nbytes));
  ++impl_->next;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::write(std::string_view name, const Tensor& t) {
  FP8RL_ASSIGN_OR_RETURN(const TensorSpec* spec, impl_->next_spec(name));
  if (!t.defined() || !t.device().is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat(impl_->path, ": tensor \"", spec->name, "\" must be a defined CPU tensor"));
  }
  if (t.dtype() != spec->dtype || t.shape() != spec->shape) {
    return absl::FailedPreconditionError(absl::StrCat(
        impl_->path, ": tensor \"", spec->name, "\" is declared as ",
        std::string(safetensors_dtype_name(spec->dtype)), shape_to_string(spec->shape), "; got ",
        std::string(safetensors_dtype_name(t.dtype())), shape_to_string(t.shape())));
  }
  return write(name, t.raw(), t.nbytes());
}

absl::Status SafetensorsWriter::finish() {
  Impl& impl = *impl_;
  FP8RL_RETURN_IF_ERROR(impl.check_open());
  if (impl.next != impl.specs.size()) {
    return impl.fail(absl::FailedPreconditionError(
        absl::StrCat(impl.path, ": ", impl.specs.size() - impl.next, " of ", impl.specs.size(),
                     " declared tensors not written (next: \"", impl.specs[impl.next].name,
                     "\"); file removed")));
  }
  if (std::fflush(impl.file) != 0) {
    return impl.fail(absl::ErrnoToStatus(errno, absl::StrCat("flush ", impl.path)));
  }
  int rc = std::fclose(impl.file);
  impl.file = nullptr;
  if (rc != 0) {
    impl.error = absl::ErrnoToStatus(errno, absl::StrCat("close ", impl.path));
    std::remove(impl.path.c_str());
    return impl.error;
  }
  return absl::OkStatus();
}

uint64_t SafetensorsWriter::data_bytes() const { return impl_->data_bytes; }

absl::Status save_safetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  for (const auto& [name, t] : tensors) specs.push_back({name, t.dtype(), t.shape()});
  FP8RL_ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::create(path, std::move(specs), metadata));
  for (const auto& [name, t] : tensors) FP8RL_RETURN_IF_ERROR(writer->write(name, t));
  return writer->finish();
}

// ---------------------------------------------------------------------------------------------
// Checkpoint folders

namespace {

std::string join_path(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

// A shard name must stay inside the checkpoint folder.
bool safe_shard_name(const std::string& name) {
  std::filesystem::path p(name);
  if (name.empty() || p.is_absolute()) return false;
  for (const auto& part : p) {
    if (part == "..") return false;
  }
  return true;
}

std::string metadata_value(const Json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

struct Index {
  std::map<std::string, std::string, std::less<>> weight_map;
  std::map<std::string, std::string> metadata;
};

absl::StatusOr<Index> parse_index(const std::string& path) {
  FP8RL_ASSIGN_OR_RETURN(std::string text, read_file(path));
  absl::StatusOr<Json> j = parse_json_rejecting_duplicates(text);
  if (!j.ok()) return corrupt(path, std::string(j.status().message()));
  if (!j->is_object()) return corrupt(path, "not a JSON object");
  Index index;
  if (j->contains("metadata")) {
    const Json& metadata = (*j)["metadata"];
    if (!metadata.is_object()) return corrupt(path, "\"metadata\" is not an object");
    for (const auto& [key, value] : metadata.items()) index.metadata[key] = metadata_value(value);
  }
  if (!j->contains("weight_map") || !(*j)["weight_map"].is_object()) {
    return corrupt(path, "\"weight_map\" is missing or not an object");
  }
  for (const auto& [name, shard] : (*j)["weight_map"].items()) {
    if (!shard.is_string() || !safe_shard_name(shard.get<std::string>())) {
      return corrupt(path, absl::StrCat("weight_map \"", name, "\": ", shard.dump(),
                                        " is not a file name inside the folder"));
    }
    index.weight_map[name] = shard.get<std::string>();
  }
  if (index.weight_map.empty()) return corrupt(path, "weight_map is empty");
  return index;
}

// Every indexed tensor is in its shard, and every shard tensor is indexed to that shard.
absl::Status check_shards_match_index(
    const std::string& index_path,
    const std::map<std::string, std::string, std::less<>>& weight_map,
    const std::map<std::string, std::shared_ptr<SafetensorsFile>>& shards) {
  for (const auto& [name, shard] : weight_map) {
    if (!shards.at(shard)->find(name)) {
      return corrupt(index_path, absl::StrCat("tensor \"", name, "\" is mapped to shard \"", shard,
                                              "\", which does not hold it"));
    }
  }
  for (const auto& [shard, file] : shards) {
    for (const TensorInfo& t : file->tensors()) {
      auto it = weight_map.find(t.name);
      if (it == weight_map.end()) {
        return corrupt(index_path, absl::StrCat("tensor \"", t.name, "\" of shard \"", shard,
                                                "\" is not in weight_map"));
      }
      if (it->second != shard) {
        return corrupt(index_path, absl::StrCat("tensor \"", t.name, "\" is in shards \"", shard,
                                                "\" and \"", it->second, "\""));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CheckpointReader> CheckpointReader::open(const std::string& dir) {
  CheckpointReader r;
  r.dir_ = dir;
  std::string single = join_path(dir, kSafetensorsSingleFile);
  std::string index_path = join_path(dir, kSafetensorsIndexFile);
  std::error_code ec;
  if (std::filesystem::exists(single, ec)) {  // transformers prefers the single file too
    FP8RL_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(single));
    for (const TensorInfo& t : file->tensors()) r.weight_map_[t.name] = kSafetensorsSingleFile;
    r.shard_files_ = {kSafetensorsSingleFile};
    r.shards_[kSafetensorsSingleFile] = std::move(file);
    return r;
  }
  if (!std::filesystem::exists(index_path, ec)) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": no ", kSafetensorsSingleFile, " or ", kSafetensorsIndexFile));
  }
  r.sharded_ = true;
  FP8RL_ASSIGN_OR_RETURN(Index index, parse_index(index_path));
  r.weight_map_ = std::move(index.weight_map);
  r.index_metadata_ = std::move(index.metadata);
  for (const auto& [name, shard] : r.weight_map_) {
    if (r.shards_.count(shard)) continue;
    absl::StatusOr<std::shared_ptr<SafetensorsFile>> file =
        SafetensorsFile::open(join_path(dir, shard));
    if (!file.ok()) {
      return annotate(file.status(), absl::StrCat(index_path, ": shard \"", shard, "\""));
    }
    r.shards_[shard] = *std::move(file);
    r.shard_files_.push_back(shard);
  }
  std::sort(r.shard_files_.begin(), r.shard_files_.end());
  FP8RL_RETURN_IF_ERROR(check_shards_match_index(index_path, r.weight_map_, r.shards_));
  return r;
}

std::vector<std::string> CheckpointReader::shard_tensor_names(const std::string& shard_file) const {
  std::vector<std::string> names;
  auto it = shards_.find(shard_file);
  if (it == shards_.end()) return names;
  for (const TensorInfo& t : it->second->tensors()) names.push_back(t.name);
  return names;
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> names;
  names.reserve(weight_map_.size());
  for (const auto& entry : weight_map_) names.push_back(entry.first);
  return names;
}

const TensorInfo* CheckpointReader::find(std::string_view name) const {
  auto it = weight_map_.find(name);
  return it == weight_map_.end() ? nullptr : shards_.at(it->second)->find(name);
}

absl::StatusOr<std::string> CheckpointReader::shard_of(std::string_view name) const {
  auto it = weight_map_.find(name);
  if (it == weight_map_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": no tensor \"", std::string(name), "\""));
  }
  return it->second;
}

absl::StatusOr<Tensor> CheckpointReader::tensor(std::string_view name) const {
  FP8RL_ASSIGN_OR_RETURN(std::string shard, shard_of(name));
  return shards_.at(shard)->tensor(name);
}

absl::Status write_safetensors_index(const std::string& dir, uint64_t total_size,
                                     const std::map<std::string, std::string>& weight_map) {
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total_size}}},
                                  {"weight_map", weight_map}};
  std::string text;
  try {
    text = index.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {  // names that are not UTF-8
    return absl::InvalidArgumentError(absl::StrCat(dir, ": index: ", e.what()));
  }
  return write_file_atomic(join_path(dir, kSafetensorsIndexFile), text);
}

}  // namespace fp8rl
