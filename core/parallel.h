// parallel_for: splits an index range over the machine's cores, for the CPU kernels (rows are
// independent, so chunks need no synchronisation). The workers persist across calls, so a call
// costs a wake-up, not a thread start.
#pragma once

#include <cstdint>
#include <functional>

namespace fp8rl {

// Calls fn(begin, end) on disjoint chunks that cover [0, n) exactly once, using up to
// std::thread::hardware_concurrency() threads (the calling thread works too) and returns when
// every chunk is done. Chunks hold at least `grain` indices, so n <= grain runs serially on the
// calling thread; callers pick grain so a chunk is worth a thread (tens of microseconds of work).
// A call from inside a chunk, or while another thread's call holds the pool, runs serially on the
// calling thread (same chunks' results: fn sees one chunk [0, n)). fn must not throw and must be
// safe to run concurrently on disjoint ranges.
void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn,
                  int64_t grain = 1);

// Elements one chunk should touch so that it is worth a thread.
inline constexpr int64_t kParallelGrainElems = 1 << 16;

// Work items per parallel chunk when one item touches `elems` elements.
inline int64_t grain_for(int64_t elems) {
  return elems >= kParallelGrainElems ? 1 : kParallelGrainElems / (elems > 0 ? elems : 1);
}

}  // namespace fp8rl
