// parallel_for covers every index exactly once, whether it runs on the pool, nested inside a
// chunk, or concurrently from several threads (one of which then runs serially).
#include "core/parallel.h"

#include <atomic>
#include <thread>
#include <vector>

#include "tests/catch.h"

namespace fp8rl {
namespace {

void check_cover(int64_t n, int64_t grain) {
  // Catch2 assertions are not thread-safe: chunks only count what they see.
  std::vector<std::atomic<int>> hits(size_t(std::max<int64_t>(n, 0)));
  std::atomic<int> bad_ranges{0};
  parallel_for(
      n,
      [&](int64_t b, int64_t e) {
        if (b < 0 || b >= e || e > n) {
          bad_ranges.fetch_add(1);
          return;
        }
        for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
      },
      grain);
  REQUIRE(bad_ranges.load() == 0);
  for (auto& h : hits) REQUIRE(h.load() == 1);
}

TEST_CASE("parallel_for covers [0, n) exactly once", "[parallel]") {
  for (int64_t n : {0, 1, 2, 3, 7, 64, 1000, 100003})
    for (int64_t grain : {1, 3, 1 << 20}) check_cover(n, grain);
}

TEST_CASE("nested parallel_for runs and covers", "[parallel]") {
  std::atomic<int64_t> total{0};
  parallel_for(8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      parallel_for(100, [&](int64_t b2, int64_t e2) { total.fetch_add(e2 - b2); });
  });
  CHECK(total.load() == 800);
}

TEST_CASE("concurrent callers each cover their range", "[parallel]") {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int rep = 0; rep < 200; ++rep) {
        std::vector<std::atomic<int>> hits(513);
        parallel_for(513, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
        });
        for (auto& h : hits)
          if (h.load() != 1) failures.fetch_add(1);
      }
    });
  for (auto& th : threads) th.join();
  CHECK(failures.load() == 0);
}

}  // namespace
}  // namespace fp8rl
