// tokenizer.json parsing, byte-level BPE encode and decode (inference/tokenizer.h).
#include "inference/tokenizer.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <queue>

#include "absl/strings/str_cat.h"
#include "core/fs.h"
#include "core/status.h"
#include "inference/unicode.h"

namespace fp8rl {
namespace {

using json = nlohmann::json;

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for 256 + n.
struct ByteLevelAlphabet {
  std::array<std::string, 256> byte_to_char;
  std::unordered_map<uint32_t, uint8_t> char_to_byte;
  ByteLevelAlphabet() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + n++);
      utf8_append(cp, &byte_to_char[size_t(b)]);
      char_to_byte[cp] = uint8_t(b);
    }
  }
};

const ByteLevelAlphabet& alphabet() {
  static const ByteLevelAlphabet a;
  return a;
}

// HF's ByteLevel decoder on one token: its characters back to bytes, or the token's own UTF-8
// when a character is outside the alphabet (added tokens such as "<|im_start|>" map either way).
std::string byte_level_decode(const std::string& token) {
  const ByteLevelAlphabet& abc = alphabet();
  const absl::StatusOr<std::vector<uint32_t>> cps = utf8_decode(token);
  if (!cps.ok()) return token;
  std::string bytes;
  for (uint32_t cp : *cps) {
    const auto it = abc.char_to_byte.find(cp);
    if (it == abc.char_to_byte.end()) return token;
    bytes.push_back(char(it->second));
  }
  return bytes;
}

absl::Status field_error(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", field, ": ", what));
}
absl::Status unsupported(const std::string& field, const json& value) {
  return absl::UnimplementedError(
      absl::StrCat("tokenizer.json: ", field, ": unsupported value ", value.dump()));
}

// j[key] when it is present and not null.
const json* get(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

// The string at j[key] when j is an object holding one, else "" (never throws, unlike value()).
std::string string_at(const json* j, const char* key) {
  if (!j || !j->is_object()) return "";
  const json* v = get(*j, key);
  return v && v->is_string() ? v->get<std::string>() : "";
}

// j[key] as a boolean, `fallback` when absent or null.
absl::StatusOr<bool> bool_at(const json& j, const char* key, bool fallback,
                             const std::string& where) {
  const json* v = get(j, key);
  if (!v) return fallback;
  if (!v->is_boolean()) return field_error(where + "." + key, "must be a boolean");
  return v->get<bool>();
}

absl::Status expect_false(const json& j, const char* key, const std::string& where) {
  const json* v = get(j, key);
  if (v && !(v->is_boolean() && !v->get<bool>())) return unsupported(where + "." + key, *v);
  return absl::OkStatus();
}

// The ByteLevel pre-tokenizer; *use_regex receives its use_regex flag (default true).
absl::Status parse_byte_level(const json& p, const std::string& where, bool* use_regex) {
  const json* prefix = get(p, "add_prefix_space");
  if (!prefix || !prefix->is_boolean() || prefix->get<bool>())
    return unsupported(where + ".add_prefix_space", prefix ? *prefix : json(true));
  FP8RL_ASSIGN_OR_RETURN(*use_regex, bool_at(p, "use_regex", true, where));
  return absl::OkStatus();
}

absl::StatusOr<std::optional<SplitPattern>> parse_pre_tokenizer(const json* p) {
  const std::string where = "pre_tokenizer";
  if (!p || !p->is_object()) return field_error(where, "must be an object");
  const json* type = get(*p, "type");
  if (!type || !type->is_string()) return field_error(where + ".type", "must be a string");
  bool use_regex = true;
  if (*type == "ByteLevel") {
    FP8RL_RETURN_IF_ERROR(parse_byte_level(*p, where, &use_regex));
    return use_regex ? std::optional(SplitPattern::kGpt2) : std::nullopt;
  }
  if (*type != "Sequence") return unsupported(where + ".type", *type);
  const json* seq = get(*p, "pretokenizers");
  if (!seq || !seq->is_array() || seq->size() != 2 || string_at(&(*seq)[0], "type") != "Split" ||
      string_at(&(*seq)[1], "type") != "ByteLevel")
    return unsupported(where + ".pretokenizers (want [Split, ByteLevel])", seq ? *seq : json());
  const json& split = (*seq)[0];
  const std::string sw = where + ".pretokenizers[0]";
  const json* pattern = get(split, "pattern");
  const json* regex = pattern && pattern->is_object() ? get(*pattern, "Regex") : nullptr;
  if (!regex || !regex->is_string()) return field_error(sw + ".pattern.Regex", "must be a string");
  std::optional<SplitPattern> sp = split_pattern_from_regex(regex->get<std::string>());
  if (!sp) return unsupported(sw + ".pattern.Regex", *regex);
  if (string_at(&split, "behavior") != "Isolated")
    return unsupported(sw + ".behavior", split.contains("behavior") ? split["behavior"] : json());
  FP8RL_RETURN_IF_ERROR(expect_false(split, "invert", sw));
  FP8RL_RETURN_IF_ERROR(parse_byte_level((*seq)[1], where + ".pretokenizers[1]", &use_regex));
  if (use_regex) return unsupported(where + ".pretokenizers[1].use_regex", true);
  return sp;
}

// A merge entry: "a b" or ["a", "b"].
absl::StatusOr<std::pair<std::string, std::string>> parse_merge(const json& m, size_t i) {
  const std::string where = absl::StrCat("model.merges[", i, "]");
  if (m.is_string()) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ');
    if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
      return field_error(where, absl::StrCat("\"", s, "\" is not two tokens separated by a space"));
    return std::pair(s.substr(0, sp), s.substr(sp + 1));
  }
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
    return std::pair(m[0].get<std::string>(), m[1].get<std::string>());
  return field_error(where, "must be \"a b\" or [\"a\", \"b\"]");
}

}  // namespace

