// Safetensors round trips, streaming-writer misuse, sharded checkpoints, and every corrupt input
// we know of, written byte by byte.
#include "core/safetensors.h"

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/fs.h"
#include "tests/catch.h"
#include "tests/unit/core/test_util.h"

using namespace fp8rl;
using fp8rl::testing::check_error;
using fp8rl::testing::file_exists;
using fp8rl::testing::TempDir;
using fp8rl::testing::write_raw;

namespace {

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char(uint8_t(v >> (8 * i)));
  return s;
}

// A safetensors file from header text and data bytes, without padding, so any header can be tried.
std::string st_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::string entry(const std::string& dtype, const std::string& shape, uint64_t begin,
                  uint64_t end) {
  return "{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(begin) + "," + std::to_string(end) + "]}";
}

// A tensor whose byte i is (seed + i) mod 251, so two tensors never look alike.
Tensor patterned(DType dtype, Shape shape, int seed) {
  Tensor t = Tensor::empty(dtype, std::move(shape));
  auto* p = t.data<uint8_t>();
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = uint8_t((size_t(seed) + i) % 251);
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

// Opening `bytes` fails with InvalidArgument naming the file and each of `parts`.
void check_corrupt(const std::string& what, const std::string& bytes,
                   std::initializer_list<std::string> parts) {
  INFO("case: " << what);
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  write_raw(path, bytes);
  auto f = SafetensorsFile::open(path);
  REQUIRE(!f.ok());
  check_error(f.status(), absl::StatusCode::kInvalidArgument, {path});
  check_error(f.status(), absl::StatusCode::kInvalidArgument, parts);
}

}  // namespace

TEST_CASE("safetensors round trip: every dtype, scalar, zero-size, metadata", "[safetensors]") {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> tensors;
  int seed = 0;
  for (DType t : kAllDTypes) {
    tensors.emplace_back(std::string(dtype_name(t)), patterned(t, {2, 3}, seed++));
  }
  tensors.emplace_back("scalar", patterned(DType::kF32, {}, seed++));
  tensors.emplace_back("empty_rows", Tensor::empty(DType::kBF16, {0, 4}));
  tensors.emplace_back("empty_cols", Tensor::empty(DType::kI64, {3, 0}));
  tensors.emplace_back("last", patterned(DType::kF8E4M3, {5}, seed++));
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"step", "7"}};
  std::string path = dir.file("m.safetensors");
  REQUIRE(save_safetensors(path, tensors, metadata).ok());

  auto bytes = read_file(path);
  REQUIRE(bytes.ok());
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint8_t((*bytes)[size_t(i)]);
  CHECK(header_len % 8 == 0);  // padded with spaces like the Python package
  std::string header = bytes->substr(8, header_len);
  CHECK(header[header.find_last_not_of(' ')] == '}');
  CHECK(nlohmann::json::parse(header, nullptr, false).is_object());

  auto f = SafetensorsFile::open(path);
  REQUIRE(f.ok());
  CHECK((*f)->metadata() == metadata);
  REQUIRE((*f)->tensors().size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, expected] = tensors[i];
    INFO("tensor " << name);
    const TensorInfo* info = (*f)->find(name);
    REQUIRE(info);
    CHECK(info->dtype == expected.dtype());
    CHECK(info->shape == expected.shape());
    auto got = (*f)->tensor(name);
    REQUIRE(got.ok());
    CHECK(same_bytes(*got, expected));
  }
  // Zero-size tensors sort before the data-bearing tensor at the same offset; order is by offset.
  for (size_t i = 1; i < (*f)->tensors().size(); ++i) {
    CHECK((*f)->tensors()[i - 1].end <= (*f)->tensors()[i].begin);
  }
  CHECK((*f)->find("absent") == nullptr);
  check_error((*f)->tensor("absent").status(), absl::StatusCode::kNotFound, {path, "absent"});
}

TEST_CASE("safetensors views keep the mapping alive", "[safetensors]") {
  TempDir dir;
  std::string path = dir.file("m.safetensors");
  Tensor w = patterned(DType::kBF16, {4, 8}, 3);
  REQUIRE(save_safetensors(path, {{"w", w}}).ok());
  Tensor view;
  {
    auto f = SafetensorsFile::open(path);
    REQUIRE(f.ok());
    auto t = (*f)->tensor("w");
    REQUIRE(t.ok());
    view = *t;
  }
  CHECK(same_bytes(view, w));  // the file object is gone; ASan would flag an unmapped read
}

