// The split regexes of byte-level BPE tokenizers (GPT-2's, Qwen2's, Llama 3's), implemented by
// hand over code points: std::regex has no \p{L} / \p{N}.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace fp8rl {

enum class SplitPattern {
  kGpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kQwen2,   // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}
            // | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kLlama3,  // Qwen2's with \p{N}{1,3}
};

// The pattern whose regex source (as tokenizer.json spells it) is `regex`; nullopt for any other.
std::optional<SplitPattern> split_pattern_from_regex(std::string_view regex);
// The regex source of `p` (the string split_pattern_from_regex recognises).
std::string_view split_pattern_regex(SplitPattern p);

// Splits `cps` into [begin, end) code-point ranges as the regex's successive leftmost-first
// matches with HF's "Isolated" behaviour; these patterns match every code point, so the ranges
// cover the input.
std::vector<std::pair<size_t, size_t>> split_words(SplitPattern p,
                                                   const std::vector<uint32_t>& cps);

}  // namespace fp8rl
