// Staged folders and atomic file writes: commit, cleanup of what was never committed, errors.
#include "core/fs.h"

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/catch.h"
#include "tests/unit/core/test_util.h"

using namespace fp8rl;
using fp8rl::testing::check_error;
using fp8rl::testing::file_exists;
using fp8rl::testing::TempDir;
using fp8rl::testing::write_raw;
namespace stdfs = std::filesystem;

namespace {

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : stdfs::directory_iterator(dir)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("write_file_atomic and read_file", "[fs]") {
  TempDir dir;
  std::string path = dir.file("a.json");
  std::string binary("x\0y\xff", 4);
  REQUIRE(write_file_atomic(path, binary).ok());
  CHECK(*read_file(path) == binary);
  REQUIRE(write_file_atomic(path, "second").ok());  // replaces
  CHECK(*read_file(path) == "second");
  REQUIRE(write_file_atomic(path, "").ok());
  CHECK(read_file(path)->empty());
  CHECK(entries(dir.path()) == std::vector<std::string>{"a.json"});  // no temp files left

  std::string large(3 << 16, 'z');  // more than one read() chunk
  REQUIRE(write_file_atomic(path, large).ok());
  CHECK(*read_file(path) == large);
}

TEST_CASE("write_file_atomic and read_file errors", "[fs]") {
  TempDir dir;
  check_error(read_file(dir.file("absent")).status(), absl::StatusCode::kNotFound,
              {dir.file("absent")});
  CHECK(!read_file(dir.path()).ok());  // a folder
  check_error(write_file_atomic(dir.file("no/such/x"), "a"), absl::StatusCode::kNotFound,
              {"no/such"});
  CHECK(!write_file_atomic(dir.path() + "/", "a").ok());
  stdfs::create_directories(dir.file("taken"));
  CHECK(!write_file_atomic(dir.file("taken"), "a").ok());  // rename onto a folder fails
  CHECK(entries(dir.path()) == std::vector<std::string>{"taken"});
}

TEST_CASE("StagedDir commit", "[fs]") {
  TempDir dir;
  std::string final_path = dir.file("ckpt/iter_0000001");
  auto staged = StagedDir::create(final_path);
  REQUIRE(staged.ok());
  CHECK(staged->final_path() == final_path);
  std::string name = stdfs::path(staged->path()).filename();
  CHECK(name.rfind(".iter_0000001.tmp-", 0) == 0);
  CHECK(stdfs::path(staged->path()).parent_path() == stdfs::path(dir.file("ckpt")));
  CHECK(stdfs::is_directory(staged->path()));
  CHECK(!file_exists(final_path));

  stdfs::create_directories(staged->path() + "/sub");
  write_raw(staged->path() + "/sub/a.bin", "abc");
  write_raw(staged->path() + "/b.txt", "b");
  REQUIRE(staged->commit().ok());
  CHECK(*read_file(final_path + "/sub/a.bin") == "abc");
  CHECK(!file_exists(staged->path()));
  CHECK(entries(dir.file("ckpt")) == std::vector<std::string>{"iter_0000001"});
  check_error(staged->commit(), absl::StatusCode::kFailedPrecondition, {final_path});

  check_error(StagedDir::create(final_path).status(), absl::StatusCode::kAlreadyExists,
              {final_path});
}

TEST_CASE("StagedDir removes what it never committed", "[fs]") {
  TempDir dir;
  std::string final_path = dir.file("out");
  std::string staging;
  {
    auto staged = StagedDir::create(final_path);
    REQUIRE(staged.ok());
    staging = staged->path();
    stdfs::create_directories(staging + "/deep/er");
    write_raw(staging + "/deep/er/x", "x");
  }
  CHECK(!file_exists(staging));
  CHECK(!file_exists(final_path));
  CHECK(entries(dir.path()).empty());
}

TEST_CASE("StagedDir moves", "[fs]") {
  TempDir dir;
  auto first = StagedDir::create(dir.file("one"));
  auto second = StagedDir::create(dir.file("two"));
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  std::string first_staging = first->path();
  CHECK(first_staging != second->path());

  StagedDir moved(std::move(*first));
  CHECK(moved.path() == first_staging);
  check_error(first->commit(), absl::StatusCode::kFailedPrecondition, {});  // moved from
  CHECK(file_exists(first_staging));

  moved = std::move(*second);  // discards "one"'s staging folder
  CHECK(!file_exists(first_staging));
  REQUIRE(moved.commit().ok());
  CHECK(stdfs::is_directory(dir.file("two")));
  CHECK(!file_exists(dir.file("one")));
}

TEST_CASE("StagedDir edge cases", "[fs]") {
  TempDir dir;
  auto trailing = StagedDir::create(dir.file("x") + "/");
  REQUIRE(trailing.ok());
  CHECK(trailing->final_path() == dir.file("x"));

  auto raced = StagedDir::create(dir.file("raced"));
  REQUIRE(raced.ok());
  stdfs::create_directories(dir.file("raced/other"));  // someone else got there first
  check_error(raced->commit(), absl::StatusCode::kAlreadyExists, {dir.file("raced")});
  CHECK(file_exists(dir.file("raced/other")));

  write_raw(dir.file("file"), "f");
  check_error(StagedDir::create(dir.file("file")).status(), absl::StatusCode::kAlreadyExists, {});
  CHECK(!StagedDir::create("/").ok());
  CHECK(!StagedDir::create(dir.file("..")).ok());
}