TEST_CASE("safetensors file with no tensors", "[safetensors]") {
  TempDir dir;
  std::string path = dir.file("empty.safetensors");
  REQUIRE(save_safetensors(path, {}).ok());
  auto f = SafetensorsFile::open(path);
  REQUIRE(f.ok());
  CHECK((*f)->tensors().empty());
  CHECK((*f)->metadata().empty());
}

TEST_CASE("streaming writer writes in declaration order", "[safetensors]") {
  TempDir dir;
  std::string path = dir.file("s.safetensors");
  Tensor a = patterned(DType::kF32, {3, 2}, 1);
  Tensor b = patterned(DType::kI32, {4}, 2);
  auto w = SafetensorsWriter::create(
      path, {{"a", DType::kF32, {3, 2}}, {"b", DType::kI32, {4}}, {"z", DType::kU8, {0}}});
  REQUIRE(w.ok());
  CHECK((*w)->data_bytes() == 24 + 16);
  REQUIRE((*w)->write("a", a).ok());
  REQUIRE((*w)->write("b", b.raw(), b.nbytes()).ok());
  REQUIRE((*w)->write("z", nullptr, 0).ok());
  REQUIRE((*w)->finish().ok());
  check_error((*w)->finish(), absl::StatusCode::kFailedPrecondition, {path, "finished"});
  w->reset();
  auto f = SafetensorsFile::open(path);
  REQUIRE(f.ok());
  REQUIRE((*f)->tensors().size() == 3);
  CHECK((*f)->tensors()[0].name == "a");
  CHECK((*f)->tensors()[1].begin == 24);
  CHECK(same_bytes(*(*f)->tensor("b"), b));
}

TEST_CASE("streaming writer misuse", "[safetensors]") {
  TempDir dir;
  std::string path = dir.file("s.safetensors");
  std::vector<TensorSpec> specs = {{"a", DType::kF32, {2}}, {"b", DType::kBF16, {3}}};
  Tensor a = patterned(DType::kF32, {2}, 1);

  SECTION("wrong order is refused and the writer stays usable") {
    auto w = SafetensorsWriter::create(path, specs);
    REQUIRE(w.ok());
    check_error((*w)->write("b", patterned(DType::kBF16, {3}, 0)),
                absl::StatusCode::kFailedPrecondition, {path, "\"a\" is next", "\"b\""});
    check_error((*w)->write("nope", a), absl::StatusCode::kFailedPrecondition, {"\"nope\""});
    REQUIRE((*w)->write("a", a).ok());
    REQUIRE((*w)->write("b", patterned(DType::kBF16, {3}, 0)).ok());
    check_error((*w)->write("c", a), absl::StatusCode::kFailedPrecondition,
                {"all 2 declared tensors"});
    REQUIRE((*w)->finish().ok());
    CHECK(file_exists(path));
  }
  SECTION("wrong size, dtype or shape") {
    auto w = SafetensorsWriter::create(path, specs);
    REQUIRE(w.ok());
    check_error((*w)->write("a", a.raw(), 7), absl::StatusCode::kFailedPrecondition,
                {path, "\"a\"", "8 bytes", "got 7"});
    check_error((*w)->write("a", patterned(DType::kI32, {2}, 0)),
                absl::StatusCode::kFailedPrecondition, {"\"a\"", "I32"});
    check_error((*w)->write("a", patterned(DType::kF32, {1, 2}, 0)),
                absl::StatusCode::kFailedPrecondition, {"\"a\"", "[1, 2]"});
    check_error((*w)->write("a", Tensor()), absl::StatusCode::kInvalidArgument, {"\"a\""});
  }
  SECTION("missing tensor at finish removes the file") {
    auto w = SafetensorsWriter::create(path, specs);
    REQUIRE(w.ok());
    REQUIRE((*w)->write("a", a).ok());
    check_error((*w)->finish(), absl::StatusCode::kFailedPrecondition,
                {path, "1 of 2", "\"b\"", "removed"});
    CHECK(!file_exists(path));
    CHECK(!(*w)->write("b", patterned(DType::kBF16, {3}, 0)).ok());
  }
  SECTION("destroyed before finish removes the file") {
    {
      auto w = SafetensorsWriter::create(path, specs);
      REQUIRE(w.ok());
      REQUIRE((*w)->write("a", a).ok());
      CHECK(file_exists(path));
    }
    CHECK(!file_exists(path));
  }
  SECTION("bad declarations create no file") {
    check_error(SafetensorsWriter::create(path, {{"a", DType::kF32, {2}}, {"a", DType::kF32, {2}}})
                    .status(),
                absl::StatusCode::kInvalidArgument, {path, "\"a\"", "repeated"});
    check_error(SafetensorsWriter::create(path, {{"__metadata__", DType::kF32, {2}}}).status(),
                absl::StatusCode::kInvalidArgument, {"__metadata__"});
    check_error(SafetensorsWriter::create(path, {{"neg", DType::kF32, {-2}}}).status(),
                absl::StatusCode::kInvalidArgument, {"\"neg\"", "negative"});
    int64_t big = int64_t(1) << 40;
    check_error(SafetensorsWriter::create(path, {{"huge", DType::kF32, {big, big}}}).status(),
                absl::StatusCode::kInvalidArgument, {"\"huge\"", "overflows"});
    CHECK(!file_exists(path));
  }
  SECTION("unwritable path") {
    check_error(SafetensorsWriter::create(dir.file("no/such/dir/x.safetensors"), specs).status(),
                absl::StatusCode::kNotFound, {"no/such/dir"});
  }
}

