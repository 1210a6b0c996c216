// Cached environment knob reads.
#include "core/env.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"

namespace fp8rl {
namespace {

std::mutex g_mu;
std::map<std::string, std::optional<std::string>, std::less<>>& cache() {
  static auto* m = new std::map<std::string, std::optional<std::string>, std::less<>>();
  return *m;
}

[[noreturn]] void bad_knob(std::string_view name, const std::string& value, const char* want) {
  std::fprintf(stderr, "fp8rl: environment variable %.*s=\"%s\" is not %s\n", int(name.size()),
               name.data(), value.c_str(), want);
  std::exit(2);
}

}  // namespace

std::optional<std::string> env_string(std::string_view name) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = cache().find(name);
  if (it != cache().end()) return it->second;
  const char* v = std::getenv(std::string(name).c_str());
  std::optional<std::string> value = v ? std::optional<std::string>(v) : std::nullopt;
  cache().emplace(std::string(name), value);
  return value;
}

bool env_bool(std::string_view name, bool default_value) {
  auto v = env_string(name);
  if (!v) return default_value;
  std::string s = absl::AsciiStrToLower(absl::StripAsciiWhitespace(*v));
  if (s == "1" || s == "true" || s == "yes" || s == "on") return true;
  if (s == "0" || s == "false" || s == "no" || s == "off" || s.empty()) return false;
  bad_knob(name, *v, "a boolean (0/1)");
}

double env_double(std::string_view name, double default_value) {
  auto v = env_string(name);
  if (!v) return default_value;
  double d;
  if (!absl::SimpleAtod(*v, &d)) bad_knob(name, *v, "a number");
  return d;
}

long env_long(std::string_view name, long default_value) {
  auto v = env_string(name);
  if (!v) return default_value;
  int64_t i;
  if (!absl::SimpleAtoi(*v, &i)) bad_knob(name, *v, "an integer");
  return long(i);
}

void env_reset_cache_for_testing() {
  std::lock_guard<std::mutex> lock(g_mu);
  cache().clear();
}

}  // namespace fp8rl