absl::StatusOr<Tokenizer> Tokenizer::from_json(const json& j) {
  if (!j.is_object()) return field_error("(top level)", "must be an object");
  Tokenizer t;
  if (const json* norm = get(j, "normalizer"); norm && string_at(norm, "type") != "NFC")
    return unsupported("normalizer", *norm);
  FP8RL_ASSIGN_OR_RETURN(t.split_, parse_pre_tokenizer(get(j, "pre_tokenizer")));
  if (const json* d = get(j, "decoder"); string_at(d, "type") != "ByteLevel")
    return unsupported("decoder", d ? *d : json());
  if (const json* pp = get(j, "post_processor"); pp && string_at(pp, "type") != "ByteLevel")
    return unsupported("post_processor", *pp);

  const json* model = get(j, "model");
  if (!model || !model->is_object()) return field_error("model", "must be an object");
  if (const json* type = get(*model, "type"); type && *type != "BPE")
    return unsupported("model.type", *type);
  if (const json* d = get(*model, "dropout"); d && !(d->is_number() && d->get<double>() == 0))
    return unsupported("model.dropout", *d);
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const json* v = get(*model, k); v && !(v->is_string() && v->get<std::string>().empty()))
      return unsupported(absl::StrCat("model.", k), *v);
  }
  FP8RL_RETURN_IF_ERROR(expect_false(*model, "byte_fallback", "model"));
  FP8RL_ASSIGN_OR_RETURN(t.ignore_merges_, bool_at(*model, "ignore_merges", false, "model"));
  const json* vocab = get(*model, "vocab");
  if (!vocab || !vocab->is_object()) return field_error("model.vocab", "must be an object");
  const auto add_id = [&](const std::string& token, int64_t id, const std::string& where) {
    if (id < 0 || id >= (int64_t(1) << 31) - 1)
      return field_error(where, absl::StrCat("id ", id, " out of range"));
    if (size_t(id) >= t.id_bytes_.size()) {
      t.id_bytes_.resize(size_t(id) + 1);
      t.has_token_.resize(size_t(id) + 1);
      t.special_.resize(size_t(id) + 1);
    }
    t.id_bytes_[size_t(id)] = byte_level_decode(token);
    t.has_token_[size_t(id)] = true;
    return absl::OkStatus();
  };
  for (const auto& [token, id] : vocab->items()) {
    if (!id.is_number_integer())
      return field_error(absl::StrCat("model.vocab[\"", token, "\"]"), "must be an integer id");
    FP8RL_RETURN_IF_ERROR(add_id(token, id.get<int64_t>(), "model.vocab[\"" + token + "\"]"));
    t.vocab_[token] = int32_t(id.get<int64_t>());
  }
  const json* merges = get(*model, "merges");
  if (merges && !merges->is_array()) return field_error("model.merges", "must be an array");
  for (size_t i = 0; merges && i < merges->size(); ++i) {
    FP8RL_ASSIGN_OR_RETURN(auto pair, parse_merge((*merges)[i], i));
    const auto a = t.vocab_.find(pair.first), b = t.vocab_.find(pair.second);
    const auto ab = t.vocab_.find(pair.first + pair.second);
    if (a == t.vocab_.end() || b == t.vocab_.end() || ab == t.vocab_.end())
      return field_error(absl::StrCat("model.merges[", i, "]"),
                         absl::StrCat("\"", pair.first, "\", \"", pair.second,
                                      "\" or their concatenation is not in model.vocab"));
    const uint64_t key = (uint64_t(uint32_t(a->second)) << 32) | uint32_t(b->second);
    t.merges_.emplace(key, Merge{int32_t(i), ab->second});  // the first (lowest) rank wins
  }
  if (const json* unk = get(*model, "unk_token")) {
    const auto it = unk->is_string() ? t.vocab_.find(unk->get<std::string>()) : t.vocab_.end();
    if (it == t.vocab_.end()) return field_error("model.unk_token", "not a token of model.vocab");
    t.unk_id_ = it->second;
  }

  const json* added = get(j, "added_tokens");
  if (added && !added->is_array()) return field_error("added_tokens", "must be an array");
  for (size_t i = 0; added && i < added->size(); ++i) {
    const json& a = (*added)[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!a.is_object()) return field_error(where, "must be an object");
    const json* id = get(a, "id");
    const json* content = get(a, "content");
    if (!id || !id->is_number_integer()) return field_error(where + ".id", "must be an integer");
    if (!content || !content->is_string() || content->get<std::string>().empty())
      return field_error(where + ".content", "must be a non-empty string");
    for (const char* k : {"lstrip", "rstrip", "single_word"})
      FP8RL_RETURN_IF_ERROR(expect_false(a, k, where));
    const std::string text = content->get<std::string>();
    FP8RL_RETURN_IF_ERROR(add_id(text, id->get<int64_t>(), where + ".id"));
    FP8RL_ASSIGN_OR_RETURN(const bool special, bool_at(a, "special", false, where));
    // HF's default for `normalized` is the opposite of `special`.
    FP8RL_ASSIGN_OR_RETURN(const bool normalized, bool_at(a, "normalized", !special, where));
    t.special_[size_t(id->get<int64_t>())] = special;
    t.added_ids_[text] = int32_t(id->get<int64_t>());
    t.added_.push_back({text, int32_t(id->get<int64_t>()), special, normalized});
  }
  std::stable_sort(t.added_.begin(), t.added_.end(), [](const AddedToken& x, const AddedToken& y) {
    return x.content.size() > y.content.size();
  });
  return t;
}