TEST_CASE("safetensors open: missing file and not a regular file", "[safetensors]") {
  TempDir dir;
  check_error(SafetensorsFile::open(dir.file("absent.safetensors")).status(),
              absl::StatusCode::kNotFound, {dir.file("absent.safetensors")});
  check_error(SafetensorsFile::open(dir.path()).status(), absl::StatusCode::kInvalidArgument,
              {dir.path(), "not a regular file"});
}

TEST_CASE("safetensors corrupt framing", "[safetensors][corrupt]") {
  check_corrupt("empty file", "", {"0 bytes", "shorter than the 8-byte"});
  check_corrupt("3-byte file", "abc", {"3 bytes"});
  check_corrupt("header past end", le64(100) + "{}", {"header length 100", "past the end"});
  check_corrupt("header length 2^63", le64(uint64_t(1) << 63) + "{}",
                {"header length 9223372036854775808"});
  check_corrupt("header length 2^64-1", le64(~uint64_t(0)) + "{}", {"past the end"});
  check_corrupt("not JSON", st_bytes("{not json", ""), {"not valid JSON"});
  check_corrupt("truncated JSON", st_bytes("{\"a\":", ""), {"not valid JSON"});
  check_corrupt("invalid UTF-8", st_bytes("{\"\xff\":1}", ""), {"not valid JSON"});
  check_corrupt("array", st_bytes("[1,2]   ", ""), {"not a JSON object"});
  check_corrupt("string", st_bytes("\"x\"", ""), {"not a JSON object"});
}

TEST_CASE("safetensors header larger than the limit", "[safetensors][corrupt]") {
  TempDir dir;
  std::string path = dir.file("big.safetensors");
  write_raw(path, le64(150'000'000) + "{}");
  std::filesystem::resize_file(path, 200'000'000);  // sparse: costs no disk
  check_error(SafetensorsFile::open(path).status(), absl::StatusCode::kInvalidArgument,
              {path, "header length 150000000", "limit"});
}

