// parallel_for over std::thread: one contiguous chunk per thread.
#include "core/parallel.h"

#include <algorithm>
#include <thread>
#include <vector>

namespace fp8rl {

void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn,
                  int64_t grain) {
  if (n <= 0) return;
  const int64_t hw = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t chunks = std::min(hw, std::max<int64_t>(1, n / std::max<int64_t>(1, grain)));
  if (chunks == 1) {
    fn(0, n);
    return;
  }
  // Chunk c covers [c*n/chunks, (c+1)*n/chunks): sizes differ by at most one.
  std::vector<std::thread> threads;
  threads.reserve(size_t(chunks - 1));
  for (int64_t c = 1; c < chunks; ++c) {
    threads.emplace_back([&fn, c, n, chunks] { fn(c * n / chunks, (c + 1) * n / chunks); });
  }
  fn(0, n / chunks);
  for (auto& t : threads) t.join();
}

}  // namespace fp8rl
