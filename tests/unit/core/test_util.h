// Test helpers for core/ file I/O: a scratch folder per test, raw file writes, error assertions.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "tests/catch.h"

namespace fp8rl::testing {

// A fresh folder under the system temp folder, removed with its contents when the test ends.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ =
        std::filesystem::temp_directory_path() / ("fp8rl-core-test-" + std::to_string(::getpid()) +
                                                  "-" + std::to_string(counter.fetch_add(1)));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Writes `bytes` verbatim to `path`.
inline void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  REQUIRE(out.good());
}

inline bool file_exists(const std::string& path) { return std::filesystem::exists(path); }

// Asserts `s` has `code` and a message containing every one of `parts`.
inline void check_error(const absl::Status& s, absl::StatusCode code,
                        std::initializer_list<std::string> parts) {
  INFO("status: " << s.ToString());
  CHECK(s.code() == code);
  std::string message(s.message());
  for (const std::string& part : parts) {
    INFO("expected in message: " << part);
    CHECK(message.find(part) != std::string::npos);
  }
}

}  // namespace fp8rl::testing
