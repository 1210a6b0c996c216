// The tokenizer on hand-built tokenizer.json objects: pre-tokenizer splits, merges by rank,
// added tokens, decode, and errors naming the malformed field. (The comparison with HF tokenizers
// on trained tokenizers is tests/interop/test_tokenizer.py.)
#include "inference/tokenizer.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "inference/pretokenize.h"
#include "inference/unicode.h"
#include "tests/catch.h"

using namespace fp8rl;
using json = nlohmann::json;

namespace {

// Every byte-level character as a token (ids 0..255 in byte order of the GPT-2 alphabet), plus
// the merges given, their results appended to the vocabulary.
json byte_level_tokenizer(const std::vector<std::pair<std::string, std::string>>& merges,
                          const std::string& regex) {
  json vocab = json::object();
  int id = 0;
  for (int b = 0, n = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    std::string ch;
    utf8_append(printable ? uint32_t(b) : uint32_t(256 + n++), &ch);
    vocab[ch] = id++;
  }
  json m = json::array();
  for (const auto& [a, b] : merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = id++;
    m.push_back(a + " " + b);
  }
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", m}}},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"added_tokens",
           {{{"id", 1000}, {"content", "<|im_start|>"}, {"special", true}},
            {{"id", 1001}, {"content", "<|endoftext|>"}, {"special", true}}}}};
}

std::vector<std::string> words(SplitPattern p, const std::string& text) {
  const std::vector<uint32_t> cps = *utf8_decode(text);
  std::vector<std::string> out;
  for (const auto& [b, e] : split_words(p, cps)) {
    std::string w;
    for (size_t i = b; i < e; ++i) utf8_append(cps[i], &w);
    out.push_back(w);
  }
  return out;
}

}  // namespace

TEST_CASE("tokenizer: unicode classes and UTF-8") {
  CHECK(unicode_class('a') == UnicodeClass::kLetter);
  CHECK(unicode_class(0x4E2D) == UnicodeClass::kLetter);  // 中
  CHECK(unicode_class(0xE9) == UnicodeClass::kLetter);    // é
  CHECK(unicode_class('7') == UnicodeClass::kNumber);
  CHECK(unicode_class(0xB2) == UnicodeClass::kNumber);    // ²
  CHECK(unicode_class(0x1F600) == UnicodeClass::kOther);  // 😀
  CHECK(unicode_class('!') == UnicodeClass::kOther);
  CHECK(unicode_is_space(0x3000));
  CHECK_FALSE(unicode_is_space('x'));
  CHECK_FALSE(utf8_decode("\xC3").ok());
  CHECK(utf8_lossy("a\xC3(b") == "a\xEF\xBF\xBD(b");
  CHECK(utf8_lossy("\xF0\x9F\x98") == "\xEF\xBF\xBD");  // a truncated 4-byte sequence: one U+FFFD
  CHECK(utf8_lossy("\xE4\xB8\xAD") == "\xE4\xB8\xAD");
}

TEST_CASE("tokenizer: Qwen2 and GPT-2 and Llama 3 split patterns") {
  const SplitPattern q = *split_pattern_from_regex(split_pattern_regex(SplitPattern::kQwen2));
  CHECK(words(q, "Hello world's 123!!\n\n  x  ") ==
        std::vector<std::string>{"Hello", " world", "'s", " ", "1", "2", "3", "!!\n\n", " ", " x",
                                 "  "});
  CHECK(words(q, "a \n b\tc") == std::vector<std::string>{"a", " \n", " b", "\tc"});
  CHECK(words(q, "I'LL go") == std::vector<std::string>{"I", "'LL", " go"});
  CHECK(words(SplitPattern::kLlama3, "12345") == std::vector<std::string>{"123", "45"});
  CHECK(words(SplitPattern::kGpt2, "I'LL 123 go  x") ==
        std::vector<std::string>{"I", "'", "LL", " 123", " go", " ", " x"});
  CHECK_FALSE(split_pattern_from_regex("\\w+").has_value());
}

TEST_CASE("tokenizer: BPE merges by rank with added tokens split first and decode round-trips") {
  const std::string regex(split_pattern_regex(SplitPattern::kQwen2));
  // "Ġ" is the byte-level image of the space.
  auto tok = Tokenizer::from_json(byte_level_tokenizer(
      {{"l", "l"}, {"h", "e"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}}, regex));
  REQUIRE(tok.ok());
  const int32_t hello = *tok->token_to_id("hello"), sp_w = *tok->token_to_id("Ġw");
  const auto ids = tok->encode("hello<|im_start|> wo");
  REQUIRE(ids.ok());
  CHECK(*ids == std::vector<int32_t>{hello, 1000, sp_w, *tok->token_to_id("o")});
  CHECK(tok->decode(*ids, false) == "hello<|im_start|> wo");
  CHECK(tok->decode(*ids, true) == "hello wo");
  CHECK(tok->is_special(1000));
  CHECK_FALSE(tok->is_special(hello));
  CHECK(tok->vocab_size() == 1002);
  // Non-ASCII bytes round-trip through the alphabet; a split character decodes lossily.
  const auto cjk = tok->encode("中文 😀");
  REQUIRE(cjk.ok());
  CHECK(tok->decode(*cjk, false) == "中文 😀");
  CHECK(tok->decode(std::vector<int32_t>(cjk->begin(), cjk->begin() + 1), false) == "\xEF\xBF\xBD");
  CHECK_FALSE(tok->encode("\xFF").ok());
}

TEST_CASE("tokenizer: malformed tokenizer.json errors name the field") {
  const std::string regex(split_pattern_regex(SplitPattern::kQwen2));
  const auto error_of = [](const json& j) {
    return std::string(Tokenizer::from_json(j).status().message());
  };
  json j = byte_level_tokenizer({}, regex);
  j["model"]["merges"] = json::array({"a b c"});
  CHECK(absl::StrContains(error_of(j), "model.merges[0]"));
  j["model"]["merges"] = json::array({json::array({"Ġ", "zz"})});
  CHECK(absl::StrContains(error_of(j), "model.merges[0]"));
  j = byte_level_tokenizer({}, regex);
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+";
  CHECK(absl::StrContains(error_of(j), "pre_tokenizer.pretokenizers[0].pattern.Regex"));
  j = byte_level_tokenizer({}, regex);
  j["added_tokens"][0]["lstrip"] = true;
  CHECK(absl::StrContains(error_of(j), "added_tokens[0].lstrip"));
  j = byte_level_tokenizer({}, regex);
  j["added_tokens"][1]["special"] = "yes";
  CHECK(absl::StrContains(error_of(j), "added_tokens[1].special"));
  j = byte_level_tokenizer({}, regex);
  j["normalizer"] = {{"type", "NFKC"}};
  CHECK(absl::StrContains(error_of(j), "normalizer"));
  j = byte_level_tokenizer({}, regex);
  j["model"]["vocab"]["x"] = "seven";
  CHECK(absl::StrContains(error_of(j), "model.vocab[\"x\"]"));
  j = byte_level_tokenizer({}, regex);
  j.erase("model");
  CHECK(absl::StrContains(error_of(j), "model"));
  CHECK(Tokenizer::load("/nonexistent/tokenizer.json").status().code() ==
        absl::StatusCode::kNotFound);
}