absl::StatusOr<Tokenizer> Tokenizer::load(const std::string& path) {
  const std::string file = std::filesystem::is_directory(path)
                               ? (std::filesystem::path(path) / "tokenizer.json").string()
                               : path;
  FP8RL_ASSIGN_OR_RETURN(std::string text, read_file(file));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON"));
  absl::StatusOr<Tokenizer> t = from_json(j);
  if (!t.ok()) return annotate(t.status(), file);
  return t;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  for (const auto* map : {&added_ids_, &vocab_}) {
    if (const auto it = map->find(std::string(token)); it != map->end()) return it->second;
  }
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < special_.size() && special_[size_t(id)];
}

void Tokenizer::split_added(std::string_view text, bool normalized,
                            std::vector<std::pair<std::string_view, int32_t>>* out) const {
  size_t start = 0;  // of the pending plain piece
  for (size_t i = 0; i < text.size();) {
    const AddedToken* hit = nullptr;
    for (const AddedToken& a : added_) {  // longest first: the first hit is the longest
      if (a.normalized == normalized && text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    if (i > start) out->emplace_back(text.substr(start, i - start), -1);
    out->emplace_back(text.substr(i, hit->content.size()), hit->id);
    i += hit->content.size();
    start = i;
  }
  if (start < text.size()) out->emplace_back(text.substr(start), -1);
}

void Tokenizer::bpe(std::string_view word, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    if (const auto it = vocab_.find(std::string(word)); it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // Symbols as a linked list over the word's characters; HF's word.rs merge order: the lowest
  // rank first, the leftmost among equal ranks.
  struct Symbol {
    int32_t id;
    int prev, next;
    bool alive;
  };
  std::vector<Symbol> sym;
  for (size_t i = 0; i < word.size();) {
    size_t len = 1;
    while (i + len < word.size() && (uint8_t(word[i + len]) & 0xC0) == 0x80) ++len;
    const auto it = vocab_.find(std::string(word.substr(i, len)));
    i += len;
    int32_t id;
    if (it != vocab_.end()) {
      id = it->second;
    } else if (unk_id_) {  // (HF drops the character when there is no unk_token)
      id = *unk_id_;
    } else {
      continue;
    }
    sym.push_back({id, int(sym.size()) - 1, int(sym.size()) + 1, true});
  }
  if (sym.empty()) return;
  sym.back().next = -1;
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t left, right;  // the ids it was made from, to detect stale entries
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto push = [&](int pos) {
    if (pos < 0 || sym[size_t(pos)].next < 0) return;
    const int nx = sym[size_t(pos)].next;
    const uint64_t key =
        (uint64_t(uint32_t(sym[size_t(pos)].id)) << 32) | uint32_t(sym[size_t(nx)].id);
    if (const auto it = merges_.find(key); it != merges_.end())
      queue.push({it->second.rank, pos, sym[size_t(pos)].id, sym[size_t(nx)].id});
  };
  for (int i = 0; i + 1 < int(sym.size()); ++i) push(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& s = sym[size_t(c.pos)];
    if (!s.alive || s.next < 0 || s.id != c.left || sym[size_t(s.next)].id != c.right) continue;
    const uint64_t key = (uint64_t(uint32_t(c.left)) << 32) | uint32_t(c.right);
    Symbol& right = sym[size_t(s.next)];
    s.id = merges_.at(key).id;
    right.alive = false;
    s.next = right.next;
    if (s.next >= 0) sym[size_t(s.next)].prev = c.pos;
    if (s.prev >= 0) push(s.prev);
    push(c.pos);
  }
  for (const Symbol& s : sym) {
    if (s.alive) ids->push_back(s.id);
  }
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::encode(std::string_view text) const {
  std::vector<std::pair<std::string_view, int32_t>> raw, pieces;
  split_added(text, /*normalized=*/false, &raw);
  for (const auto& [piece, id] : raw) {
    if (id >= 0) {
      pieces.emplace_back(piece, id);
    } else {
      split_added(piece, /*normalized=*/true, &pieces);
    }
  }
  const ByteLevelAlphabet& abc = alphabet();
  std::vector<int32_t> ids;
  std::string word;
  for (const auto& [piece, id] : pieces) {
    if (id >= 0) {
      ids.push_back(id);
      continue;
    }
    FP8RL_ASSIGN_OR_RETURN(std::vector<uint32_t> cps, utf8_decode(piece));
    std::vector<std::pair<size_t, size_t>> words;
    if (split_) {
      words = split_words(*split_, cps);
    } else {
      words.emplace_back(0, cps.size());
    }
    for (const auto& [b, e] : words) {
      word.clear();
      std::string bytes;
      for (size_t k = b; k < e; ++k) utf8_append(cps[k], &bytes);
      for (char ch : bytes) word += abc.byte_to_char[uint8_t(ch)];
      bpe(word, &ids);
    }
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= id_bytes_.size() || !has_token_[size_t(id)]) continue;
    if (skip_special_tokens && special_[size_t(id)]) continue;
    bytes += id_bytes_[size_t(id)];
  }
  return utf8_lossy(bytes);
}

}  // namespace fp8rl
