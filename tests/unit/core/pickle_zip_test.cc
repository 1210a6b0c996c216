// Stored zips, pickles and PyTorch checkpoint pieces: byte-level expectations taken from CPython's
// pickle and zlib, round trips, and every way a damaged input must be refused.
#include <cstring>
#include <string>
#include <vector>

#include "core/dcp.h"
#include "core/pickle.h"
#include "core/zip.h"
#include "tests/catch.h"
#include "tests/unit/core/test_util.h"

using namespace fp8rl;
using fp8rl::testing::check_error;

namespace {

uint16_t le16(const std::string& s, size_t at) {
  return uint16_t(uint8_t(s[at]) | uint8_t(s[at + 1]) << 8);
}

std::string bytes(std::initializer_list<int> v) {
  std::string s;
  for (int b : v) s.push_back(char(b));
  return s;
}

}  // namespace

TEST_CASE("crc32 is zip's CRC-32", "[zip]") {
  CHECK(crc32("123456789") == 0xCBF43926u);  // the standard check value
  CHECK(crc32("") == 0u);
  CHECK(crc32("6789", crc32("12345")) == 0xCBF43926u);
}

TEST_CASE("stored zips round trip with 64-byte aligned data", "[zip]") {
  for (const std::string& name : std::vector<std::string>{
           "a", "archive/data/0", std::string(57, 'n'), std::string(100, 'm')}) {
    const std::string data(1000, 'x');
    auto zip = make_stored_zip({{"archive/data.pkl", "pickle"}, {name, data}, {"v", ""}});
    REQUIRE(zip.ok());
    auto records = read_stored_zip(*zip, "test.zip");
    REQUIRE(records.ok());
    REQUIRE(records->size() == 3);
    CHECK((*records)[0].name == "archive/data.pkl");
    CHECK((*records)[0].data == "pickle");
    CHECK((*records)[1].name == name);
    CHECK((*records)[1].data == data);
    CHECK((*records)[2].data.empty());
    for (const ZipRecord& r : *records) {
      INFO(r.name);
      CHECK((r.data.data() - zip->data()) % 64 == 0);
    }
    // Local header 1: name, then the padding as one "FB" extra field, then the data.
    const size_t data_at = size_t((*records)[1].data.data() - zip->data());
    const size_t h = zip->rfind("PK\x03\x04", data_at);
    REQUIRE(h != std::string::npos);
    const size_t extra = le16(*zip, h + 28);
    CHECK(le16(*zip, h + 26) == name.size());
    CHECK(h + 30 + name.size() + extra == data_at);
    if (extra > 0) CHECK(zip->substr(h + 30 + name.size(), 2) == "FB");
  }
}