TEST_CASE("safetensors corrupt tensor entries", "[safetensors][corrupt]") {
  const std::string d8(8, 'x');
  auto one = [](const std::string& body) { return "{\"w\":" + body + "}"; };
  check_corrupt("entry not object", st_bytes(one("5"), ""), {"tensor \"w\"", "not an object"});
  check_corrupt("missing dtype", st_bytes(one("{\"shape\":[2],\"data_offsets\":[0,8]}"), d8),
                {"tensor \"w\"", "missing \"dtype\""});
  check_corrupt("missing shape", st_bytes(one("{\"dtype\":\"F32\",\"data_offsets\":[0,8]}"), d8),
                {"tensor \"w\"", "missing \"shape\""});
  check_corrupt("missing offsets", st_bytes(one("{\"dtype\":\"F32\",\"shape\":[2]}"), d8),
                {"tensor \"w\"", "missing \"data_offsets\""});
  check_corrupt("dtype not string",
                st_bytes(one("{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}"), d8),
                {"tensor \"w\"", "\"dtype\" is not a string"});
  check_corrupt("shape not array",
                st_bytes(one("{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}"), d8),
                {"tensor \"w\"", "\"shape\" is not an array"});
  check_corrupt("offsets not array",
                st_bytes(one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":\"0-8\"}"), d8),
                {"tensor \"w\"", "data_offsets"});
  check_corrupt("one offset",
                st_bytes(one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}"), d8),
                {"tensor \"w\"", "two non-negative integers"});
  check_corrupt("three offsets",
                st_bytes(one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}"), d8),
                {"tensor \"w\"", "two non-negative integers"});
  check_corrupt("negative offset",
                st_bytes(one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}"), d8),
                {"tensor \"w\"", "two non-negative integers"});
  check_corrupt("fractional offset",
                st_bytes(one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.0]}"), d8),
                {"tensor \"w\"", "two non-negative integers"});
  check_corrupt("negative dim", st_bytes(one(entry("F32", "[-2]", 0, 8)), d8),
                {"tensor \"w\"", "negative"});
  check_corrupt("fractional dim", st_bytes(one(entry("F32", "[2.5]", 0, 8)), d8),
                {"tensor \"w\"", "2.5", "not an integer"});
  check_corrupt("string dim", st_bytes(one(entry("F32", "[\"2\"]", 0, 8)), d8),
                {"tensor \"w\"", "not an integer"});
  check_corrupt("dim 2^63", st_bytes(one(entry("U8", "[9223372036854775808]", 0, 8)), d8),
                {"tensor \"w\"", "too large"});
  check_corrupt("dim 2^64", st_bytes(one(entry("U8", "[18446744073709551616]", 0, 8)), d8),
                {"tensor \"w\"", "not an integer"});
  check_corrupt("numel overflow",
                st_bytes(one(entry("F32", "[2147483648,2147483648,2147483648]", 0, 8)), d8),
                {"tensor \"w\"", "overflows"});
  check_corrupt("bytes overflow", st_bytes(one(entry("I64", "[4611686018427387904]", 0, 8)), d8),
                {"tensor \"w\"", "byte count", "overflows"});
  check_corrupt("unknown dtype", st_bytes(one(entry("F128", "[2]", 0, 8)), d8),
                {"tensor \"w\"", "F128"});
  check_corrupt("byte count mismatch", st_bytes(one(entry("F32", "[3]", 0, 8)), d8),
                {"tensor \"w\"", "span 8 bytes", "needs 12"});
  check_corrupt("end before begin", st_bytes(one(entry("U8", "[0]", 8, 0)), d8),
                {"tensor \"w\"", "end 0 is before begin 8"});
}

TEST_CASE("safetensors corrupt data layout", "[safetensors][corrupt]") {
  const std::string a = "\"a\":" + entry("F32", "[2]", 0, 8);
  check_corrupt("offsets past data end", st_bytes("{" + a + "}", std::string(4, 'x')),
                {"tensor \"a\"", "past the end of the data section (4 bytes)"});
  check_corrupt("zero-size tensor past data end",
                st_bytes("{\"z\":" + entry("F32", "[0]", 9, 9) + "}", ""),
                {"tensor \"z\"", "past the end"});
  check_corrupt(
      "overlap",
      st_bytes("{" + a + ",\"b\":" + entry("F32", "[2]", 4, 12) + "}", std::string(12, 'x')),
      {"tensor \"b\"", "overlap tensor \"a\""});
  check_corrupt(
      "zero-size inside another",
      st_bytes("{" + a + ",\"z\":" + entry("F32", "[0]", 4, 4) + "}", std::string(8, 'x')),
      {"tensor \"z\"", "overlap tensor \"a\""});
  check_corrupt(
      "gap",
      st_bytes("{" + a + ",\"b\":" + entry("F32", "[1]", 12, 16) + "}", std::string(16, 'x')),
      {"tensor \"b\"", "gap of 4 bytes"});
  check_corrupt("gap at start", st_bytes("{\"b\":" + entry("F32", "[1]", 4, 8) + "}", "12345678"),
                {"tensor \"b\"", "gap of 4 bytes"});
  check_corrupt("trailing bytes", st_bytes("{" + a + "}", std::string(11, 'x')),
                {"3 trailing bytes"});
  check_corrupt("data without tensors", st_bytes("{}", "x"), {"1 trailing bytes"});
  check_corrupt("duplicate tensor name", st_bytes("{" + a + "," + a + "}", std::string(8, 'x')),
                {"duplicate key \"a\""});
  check_corrupt("duplicate field",
                st_bytes("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],"
                         "\"data_offsets\":[0,8]}}",
                         std::string(8, 'x')),
                {"duplicate key \"dtype\""});
}

