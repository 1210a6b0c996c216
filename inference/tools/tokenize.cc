// fp8rl_tokenize: encodes and decodes JSON lines with a tokenizer.json, for
// tests/interop/test_tokenizer.py to compare with HF tokenizers. A test tool, not a user one.
//
// Each stdin line is a JSON string (text: prints {"ids": [...]}) or a JSON array of ids (prints
// {"text": ..., "text_skip_special": ...}). Errors print {"error": "..."} and go on.
#include <CLI/CLI.hpp>
#include <iostream>
#include <string>

#include "inference/tokenizer.h"

namespace fp8rl {
namespace {

nlohmann::json handle(const Tokenizer& tok, const std::string& line) {
  const nlohmann::json in = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (in.is_string()) {
    absl::StatusOr<std::vector<int32_t>> ids = tok.encode(in.get<std::string>());
    if (!ids.ok()) return {{"error", std::string(ids.status().message())}};
    return {{"ids", *ids}};
  }
  if (in.is_array()) {
    std::vector<int32_t> ids;
    for (const auto& v : in) {
      if (!v.is_number_integer()) return {{"error", "ids must be integers"}};
      ids.push_back(v.get<int32_t>());
    }
    return {{"text", tok.decode(ids, false)}, {"text_skip_special", tok.decode(ids, true)}};
  }
  return {{"error", "a line must be a JSON string or an array of ids"}};
}

}  // namespace
}  // namespace fp8rl

int main(int argc, char** argv) {
  CLI::App app{"Encode/decode JSON lines with a tokenizer.json (test tool)"};
  std::string path;
  app.add_option("tokenizer", path, "tokenizer.json or a folder holding one")->required();
  CLI11_PARSE(app, argc, argv);
  absl::StatusOr<fp8rl::Tokenizer> tok = fp8rl::Tokenizer::load(path);
  if (!tok.ok()) {
    std::cerr << tok.status().ToString() << "\n";
    return 1;
  }
  std::string line;
  while (std::getline(std::cin, line)) std::cout << fp8rl::handle(*tok, line).dump() << "\n";
  return 0;
}
