// UTF-8 coding and code-point classes (inference/unicode.h).
#include "inference/unicode.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace fp8rl {
namespace {

// Length of the valid UTF-8 sequence at s[i] and its code point, or 0 when it is invalid; for
// an invalid one, *bad is the length of its maximal valid prefix (at least 1), which
// from_utf8_lossy replaces as a unit.
int utf8_sequence(std::string_view s, size_t i, uint32_t* cp, size_t* bad) {
  const auto b = [&](size_t k) { return uint8_t(s[k]); };
  const uint8_t c = b(i);
  *bad = 1;
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  int len;
  uint8_t lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  uint32_t v = c & (0xFF >> (len + 1));
  for (int k = 1; k < len; ++k) {
    if (i + k >= s.size()) return 0;
    const uint8_t x = b(i + k);
    if (k == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xBF)) return 0;
    v = (v << 6) | (x & 0x3F);
    *bad = size_t(k) + 1;
  }
  *cp = v;
  return len;
}

}  // namespace

UnicodeClass unicode_class(uint32_t cp) {
  const UnicodeRange* end = kUnicodeRanges + kNumUnicodeRanges;
  const UnicodeRange* r = std::upper_bound(
      kUnicodeRanges, end, cp, [](uint32_t v, const UnicodeRange& x) { return v < x.lo; });
  if (r == kUnicodeRanges) return UnicodeClass::kOther;
  --r;
  return cp <= r->hi ? r->cls : UnicodeClass::kOther;
}

bool unicode_is_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

absl::StatusOr<std::vector<uint32_t>> utf8_decode(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    size_t bad;
    const int len = utf8_sequence(s, i, &cp, &bad);
    if (len == 0) return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 at byte ", i));
    out.push_back(cp);
    i += size_t(len);
  }
  return out;
}

void utf8_append(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(char(cp));
  } else if (cp < 0x800) {
    out->push_back(char(0xC0 | (cp >> 6)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(char(0xE0 | (cp >> 12)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(char(0xF0 | (cp >> 18)));
    out->push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    uint32_t cp;
    size_t bad;
    const int len = utf8_sequence(bytes, i, &cp, &bad);
    if (len > 0) {
      out.append(bytes.substr(i, size_t(len)));
      i += size_t(len);
    } else {
      utf8_append(0xFFFD, &out);
      i += bad;
    }
  }
  return out;
}

}  // namespace fp8rl
