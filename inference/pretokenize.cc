// Hand-written matchers of the byte-level BPE split regexes (inference/pretokenize.h).
#include "inference/pretokenize.h"

#include "inference/unicode.h"

namespace fp8rl {
namespace {

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// One matcher over the code points; each method returns the end of its alternative's match at
// i, or i when that alternative does not match.
struct Matcher {
  const std::vector<uint32_t>& c;
  size_t n;

  bool letter(size_t i) const { return i < n && unicode_class(c[i]) == UnicodeClass::kLetter; }
  bool number(size_t i) const { return i < n && unicode_class(c[i]) == UnicodeClass::kNumber; }
  bool space(size_t i) const { return i < n && unicode_is_space(c[i]); }
  bool newline(size_t i) const { return i < n && (c[i] == '\r' || c[i] == '\n'); }
  // [^\s\p{L}\p{N}]
  bool other(size_t i) const {
    return i < n && !unicode_is_space(c[i]) && unicode_class(c[i]) == UnicodeClass::kOther;
  }
  size_t run(size_t i, bool (Matcher::*pred)(size_t) const) const {
    while ((this->*pred)(i)) ++i;
    return i;
  }

  // 's|'t|'re|'ve|'m|'ll|'d, case-insensitively with Unicode case folding (ſ folds to s).
  size_t contraction(size_t i, bool fold) const {
    if (i + 1 >= n || c[i] != '\'') return i;
    const auto is = [&](size_t k, char ch) {
      if (k >= n) return false;
      const uint32_t x = c[k];
      if (x == uint32_t(ch)) return true;
      if (!fold) return false;
      return x == uint32_t(ch - 'a' + 'A') || (ch == 's' && x == 0x17F);
    };
    if (is(i + 1, 's') || is(i + 1, 't') || is(i + 1, 'm') || is(i + 1, 'd')) return i + 2;
    if ((is(i + 1, 'r') || is(i + 1, 'v')) && is(i + 2, 'e')) return i + 3;
    if (is(i + 1, 'l') && is(i + 2, 'l')) return i + 3;
    return i;
  }
  // ' ?' followed by a non-empty run of `pred`.
  size_t space_then(size_t i, bool (Matcher::*pred)(size_t) const) const {
    const size_t k = (c[i] == ' ' && (this->*pred)(i + 1)) ? i + 1 : i;
    const size_t e = run(k, pred);
    return e > k ? e : i;
  }
  // \s+(?!\S) then \s+: a whitespace run, leaving its last code point to the word that follows.
  size_t trailing_space(size_t i) const {
    const size_t e = run(i, &Matcher::space);
    if (e == i) return i;
    if (e == n || e - i == 1) return e;
    return e - 1;
  }

  size_t gpt2(size_t i) const {
    size_t e;
    if ((e = contraction(i, false)) > i) return e;
    if ((e = space_then(i, &Matcher::letter)) > i) return e;
    if ((e = space_then(i, &Matcher::number)) > i) return e;
    if ((e = space_then(i, &Matcher::other)) > i) return e;
    return trailing_space(i);
  }

  size_t qwen(size_t i, size_t max_digits) const {
    size_t e;
    if ((e = contraction(i, true)) > i) return e;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    const size_t k = (!newline(i) && !letter(i) && !number(i) && letter(i + 1)) ? i + 1 : i;
    if ((e = run(k, &Matcher::letter)) > k) return e;
    if (number(i)) {
      e = i;
      while (e - i < max_digits && number(e)) ++e;
      return e;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    if ((e = space_then(i, &Matcher::other)) > i) return run(e, &Matcher::newline);
    // \s*[\r\n]+: up to and including the last line break of the whitespace run.
    const size_t ws = run(i, &Matcher::space);
    for (size_t j = ws; j > i; --j) {
      if (newline(j - 1)) return j;
    }
    return trailing_space(i);
  }
};

}  // namespace

std::optional<SplitPattern> split_pattern_from_regex(std::string_view regex) {
  for (SplitPattern p : {SplitPattern::kGpt2, SplitPattern::kQwen2, SplitPattern::kLlama3}) {
    if (regex == split_pattern_regex(p)) return p;
  }
  return std::nullopt;
}

std::string_view split_pattern_regex(SplitPattern p) {
  switch (p) {
    case SplitPattern::kGpt2:
      return kGpt2Regex;
    case SplitPattern::kQwen2:
      return kQwen2Regex;
    case SplitPattern::kLlama3:
      return kLlama3Regex;
  }
  return {};
}

std::vector<std::pair<size_t, size_t>> split_words(SplitPattern p,
                                                   const std::vector<uint32_t>& cps) {
  const Matcher m{cps, cps.size()};
  std::vector<std::pair<size_t, size_t>> words;
  for (size_t i = 0; i < cps.size();) {
    size_t e = 0;
    switch (p) {
      case SplitPattern::kGpt2:
        e = m.gpt2(i);
        break;
      case SplitPattern::kQwen2:
        e = m.qwen(i, 1);
        break;
      case SplitPattern::kLlama3:
        e = m.qwen(i, 3);
        break;
    }
    words.emplace_back(i, e);
    i = e;
  }
  return words;
}

}  // namespace fp8rl