TEST_CASE("safetensors corrupt metadata", "[safetensors][corrupt]") {
  check_corrupt("metadata array", st_bytes("{\"__metadata__\":[1]}", ""),
                {"__metadata__ is not an object"});
  check_corrupt("metadata null", st_bytes("{\"__metadata__\":null}", ""),
                {"__metadata__ is not an object"});
  check_corrupt("metadata int value", st_bytes("{\"__metadata__\":{\"k\":1}}", ""),
                {"__metadata__ \"k\" is not a string"});
  check_corrupt("metadata object value", st_bytes("{\"__metadata__\":{\"k\":{}}}", ""),
                {"__metadata__ \"k\""});
  check_corrupt("duplicate metadata key",
                st_bytes("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", ""),
                {"duplicate key \"k\""});
}

// ---------------------------------------------------------------------------------------------
// Checkpoint folders

namespace {

// Writes shards {file: [(name, tensor)]} and an index over them; returns the index's total_size.
uint64_t write_sharded(
    const std::string& dir,
    const std::map<std::string, std::vector<std::pair<std::string, Tensor>>>& shards) {
  uint64_t total = 0;
  std::map<std::string, std::string> weight_map;
  for (const auto& [file, tensors] : shards) {
    std::vector<TensorSpec> specs;
    for (const auto& [name, t] : tensors) {
      specs.push_back({name, t.dtype(), t.shape()});
      weight_map[name] = file;
    }
    auto w = SafetensorsWriter::create(dir + "/" + file, specs);
    REQUIRE(w.ok());
    for (const auto& [name, t] : tensors) REQUIRE((*w)->write(name, t).ok());
    REQUIRE((*w)->finish().ok());
    total += (*w)->data_bytes();
  }
  REQUIRE(write_safetensors_index(dir, total, weight_map).ok());
  return total;
}

}  // namespace

TEST_CASE("checkpoint: sharded read", "[safetensors][checkpoint]") {
  TempDir dir;
  Tensor a = patterned(DType::kBF16, {4, 4}, 1), b = patterned(DType::kF32, {3}, 2),
         c = patterned(DType::kF8E4M3, {2, 8}, 3);
  uint64_t total =
      write_sharded(dir.path(), {{"model-00002-of-00002.safetensors", {{"c", c}}},
                                 {"model-00001-of-00002.safetensors", {{"b", b}, {"a", a}}}});
  CHECK(total == 32 + 12 + 16);

  auto index_text = read_file(dir.file(kSafetensorsIndexFile));
  REQUIRE(index_text.ok());
  auto index = nlohmann::json::parse(*index_text, nullptr, false);
  REQUIRE(index.is_object());
  CHECK(index["metadata"]["total_size"].is_number_integer());
  CHECK(index["metadata"]["total_size"] == total);
  CHECK(index["weight_map"]["c"] == "model-00002-of-00002.safetensors");

  auto r = CheckpointReader::open(dir.path());
  REQUIRE(r.ok());
  CHECK(r->sharded());
  CHECK(r->shard_files() == std::vector<std::string>{"model-00001-of-00002.safetensors",
                                                     "model-00002-of-00002.safetensors"});
  CHECK(r->names() == std::vector<std::string>{"a", "b", "c"});
  CHECK(r->shard_tensor_names("model-00001-of-00002.safetensors") ==
        std::vector<std::string>{"b", "a"});
  CHECK(r->shard_tensor_names("nope").empty());
  CHECK(*r->shard_of("c") == "model-00002-of-00002.safetensors");
  check_error(r->shard_of("d").status(), absl::StatusCode::kNotFound, {dir.path(), "\"d\""});
  CHECK(r->index_metadata().at("total_size") == std::to_string(total));
  REQUIRE(r->find("b"));
  CHECK(r->find("b")->shape == Shape{3});
  CHECK(r->find("d") == nullptr);
  CHECK(same_bytes(*r->tensor("a"), a));
  CHECK(same_bytes(*r->tensor("c"), c));
  check_error(r->tensor("d").status(), absl::StatusCode::kNotFound, {"\"d\""});
}

