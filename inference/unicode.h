// UTF-8 and the few Unicode properties byte-level BPE pre-tokenization needs: letter (\p{L}),
// number (\p{N}) and white space (\s), looked up per code point.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fp8rl {

enum class UnicodeClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2 };

struct UnicodeRange {
  uint32_t lo, hi;  // inclusive
  UnicodeClass cls;
};

// Generated table (inference/unicode_table.cc), sorted and disjoint.
extern const UnicodeRange kUnicodeRanges[];
extern const int64_t kNumUnicodeRanges;

// General category L → kLetter, N → kNumber, anything else → kOther.
UnicodeClass unicode_class(uint32_t cp);
// Unicode White_Space (what Oniguruma's and Rust regex's \s match).
bool unicode_is_space(uint32_t cp);

// Code points of strict UTF-8 text; InvalidArgument naming the byte offset otherwise.
absl::StatusOr<std::vector<uint32_t>> utf8_decode(std::string_view s);
// Appends the UTF-8 encoding of `cp` (a scalar value) to *out.
void utf8_append(uint32_t cp, std::string* out);
// Bytes as text, each maximal invalid subsequence replaced by U+FFFD, as Rust's
// String::from_utf8_lossy (and so HF tokenizers' decode) does.
std::string utf8_lossy(std::string_view bytes);

}  // namespace fp8rl
