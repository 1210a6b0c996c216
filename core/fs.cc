// Crash-safe files and folders: staged folders renamed into place, files replaced atomically.
#include "core/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status.h"

namespace fp8rl {
namespace {

namespace stdfs = std::filesystem;

// ".tmp-PID-N": unique among the writers of this process, and across processes by the pid.
std::string temp_suffix() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(".tmp-", ::getpid(), "-", counter.fetch_add(1));
}

absl::Status error_code_status(const std::error_code& ec, const std::string& what) {
  return absl::ErrnoToStatus(ec.value(), what);
}

// OK(true) when something (a file, folder or link) is at `path`, OK(false) when nothing is.
absl::StatusOr<bool> path_exists(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) return true;
  if (errno == ENOENT) return false;
  return absl::ErrnoToStatus(errno, absl::StrCat("stat ", path));
}

absl::Status fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path, " for fsync"));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return absl::ErrnoToStatus(err, absl::StrCat("fsync ", path));
  return absl::OkStatus();
}

// fsyncs every regular file and folder under `root`, then `root` itself.
absl::Status fsync_tree(const std::string& root) {
  std::error_code ec;
  stdfs::recursive_directory_iterator it(root, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    stdfs::file_status st = it->symlink_status(ec);
    if (ec) break;
    if (stdfs::is_regular_file(st) || stdfs::is_directory(st)) {
      FP8RL_RETURN_IF_ERROR(fsync_path(it->path().string(), stdfs::is_directory(st)));
    }
  }
  if (ec) return error_code_status(ec, absl::StrCat("list ", root));
  return fsync_path(root, /*directory=*/true);
}

absl::Status write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, absl::StrCat("write ", path));
    data.remove_prefix(size_t(n));
  }
  return absl::OkStatus();
}

// Writes, fsyncs and closes a new file at `path`; the file is left behind on error.
absl::Status write_new_file(const std::string& path, std::string_view contents) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("create ", path));
  absl::Status s = write_all(fd, contents, path);
  if (s.ok() && ::fsync(fd) != 0) s = absl::ErrnoToStatus(errno, absl::StrCat("fsync ", path));
  if (::close(fd) != 0 && s.ok()) s = absl::ErrnoToStatus(errno, absl::StrCat("close ", path));
  return s;
}

std::string parent_or_dot(const stdfs::path& p) {
  return p.has_parent_path() ? p.parent_path().string() : std::string(".");
}

}  // namespace

absl::StatusOr<StagedDir> StagedDir::create(const std::string& final_path) {
  stdfs::path final_dir(final_path);
  if (!final_dir.has_filename()) final_dir = final_dir.parent_path();  // "a/b/" names "a/b"
  std::string name = final_dir.filename().string();
  if (name.empty() || name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat("cannot stage folder \"", final_path, "\""));
  }
  FP8RL_ASSIGN_OR_RETURN(bool exists, path_exists(final_dir.string()));
  if (exists) return absl::AlreadyExistsError(absl::StrCat(final_dir.string(), " already exists"));

  std::string parent = parent_or_dot(final_dir);
  std::error_code ec;
  stdfs::create_directories(parent, ec);
  if (ec) return error_code_status(ec, absl::StrCat("create folder ", parent));

  StagedDir d;
  d.final_ = final_dir.string();
  while (true) {  // a leftover of a crashed process with our pid takes the next number
    d.staging_ = (stdfs::path(parent) / absl::StrCat(".", name, temp_suffix())).string();
    if (::mkdir(d.staging_.c_str(), 0755) == 0) break;
    if (errno != EEXIST) return absl::ErrnoToStatus(errno, absl::StrCat("mkdir ", d.staging_));
  }
  d.committed_ = false;
  return d;
}

StagedDir::StagedDir(StagedDir&& o) noexcept
    : final_(std::move(o.final_)), staging_(std::move(o.staging_)), committed_(o.committed_) {
  o.committed_ = true;
}

StagedDir& StagedDir::operator=(StagedDir&& o) noexcept {
  if (this != &o) {
    discard();
    final_ = std::move(o.final_);
    staging_ = std::move(o.staging_);
    committed_ = o.committed_;
    o.committed_ = true;
  }
  return *this;
}

StagedDir::~StagedDir() { discard(); }

void StagedDir::discard() {
  if (committed_) return;
  committed_ = true;
  std::error_code ec;
  stdfs::remove_all(staging_, ec);
  // A destructor cannot return the error; a leftover hidden folder is harmless but worth a line.
  if (ec) FP8RL_LOG_WARN("cannot remove staging folder {}: {}", staging_, ec.message());
}

absl::Status StagedDir::commit() {
  if (committed_) {
    return absl::FailedPreconditionError(
        absl::StrCat("staged folder for ", final_, " is already committed or moved from"));
  }
  FP8RL_RETURN_IF_ERROR(fsync_tree(staging_));
  FP8RL_ASSIGN_OR_RETURN(bool exists, path_exists(final_));
  if (exists) return absl::AlreadyExistsError(absl::StrCat(final_, " already exists"));
  if (::rename(staging_.c_str(), final_.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("rename ", staging_, " to ", final_));
  }
  committed_ = true;
  return fsync_path(parent_or_dot(stdfs::path(final_)), /*directory=*/true);
}

absl::Status write_file_atomic(const std::string& path, std::string_view contents) {
  stdfs::path target(path);
  if (!target.has_filename()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", path, "\" does not name a file"));
  }
  std::string dir = parent_or_dot(target);
  std::string temp =
      (stdfs::path(dir) / absl::StrCat(".", target.filename().string(), temp_suffix())).string();
  absl::Status s = write_new_file(temp, contents);
  if (s.ok() && ::rename(temp.c_str(), path.c_str()) != 0) {
    s = absl::ErrnoToStatus(errno, absl::StrCat("rename ", temp, " to ", path));
  }
  if (!s.ok()) {
    ::unlink(temp.c_str());
    return s;
  }
  return fsync_path(dir, /*directory=*/true);
}

absl::StatusOr<std::string> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, path);
  std::string out;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return absl::ErrnoToStatus(err, absl::StrCat("read ", path));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

}  // namespace fp8rl