TEST_CASE("checkpoint: single file and empty folder", "[safetensors][checkpoint]") {
  TempDir dir;
  check_error(CheckpointReader::open(dir.path()).status(), absl::StatusCode::kNotFound,
              {dir.path(), kSafetensorsSingleFile, kSafetensorsIndexFile});
  Tensor w = patterned(DType::kBF16, {2, 2}, 5);
  REQUIRE(save_safetensors(dir.file(kSafetensorsSingleFile), {{"w", w}}).ok());
  auto r = CheckpointReader::open(dir.path());
  REQUIRE(r.ok());
  CHECK(!r->sharded());
  CHECK(r->shard_files() == std::vector<std::string>{kSafetensorsSingleFile});
  CHECK(r->names() == std::vector<std::string>{"w"});
  CHECK(r->index_metadata().empty());
  CHECK(same_bytes(*r->tensor("w"), w));
}

TEST_CASE("checkpoint: corrupt index and shards", "[safetensors][checkpoint][corrupt]") {
  TempDir dir;
  Tensor a = patterned(DType::kF32, {2}, 1), b = patterned(DType::kF32, {3}, 2);
  REQUIRE(save_safetensors(dir.file("s1.safetensors"), {{"a", a}}).ok());
  REQUIRE(save_safetensors(dir.file("s2.safetensors"), {{"b", b}}).ok());
  std::string index_path = dir.file(kSafetensorsIndexFile);
  auto open_with_index = [&](const std::string& text) {
    write_raw(index_path, text);
    return CheckpointReader::open(dir.path()).status();
  };
  const absl::StatusCode bad = absl::StatusCode::kInvalidArgument;

  check_error(open_with_index("{\"weight_map\": "), bad, {index_path, "not valid JSON"});
  check_error(open_with_index("[]"), bad, {index_path, "not a JSON object"});
  check_error(open_with_index("{}"), bad, {index_path, "weight_map"});
  check_error(open_with_index("{\"weight_map\": []}"), bad, {index_path, "weight_map"});
  check_error(open_with_index("{\"weight_map\": {}}"), bad, {index_path, "empty"});
  check_error(open_with_index("{\"metadata\": 3, \"weight_map\": {\"a\": \"s1.safetensors\"}}"),
              bad, {index_path, "\"metadata\""});
  check_error(open_with_index("{\"weight_map\": {\"a\": 1}}"), bad, {index_path, "\"a\""});
  check_error(open_with_index("{\"weight_map\": {\"a\": \"../s1.safetensors\"}}"), bad,
              {index_path, "inside the folder"});
  check_error(open_with_index("{\"weight_map\": {\"a\": \"/etc/passwd\"}}"), bad,
              {index_path, "inside the folder"});
  check_error(
      open_with_index("{\"weight_map\": {\"a\": \"s1.safetensors\", \"a\": \"s1.safetensors\"}}"),
      bad, {index_path, "duplicate key \"a\""});
  check_error(open_with_index("{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": \"gone\"}}"),
              absl::StatusCode::kNotFound, {index_path, "shard \"gone\""});
  check_error(open_with_index("{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": "
                              "\"s2.safetensors\", \"c\": \"s2.safetensors\"}}"),
              bad, {index_path, "tensor \"c\"", "s2.safetensors", "does not hold it"});

  // s3 holds "a" and "c": indexing only "c" leaves "a" unlisted; indexing "a" to s1 puts it twice.
  REQUIRE(save_safetensors(dir.file("s3.safetensors"), {{"a", a}, {"c", b}}).ok());
  check_error(open_with_index("{\"weight_map\": {\"c\": \"s3.safetensors\"}}"), bad,
              {index_path, "tensor \"a\"", "s3.safetensors", "not in weight_map"});
  check_error(open_with_index("{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": "
                              "\"s2.safetensors\", \"c\": \"s3.safetensors\"}}"),
              bad, {index_path, "tensor \"a\"", "s1.safetensors", "s3.safetensors"});

  write_raw(dir.file("s2.safetensors"), "junk");
  check_error(
      open_with_index("{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": \"s2.safetensors\"}}"),
      bad, {index_path, "shard \"s2.safetensors\"", dir.file("s2.safetensors"), "4 bytes"});

  REQUIRE(save_safetensors(dir.file("s2.safetensors"), {{"b", b}}).ok());
  auto ok = open_with_index(
      "{\"metadata\": {\"total_size\": 20, \"note\": \"x\"}, \"weight_map\": {\"a\": "
      "\"s1.safetensors\", \"b\": \"s2.safetensors\"}}");
  CHECK(ok.ok());
}
