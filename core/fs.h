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
  // fsyncs everything under the staging folder and renames it to final_path (atomic on one
  // filesystem). AlreadyExists if final_path appeared meanwhile; FailedPrecondition if already
  // committed or moved from. On error the staging folder stays until destruction.
  absl::Status commit();

 private:
  StagedDir() = default;
  // Removes the staging folder unless committed; leaves the object committed (inert).
  void discard();
  std::string final_;
  std::string staging_;
  bool committed_ = true;
};

// Writes `contents` to `path` through a temporary file in the same folder (fsynced) and a rename,
// so readers see the old file or the new one, never a mix. The folder must exist.
absl::Status write_file_atomic(const std::string& path, std::string_view contents);
// The whole file; NotFound when it does not exist.
absl::StatusOr<std::string> read_file(const std::string& path);

}  // namespace fp8rl
