// A Hugging Face `tokenizer.json` byte-level BPE tokenizer as Qwen2/Qwen3 (and GPT-2, Llama 3)
// use it: added/special tokens split out first, the Split regex + ByteLevel pre-tokenizer, BPE
// merges by rank, and the ByteLevel decoder.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/pretokenize.h"

namespace fp8rl {

// Immutable after construction: every const method is safe to call concurrently.
//
// What is supported (anything else is an Unimplemented error naming the field): normalizer null
// or NFC (NFC is not applied: input is taken to be NFC already, as text from JSON clients almost
// always is); pre_tokenizer ByteLevel (use_regex: GPT-2's split) or a Sequence of Split (GPT-2's,
// Qwen2's or Llama 3's regex, "Isolated") and ByteLevel (use_regex false), add_prefix_space
// false; model BPE without dropout, continuing_subword_prefix or end_of_word_suffix, merges as
// "a b" strings or ["a","b"] pairs, ignore_merges; added tokens without lstrip/rstrip/
// single_word; decoder ByteLevel; post_processor null or ByteLevel (adds no tokens).
class Tokenizer {
 public:
  // Parses a tokenizer.json object; InvalidArgument naming the field that is missing, mistyped
  // or inconsistent (a merge of tokens not in the vocabulary, ...).
  static absl::StatusOr<Tokenizer> from_json(const nlohmann::json& j);
  // Reads `path`: a tokenizer.json file, or a folder holding one. NotFound when absent.
  static absl::StatusOr<Tokenizer> load(const std::string& path);

  // Token ids of `text` (UTF-8; InvalidArgument when it is not valid UTF-8), as HF's
  // `encode(text, add_special_tokens=False)`: every added token occurring in the text becomes its
  // id, whatever `special` says.
  absl::StatusOr<std::vector<int32_t>> encode(std::string_view text) const;
  // Text of `ids` as HF's `decode`: ids with no token are skipped, special added tokens too when
  // skip_special_tokens; byte sequences that are not UTF-8 become U+FFFD.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  // One more than the largest id (model vocabulary and added tokens).
  int64_t vocab_size() const { return int64_t(id_bytes_.size()); }
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // Whether `id` is an added token marked special.
  bool is_special(int32_t id) const;

 private:
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special, normalized;
  };
  struct Merge {
    int32_t rank, id;
  };
  Tokenizer() = default;
  // Splits text on the added tokens whose `normalized` flag equals `normalized` (leftmost
  // longest match, as HF's Aho-Corasick pass); appends (piece, added id or -1) to *out.
  void split_added(std::string_view text, bool normalized,
                   std::vector<std::pair<std::string_view, int32_t>>* out) const;
  // BPE of one pre-tokenized word (already mapped to the byte-level alphabet).
  void bpe(std::string_view word, std::vector<int32_t>* ids) const;

  std::unordered_map<std::string, int32_t> vocab_;      // model.vocab (what BPE produces)
  std::unordered_map<std::string, int32_t> added_ids_;  // added_tokens' contents
  std::vector<std::string> id_bytes_;           // per id: what decode emits (byte-level decoded)
  std::vector<uint8_t> has_token_;              // per id: whether any token has it
  std::vector<uint8_t> special_;                // per id
  std::vector<AddedToken> added_;               // longest first
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) → rank, merged id
  std::optional<SplitPattern> split_;           // none: the whole text is one word
  std::optional<int32_t> unk_id_;
  bool ignore_merges_ = false;
};

}  // namespace fp8rl
