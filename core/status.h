// Status plumbing: absl::Status everywhere, plus the few macros absl 20220623 lacks.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace fp8rl {

// Prefixes `context: ` to a non-OK status, keeping its code. OK passes through.
inline absl::Status annotate(const absl::Status& s, std::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(std::string(context), ": ", s.message()));
}

// For C ABIs (ctypes test libraries): copies the message of `s` into err[0..err_len) (truncated,
// NUL-terminated; err may be null) and returns the absl status code (0 for OK).
inline int status_to_c(const absl::Status& s, char* err, long long err_len) {
  if (err != nullptr && err_len > 0) {
    const std::string msg(s.message());
    const size_t n = std::min(msg.size(), size_t(err_len - 1));
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
  }
  return int(s.code());
}

}  // namespace fp8rl

#define FP8RL_CONCAT_INNER_(a, b) a##b
#define FP8RL_CONCAT_(a, b) FP8RL_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function when it is not OK.
#define FP8RL_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::absl::Status fp8rl_status_ = (expr);         \
    if (!fp8rl_status_.ok()) return fp8rl_status_; \
  } while (0)

// `FP8RL_ASSIGN_OR_RETURN(auto x, MakeX());` unwraps a StatusOr or returns its error.
#define FP8RL_ASSIGN_OR_RETURN(lhs, expr) \
  FP8RL_ASSIGN_OR_RETURN_IMPL_(FP8RL_CONCAT_(fp8rl_statusor_, __LINE__), lhs, expr)
#define FP8RL_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

// Returns InvalidArgument naming the failed condition when `cond` is false.
#define FP8RL_REQUIRE(cond, ...)                                                                 \
  do {                                                                                           \
    if (!(cond))                                                                                 \
      return ::absl::InvalidArgumentError(::absl::StrCat(__VA_ARGS__, " (requires " #cond ")")); \
  } while (0)

// Aborts with file and line. Only for invariants whose failure is a bug, in tests and tools.
#define FP8RL_CHECK(cond)                                                                 \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: FP8RL_CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

// Aborts when a status is not OK; for tests and tools.
#define FP8RL_CHECK_OK(expr)                                             \
  do {                                                                   \
    ::absl::Status fp8rl_status_ = (expr);                               \
    if (!fp8rl_status_.ok()) {                                           \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, \
                   fp8rl_status_.ToString().c_str());                    \
      std::abort();                                                      \
    }                                                                    \
  } while (0)
