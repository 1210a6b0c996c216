// Files and folders written so that a crash never leaves a half-written result looking complete.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace fp8rl {

// A folder built in a hidden staging sibling (".NAME.tmp-PID-N") and renamed into place by
// commit(). Destroying it uncommitted removes the staging folder. Move-only.
class StagedDir {
 public:
  // AlreadyExists when `final_path` exists; the parent folder is created if needed.
  static absl::StatusOr<StagedDir> create(const std::string& final_path);
  StagedDir(StagedDir&&) noexcept;
  StagedDir& operator=(StagedDir&&) noexcept;
  ~StagedDir();

  // Where to write now.
  const std::string& path() const { return staging_; }
  const std::string& final_path() const { return final_; }
  // fsyncs and renames the staging folder to final_path (atomic on one filesystem).
  absl::Status commit();

 private:
  StagedDir() = default;
  std::string final_;
  std::string staging_;
  bool committed_ = true;
};

// Writes `contents` to `path` through a temporary file in the same folder and a rename.
absl::Status write_file_atomic(const std::string& path, std::string_view contents);
absl::StatusOr<std::string> read_file(const std::string& path);

}  // namespace fp8rl
