// torch.save archives and torch.distributed.checkpoint metadata (core/dcp.h).
#include "core/dcp.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"

namespace fp8rl {
namespace {

constexpr char kMetaModule[] = "torch.distributed.checkpoint.metadata";
constexpr char kArchive[] = "archive";

// The legacy typed-storage classes torch.save names in data.pkl.
struct StorageClass {
  DType dtype;
  const char* name;
};
constexpr StorageClass kStorageClasses[] = {
    {DType::kF32, "FloatStorage"}, {DType::kBF16, "BFloat16Storage"}, {DType::kF16, "HalfStorage"},
    {DType::kI32, "IntStorage"},   {DType::kI64, "LongStorage"},      {DType::kI8, "CharStorage"},
    {DType::kU8, "ByteStorage"},
};

PyValue int_tuple(const Shape& s) {
  std::vector<PyValue> items;
  for (int64_t d : s) items.push_back(PyValue::integer(d));
  return PyValue::tuple(std::move(items));
}

PyValue torch_size(const Shape& s) {
  return PyValue::call(PyValue::global("torch", "Size"), PyValue::tuple({int_tuple(s)}));
}

PyValue dataclass(const char* module, const char* name,
                  std::vector<std::pair<PyValue, PyValue>> fields) {
  return PyValue::new_object(PyValue::global(module, name), PyValue::tuple({}),
                             PyValue::dict(std::move(fields)));
}

std::pair<PyValue, PyValue> field(const char* name, PyValue v) {
  return {PyValue::str(name), std::move(v)};
}

// The value under a dataclass attribute or dict key, or DataLoss naming it.
absl::StatusOr<const PyValue*> need(const PyValue& obj, std::string_view key, std::string_view what,
                                    std::string_view context) {
  const PyValue* v = obj.kind() == PyValue::Kind::kDict ? obj.find(key) : obj.attr(key);
  if (v == nullptr) {
    return absl::DataLossError(absl::StrCat(std::string(what), ": ", std::string(context),
                                            " has no '", std::string(key), "'"));
  }
  return v;
}

// torch.Size((..)) or a plain tuple/list of non-negative ints.
absl::StatusOr<Shape> to_shape(const PyValue& v, std::string_view what, std::string_view context) {
  const PyValue* seq = &v;
  if (v.kind() == PyValue::Kind::kObject && v.callable().is_global("torch", "Size") &&
      v.args().items().size() == 1) {
    seq = &v.args().items()[0];
  }
  auto bad = [&] {
    return absl::DataLossError(
        absl::StrCat(std::string(what), ": ", std::string(context), " is not a size: ", v.repr()));
  };
  if (seq->kind() != PyValue::Kind::kTuple && seq->kind() != PyValue::Kind::kList) return bad();
  Shape s;
  for (const PyValue& d : seq->items()) {
    if (d.kind() != PyValue::Kind::kInt || d.as_int() < 0) return bad();
    s.push_back(d.as_int());
  }
  return s;
}

absl::StatusOr<int64_t> to_int(const PyValue& v, std::string_view what, std::string_view context) {
  if (v.kind() != PyValue::Kind::kInt || v.as_int() < 0) {
    return absl::DataLossError(absl::StrCat(std::string(what), ": ", std::string(context),
                                            " is not a non-negative int: ", v.repr()));
  }
  return v.as_int();
}

absl::StatusOr<DType> torch_dtype(const PyValue& v, std::string_view what,
                                  std::string_view context) {
  if (v.kind() == PyValue::Kind::kGlobal && v.module() == "torch") {
    auto t = parse_dtype(v.name());
    if (t.ok()) return *t;
  }
  return absl::DataLossError(absl::StrCat(std::string(what), ": ", std::string(context),
                                          " has dtype ", v.repr(), ", which fp8rl does not hold"));
}

// TensorProperties as fp8rl writes it (a constructor call) or as Python does (NEWOBJ + BUILD
// with the 5-tuple __getstate__, or a field dict).
absl::StatusOr<DType> properties_dtype(const PyValue& p, std::string_view what,
                                       std::string_view context) {
  const PyValue* dtype = nullptr;
  if (p.kind() == PyValue::Kind::kObject) {
    const PyValue& state = p.state();
    if (state.kind() == PyValue::Kind::kTuple && !state.items().empty()) {
      dtype = &state.items()[0];
    } else if (state.kind() == PyValue::Kind::kDict) {
      dtype = state.find("dtype");
    } else if (!p.args().items().empty()) {
      dtype = &p.args().items()[0];
    }
  }
  if (dtype == nullptr) {
    return absl::DataLossError(absl::StrCat(std::string(what), ": ", std::string(context),
                                            " has malformed properties: ", p.repr()));
  }
  return torch_dtype(*dtype, what, context);
}

std::string chunk_key(const std::string& fqn, const Shape& offsets) {
  return absl::StrCat(fqn, "@", absl::StrJoin(offsets, ","));
}

}  // namespace

absl::StatusOr<uint64_t> write_torch_tensor(DType dtype, const Shape& shape, std::string_view data,
                                            const ZipWriter::Sink& sink) {
  const StorageClass* cls = nullptr;
  for (const StorageClass& c : kStorageClasses)
    if (c.dtype == dtype) cls = &c;
  FP8RL_REQUIRE(cls != nullptr, "torch.save: dtype ", std::string(dtype_name(dtype)),
                " has no legacy storage class");
  const int64_t numel = shape_numel(shape);
  FP8RL_REQUIRE(data.size() == size_t(numel) * dtype_size(dtype), "torch.save: ", data.size(),
                " bytes for a ", std::string(dtype_name(dtype)), shape_to_string(shape), " tensor");
  Shape strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  const PyValue storage = PyValue::persistent_id(
      PyValue::tuple({PyValue::str("storage"), PyValue::global("torch", cls->name),
                      PyValue::str("0"), PyValue::str("cpu"), PyValue::integer(numel)}));
  const PyValue rebuild = PyValue::call(
      PyValue::global("torch._utils", "_rebuild_tensor_v2"),
      PyValue::tuple(
          {storage, PyValue::integer(0), int_tuple(shape), int_tuple(strides),
           PyValue::boolean(false),
           PyValue::call(PyValue::global("collections", "OrderedDict"), PyValue::tuple({}))}));
  const std::string pkl = pickle_dumps(rebuild);
  ZipWriter zip(sink);
  FP8RL_RETURN_IF_ERROR(zip.add(absl::StrCat(kArchive, "/data.pkl"), pkl));
  FP8RL_RETURN_IF_ERROR(zip.add(absl::StrCat(kArchive, "/byteorder"), "little"));
  FP8RL_RETURN_IF_ERROR(zip.add(absl::StrCat(kArchive, "/data/0"), data));
  FP8RL_RETURN_IF_ERROR(zip.add(absl::StrCat(kArchive, "/version"), "3\n"));
  FP8RL_RETURN_IF_ERROR(zip.finish());
  return zip.size();
}

absl::StatusOr<TorchTensorView> read_torch_tensor(std::string_view archive, std::string_view what) {
  FP8RL_ASSIGN_OR_RETURN(std::vector<ZipRecord> records, read_stored_zip(archive, what));
  auto loss = [&](auto&&... parts) {
    return absl::DataLossError(absl::StrCat(std::string(what), ": ", parts...));
  };
  if (records.empty()) return loss("empty torch.save archive");
  // Record names share the archive's folder (torch names it after the file, or "archive").
  const std::string prefix = records[0].name.substr(0, records[0].name.find('/') + 1);
  std::map<std::string, std::string_view, std::less<>> by_name;
  for (const ZipRecord& r : records) by_name[r.name] = r.data;
  auto record = [&](const std::string& name) -> const std::string_view* {
    auto it = by_name.find(prefix + name);
    return it == by_name.end() ? nullptr : &it->second;
  };
  if (const auto* order = record("byteorder"); order != nullptr && *order != "little") {
    return loss("byte order '", std::string(*order), "' (only little-endian is read)");
  }
  const std::string_view* pkl = record("data.pkl");
  if (pkl == nullptr) return loss("no ", prefix, "data.pkl record");
  FP8RL_ASSIGN_OR_RETURN(PyValue root,
                         pickle_loads(*pkl, absl::StrCat(std::string(what), " data.pkl")));

  const auto bad = [&] { return loss("data.pkl does not hold one plain tensor: ", root.repr()); };
  if (root.kind() != PyValue::Kind::kObject ||
      !root.callable().is_global("torch._utils", "_rebuild_tensor_v2") ||
      root.args().items().size() < 4) {
    return bad();
  }
  const std::vector<PyValue>& args = root.args().items();
  if (args[0].kind() != PyValue::Kind::kPersistentId ||
      args[0].args().kind() != PyValue::Kind::kTuple || args[0].args().items().size() != 5) {
    return bad();
  }
  const std::vector<PyValue>& pid = args[0].args().items();
  if (pid[0].kind() != PyValue::Kind::kStr || pid[0].as_str() != "storage" ||
      pid[1].kind() != PyValue::Kind::kGlobal || pid[2].kind() != PyValue::Kind::kStr) {
    return bad();
  }
  TorchTensorView view;
  const StorageClass* cls = nullptr;
  for (const StorageClass& c : kStorageClasses)
    if (pid[1].is_global("torch", c.name)) cls = &c;
  if (cls == nullptr) return loss("storage class ", pid[1].repr(), " is not one fp8rl reads");
  view.dtype = cls->dtype;
  const size_t elem = dtype_size(view.dtype);
  FP8RL_ASSIGN_OR_RETURN(const int64_t storage_numel, to_int(pid[4], what, "storage size"));
  FP8RL_ASSIGN_OR_RETURN(const int64_t offset, to_int(args[1], what, "storage offset"));
  FP8RL_ASSIGN_OR_RETURN(view.shape, to_shape(args[2], what, "tensor size"));
  FP8RL_ASSIGN_OR_RETURN(const Shape strides, to_shape(args[3], what, "tensor stride"));
  const std::string_view* storage = record("data/" + pid[2].as_str());
  if (storage == nullptr) return loss("no record for storage '", pid[2].as_str(), "'");
  if (storage->size() != uint64_t(storage_numel) * elem) {
    return loss("storage '", pid[2].as_str(), "' has ", storage->size(), " bytes for ",
                storage_numel, " elements of ", std::string(dtype_name(view.dtype)));
  }
  if (strides.size() != view.shape.size()) return bad();
  int64_t expect = 1;
  for (size_t i = view.shape.size(); i-- > 0;) {
    if (view.shape[i] != 1 && strides[i] != expect) {
      return loss("tensor ", shape_to_string(view.shape), " with strides ",
                  shape_to_string(strides), " is not contiguous");
    }
    expect *= view.shape[i];
  }
  const int64_t numel = shape_numel(view.shape);
  if (offset + numel > storage_numel) {
    return loss("tensor of ", numel, " elements at offset ", offset, " overruns its storage of ",
                storage_numel);
  }
  view.data = storage->substr(size_t(offset) * elem, size_t(numel) * elem);
  return view;
}

absl::StatusOr<std::string> torch_save_value(const PyValue& value) {
  const std::string pkl = pickle_dumps(value);
  return make_stored_zip({{absl::StrCat(kArchive, "/data.pkl"), pkl},
                          {absl::StrCat(kArchive, "/byteorder"), "little"},
                          {absl::StrCat(kArchive, "/version"), "3\n"}});
}

absl::StatusOr<PyValue> torch_load_value(std::string_view archive, std::string_view what) {
  FP8RL_ASSIGN_OR_RETURN(std::vector<ZipRecord> records, read_stored_zip(archive, what));
  for (const ZipRecord& r : records) {
    const size_t slash = r.name.find('/');
    if (slash != std::string::npos && r.name.substr(slash + 1) == "data.pkl") {
      return pickle_loads(r.data, absl::StrCat(std::string(what), " data.pkl"));
    }
  }
  return absl::DataLossError(absl::StrCat(std::string(what), ": no data.pkl record"));
}

std::string dcp_metadata_dumps(const std::vector<DcpTensor>& tensors, const std::string& save_id) {
  std::vector<std::pair<PyValue, PyValue>> sdm, storage;
  for (const DcpTensor& t : tensors) {
    const PyValue properties = PyValue::call(
        PyValue::global(kMetaModule, "TensorProperties"),
        PyValue::tuple({PyValue::global("torch", std::string(dtype_name(t.dtype))),
                        PyValue::global("torch", "strided"), PyValue::boolean(false),
                        PyValue::global("torch", "contiguous_format"), PyValue::boolean(false)}));
    std::vector<PyValue> chunks;
    for (size_t i = 0; i < t.chunks.size(); ++i) {
      const DcpChunk& c = t.chunks[i];
      chunks.push_back(dataclass(
          kMetaModule, "ChunkStorageMetadata",
          {field("offsets", torch_size(c.offsets)), field("sizes", torch_size(c.sizes))}));
      storage.emplace_back(
          dataclass(kMetaModule, "MetadataIndex",
                    {field("fqn", PyValue::str(t.fqn)), field("offset", torch_size(c.offsets)),
                     field("index", PyValue::integer(int64_t(i)))}),
          dataclass("torch.distributed.checkpoint.filesystem", "_StorageInfo",
                    {field("relative_path", PyValue::str(c.relative_path)),
                     field("offset", PyValue::integer(int64_t(c.offset))),
                     field("length", PyValue::integer(int64_t(c.length)))}));
    }
    sdm.emplace_back(PyValue::str(t.fqn),
                     dataclass(kMetaModule, "TensorStorageMetadata",
                               {field("properties", properties), field("size", torch_size(t.size)),
                                field("chunks", PyValue::list(std::move(chunks)))}));
  }
  const PyValue storage_meta =
      dataclass(kMetaModule, "StorageMeta",
                {field("checkpoint_id", PyValue()), field("save_id", PyValue::str(save_id)),
                 field("load_id", PyValue()), field("modules", PyValue::list({}))});
  return pickle_dumps(
      dataclass(kMetaModule, "Metadata",
                {field("state_dict_metadata", PyValue::dict(std::move(sdm))),
                 field("planner_data", PyValue::dict({})),
                 field("storage_data", PyValue::dict(std::move(storage))),
                 field("storage_meta", storage_meta), field("version", PyValue::str("1.0.0"))}));
}

absl::StatusOr<DcpMetadata> dcp_metadata_loads(std::string_view bytes, std::string_view what) {
  FP8RL_ASSIGN_OR_RETURN(const PyValue root, pickle_loads(bytes, what));
  FP8RL_ASSIGN_OR_RETURN(const PyValue* sdm, need(root, "state_dict_metadata", what, "Metadata"));
  FP8RL_ASSIGN_OR_RETURN(const PyValue* storage, need(root, "storage_data", what, "Metadata"));
  if (sdm->kind() != PyValue::Kind::kDict || storage->kind() != PyValue::Kind::kDict) {
    return absl::DataLossError(absl::StrCat(std::string(what), ": Metadata fields are not dicts"));
  }

  // (fqn, chunk offsets) -> where the chunk is stored.
  std::map<std::string, DcpChunk> stored;
  for (const auto& [index, info] : storage->entries()) {
    FP8RL_ASSIGN_OR_RETURN(const PyValue* fqn, need(index, "fqn", what, "MetadataIndex"));
    const PyValue* offset = index.attr("offset");
    if (fqn->kind() != PyValue::Kind::kStr || offset == nullptr || offset->is_none()) continue;
    const std::string context = absl::StrCat("storage entry of ", fqn->as_str());
    DcpChunk c;
    FP8RL_ASSIGN_OR_RETURN(c.offsets, to_shape(*offset, what, context));
    FP8RL_ASSIGN_OR_RETURN(const PyValue* path, need(info, "relative_path", what, context));
    FP8RL_ASSIGN_OR_RETURN(const PyValue* off, need(info, "offset", what, context));
    FP8RL_ASSIGN_OR_RETURN(const PyValue* len, need(info, "length", what, context));
    if (path->kind() != PyValue::Kind::kStr) {
      return absl::DataLossError(absl::StrCat(std::string(what), ": ", context, " has no path"));
    }
    c.relative_path = path->as_str();
    FP8RL_ASSIGN_OR_RETURN(const int64_t o, to_int(*off, what, context));
    FP8RL_ASSIGN_OR_RETURN(const int64_t l, to_int(*len, what, context));
    c.offset = uint64_t(o);
    c.length = uint64_t(l);
    if (const PyValue* td = info.attr("transform_descriptors");
        td != nullptr && !td->is_none() &&
        !((td->kind() == PyValue::Kind::kList || td->kind() == PyValue::Kind::kTuple) &&
          td->items().empty())) {
      return absl::UnimplementedError(absl::StrCat(std::string(what), ": ", context,
                                                   " is stored through transforms ", td->repr()));
    }
    stored[chunk_key(fqn->as_str(), c.offsets)] = std::move(c);
  }

  DcpMetadata out;
  for (const auto& [key, meta] : sdm->entries()) {
    if (key.kind() != PyValue::Kind::kStr || meta.kind() != PyValue::Kind::kObject ||
        meta.callable().kind() != PyValue::Kind::kGlobal) {
      return absl::DataLossError(
          absl::StrCat(std::string(what), ": malformed entry ", key.repr(), ": ", meta.repr()));
    }
    const std::string& fqn = key.as_str();
    if (meta.callable().name() == "BytesStorageMetadata") {
      out.byte_items.push_back(fqn);
      continue;
    }
    if (meta.callable().name() != "TensorStorageMetadata") {
      return absl::DataLossError(
          absl::StrCat(std::string(what), ": entry ", fqn, " is a ", meta.callable().repr()));
    }
    DcpTensor t;
    t.fqn = fqn;
    FP8RL_ASSIGN_OR_RETURN(const PyValue* props, need(meta, "properties", what, fqn));
    FP8RL_ASSIGN_OR_RETURN(t.dtype, properties_dtype(*props, what, fqn));
    FP8RL_ASSIGN_OR_RETURN(const PyValue* size, need(meta, "size", what, fqn));
    FP8RL_ASSIGN_OR_RETURN(t.size, to_shape(*size, what, fqn));
    FP8RL_ASSIGN_OR_RETURN(const PyValue* chunks, need(meta, "chunks", what, fqn));
    if (chunks->kind() != PyValue::Kind::kList) {
      return absl::DataLossError(
          absl::StrCat(std::string(what), ": chunks of ", fqn, " are not a list"));
    }
    for (const PyValue& cm : chunks->items()) {
      FP8RL_ASSIGN_OR_RETURN(const PyValue* offsets, need(cm, "offsets", what, fqn));
      FP8RL_ASSIGN_OR_RETURN(const PyValue* sizes, need(cm, "sizes", what, fqn));
      FP8RL_ASSIGN_OR_RETURN(Shape o, to_shape(*offsets, what, fqn));
      FP8RL_ASSIGN_OR_RETURN(Shape s, to_shape(*sizes, what, fqn));
      auto it = stored.find(chunk_key(fqn, o));
      if (it == stored.end()) {
        return absl::DataLossError(absl::StrCat(std::string(what), ": chunk of ", fqn,
                                                " at offsets ", shape_to_string(o),
                                                " has no storage entry"));
      }
      DcpChunk c = it->second;
      c.sizes = std::move(s);
      t.chunks.push_back(std::move(c));
    }
    out.tensors.push_back(std::move(t));
  }
  return out;
}

}  // namespace fp8rl