TEST_CASE("damaged zips are refused naming the record", "[zip]") {
  auto zip = make_stored_zip({{"archive/data.pkl", "0123456789"}, {"archive/version", "3\n"}});
  REQUIRE(zip.ok());
  std::string flipped = *zip;
  flipped[size_t(zip->find("0123456789")) + 4] ^= 1;
  check_error(read_stored_zip(flipped, "f.zip").status(), absl::StatusCode::kDataLoss,
              {"f.zip", "archive/data.pkl", "CRC32"});
  check_error(read_stored_zip(zip->substr(0, zip->size() - 5), "t.zip").status(),
              absl::StatusCode::kDataLoss, {"t.zip", "end record"});
  check_error(read_stored_zip(zip->substr(40), "c.zip").status(), absl::StatusCode::kDataLoss,
              {"c.zip"});
  check_error(read_stored_zip("", "e.zip").status(), absl::StatusCode::kDataLoss, {"truncated"});
  CHECK(make_stored_zip({{"a", "1"}, {"a", "2"}}).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("pickle_dumps writes CPython's protocol-2 opcodes", "[pickle]") {
  // pickle.dumps({'a': 1}, 2) without its memo puts: 80 02 } ( X.. a K 01 u .
  CHECK(pickle_dumps(PyValue::dict({{PyValue::str("a"), PyValue::integer(1)}})) ==
        bytes({0x80, 2, '}', '(', 'X', 1, 0, 0, 0, 'a', 'K', 1, 'u', '.'}));
  CHECK(pickle_dumps(PyValue::integer(-1)) == bytes({0x80, 2, 'J', 0xff, 0xff, 0xff, 0xff, '.'}));
  CHECK(pickle_dumps(PyValue::integer(1ll << 31)) ==
        bytes({0x80, 2, 0x8a, 5, 0, 0, 0, 0x80, 0, '.'}));  // LONG1 keeps the sign byte
  CHECK(pickle_dumps(PyValue::real(2.5)) == bytes({0x80, 2, 'G', 0x40, 4, 0, 0, 0, 0, 0, 0, '.'}));
  CHECK(pickle_dumps(PyValue::tuple({PyValue(), PyValue::boolean(true)})) ==
        bytes({0x80, 2, 'N', 0x88, 0x86, '.'}));
  CHECK(pickle_dumps(PyValue::global("torch", "bfloat16")) ==
        "\x80\x02"
        "ctorch\nbfloat16\n.");
}

TEST_CASE("pickles round trip", "[pickle]") {
  std::vector<PyValue> ints;
  for (int64_t v : {int64_t(0), int64_t(255), int64_t(256), int64_t(65535), int64_t(65536),
                    int64_t(-1), int64_t(INT32_MAX), int64_t(INT32_MIN), int64_t(1) << 31,
                    -(int64_t(1) << 31) - 1, INT64_MAX, INT64_MIN, int64_t(-129)}) {
    ints.push_back(PyValue::integer(v));
  }
  const PyValue value = PyValue::dict({
      {PyValue::str("ints"), PyValue::list(ints)},
      {PyValue::str("floats"), PyValue::tuple({PyValue::real(-0.0), PyValue::real(1e300),
                                               PyValue::real(3.25), PyValue::real(0.1)})},
      {PyValue::str("tuples"),
       PyValue::tuple({PyValue::tuple({}), PyValue::tuple({PyValue()}),
                       PyValue::tuple({PyValue(), PyValue(), PyValue(), PyValue()})})},
      {PyValue::str("obj"),
       PyValue::new_object(PyValue::global("argparse", "Namespace"), PyValue::tuple({}),
                           PyValue::dict({{PyValue::str("lr"), PyValue::real(1e-6)}}))},
      {PyValue::str("call"),
       PyValue::call(PyValue::global("torch", "Size"),
                     PyValue::tuple({PyValue::tuple({PyValue::integer(3)})}))},
      {PyValue::str("pid"), PyValue::persistent_id(PyValue::tuple({PyValue::str("storage")}))},
      {PyValue::str("text"), PyValue::str(std::string("\0\xe2\x82\xac", 4))},
      {PyValue::integer(7), PyValue::boolean(false)},
  });
  auto back = pickle_loads(pickle_dumps(value), "test");
  REQUIRE(back.ok());
  CHECK(*back == value);
  CHECK(back->find("obj")->attr("lr")->as_float() == 1e-6);
  CHECK(back->find("missing") == nullptr);
}

TEST_CASE("pickle_loads reads CPython protocol-4 output (frames, memo)", "[pickle]") {
  // pickle.dumps({'a': [1, (2.5, 'x')], 'b': None}, protocol=4)
  const std::string p4 = std::string(
      "\x80\x04\x95#\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01"
      "a"
      "\x94]\x94(K\x01G@\x04\x00\x00\x00\x00\x00\x00\x8c\x01x\x94"
      "\x86\x94"
      "e\x8c\x01"
      "b\x94Nu.",
      46);
  auto v = pickle_loads(p4, "p4");
  REQUIRE(v.ok());
  const PyValue want =
      PyValue::dict({{PyValue::str("a"),
                      PyValue::list({PyValue::integer(1),
                                     PyValue::tuple({PyValue::real(2.5), PyValue::str("x")})})},
                     {PyValue::str("b"), PyValue()}});
  CHECK(*v == want);
  // s = ('ab',); pickle.dumps([s, s, True], protocol=4): the second s is a memo reference.
  const std::string shared(
      "\x80\x04\x95\x0f\x00\x00\x00\x00\x00\x00\x00]\x94(\x8c\x02"
      "ab"
      "\x94\x85\x94h\x02\x88"
      "e.",
      26);
  auto s = pickle_loads(shared, "shared");
  REQUIRE(s.ok());
  REQUIRE(s->items().size() == 3);
  CHECK(s->items()[0] == s->items()[1]);
}

TEST_CASE("pickle_loads refuses malformed, recursive and deep pickles", "[pickle]") {
  const std::string good = pickle_dumps(PyValue::list({PyValue::integer(1)}));
  check_error(pickle_loads(good.substr(0, good.size() - 1), "cut").status(),
              absl::StatusCode::kDataLoss, {"cut", "truncated"});
  check_error(pickle_loads(good + "x", "tail").status(), absl::StatusCode::kDataLoss,
              {"after STOP"});
  check_error(pickle_loads(bytes({0x80, 2, 'i', '.'}), "op").status(), absl::StatusCode::kDataLoss,
              {"unsupported opcode 0x69"});
  check_error(pickle_loads(bytes({0x80, 2, 'a', '.'}), "u").status(), absl::StatusCode::kDataLoss,
              {"underflow"});
  // l = []; l.append(l)
  check_error(pickle_loads(bytes({0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.'}), "rec").status(),
              absl::StatusCode::kDataLoss, {"recursive"});
  std::string deep{char(0x80), 2};
  for (int i = 0; i < kMaxPickleDepth + 5; ++i) deep += "]";
  for (int i = 0; i < kMaxPickleDepth + 4; ++i) deep += "a";
  deep += ".";
  check_error(pickle_loads(deep, "deep").status(), absl::StatusCode::kDataLoss, {"deeper"});
}

TEST_CASE("torch.save tensor archives round trip and are checked", "[dcp]") {
  const std::vector<uint16_t> v = {1, 2, 3, 4, 5, 6};
  const std::string data(reinterpret_cast<const char*>(v.data()), v.size() * 2);
  std::string archive;
  auto len = write_torch_tensor(DType::kBF16, {1, 2, 3}, data, [&](std::string_view b) {
    archive.append(b);
    return absl::OkStatus();
  });
  REQUIRE(len.ok());
  CHECK(*len == archive.size());
  auto view = read_torch_tensor(archive, "item");
  REQUIRE(view.ok());
  CHECK(view->dtype == DType::kBF16);
  CHECK(view->shape == Shape{1, 2, 3});
  CHECK(view->data == data);

  const auto discard = [](std::string_view) { return absl::OkStatus(); };
  CHECK(write_torch_tensor(DType::kF32, {2}, data, discard).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(write_torch_tensor(DType::kF8E4M3, {12}, data, discard).status().code() ==
        absl::StatusCode::kInvalidArgument);
  std::string flipped = archive;
  flipped[archive.find(data) + 3] ^= 0x40;
  check_error(read_torch_tensor(flipped, "item 7").status(), absl::StatusCode::kDataLoss,
              {"item 7", "archive/data/0", "CRC32"});
  // An archive of a non-tensor value is not a tensor.
  auto value = torch_save_value(PyValue::dict({}));
  REQUIRE(value.ok());
  check_error(read_torch_tensor(*value, "v").status(), absl::StatusCode::kDataLoss,
              {"one plain tensor"});
  auto back = torch_load_value(*value, "v");
  REQUIRE(back.ok());
  CHECK(*back == PyValue::dict({}));
}

TEST_CASE("DCP metadata round trips", "[dcp]") {
  std::vector<DcpTensor> tensors = {
      {"decoder.layers.mlp.linear_fc2.weight",
       DType::kBF16,
       {2, 4, 6},
       {{{0, 0, 0}, {1, 4, 6}, "__0_0.distcp", 0, 700},
        {{1, 0, 0}, {1, 4, 6}, "__0_0.distcp", 700, 701}}},
      {"optimizer.state.exp_avg.decoder.final_layernorm.weight",
       DType::kF32,
       {4},
       {{{0}, {4}, "__0_0.distcp", 1401, 3000000000ull}}},
  };
  const std::string bytes = dcp_metadata_dumps(tensors, "0000-id");
  auto md = dcp_metadata_loads(bytes, ".metadata");
  REQUIRE(md.ok());
  REQUIRE(md->tensors.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    const DcpTensor &a = tensors[i], &b = md->tensors[i];
    CHECK(a.fqn == b.fqn);
    CHECK(a.dtype == b.dtype);
    CHECK(a.size == b.size);
    REQUIRE(a.chunks.size() == b.chunks.size());
    for (size_t c = 0; c < a.chunks.size(); ++c) {
      CHECK(a.chunks[c].offsets == b.chunks[c].offsets);
      CHECK(a.chunks[c].sizes == b.chunks[c].sizes);
      CHECK(a.chunks[c].relative_path == b.chunks[c].relative_path);
      CHECK(a.chunks[c].offset == b.chunks[c].offset);
      CHECK(a.chunks[c].length == b.chunks[c].length);
    }
  }
  check_error(dcp_metadata_loads(bytes.substr(0, bytes.size() / 2), "m").status(),
              absl::StatusCode::kDataLoss, {"m", "truncated"});
  check_error(dcp_metadata_loads(pickle_dumps(PyValue::dict({})), "m").status(),
              absl::StatusCode::kDataLoss, {"state_dict_metadata"});
}
