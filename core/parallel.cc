// parallel_for over a process-wide pool of persistent workers: one job at a time, chunks claimed
// from an atomic counter by the workers and the calling thread alike.
#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace fp8rl {
namespace {

thread_local bool t_in_parallel = false;  // set inside a chunk: nested calls run serially

// One parallel_for call. Workers hold it by shared_ptr, so one that wakes late finds its chunk
// counter exhausted and never touches a later call's job.
struct Job {
  const std::function<void(int64_t, int64_t)>* fn;
  int64_t n, chunks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> pending;
  Job(const std::function<void(int64_t, int64_t)>* f, int64_t n_, int64_t c)
      : fn(f), n(n_), chunks(c), pending(c) {}
};

class WorkerPool {
 public:
  explicit WorkerPool(int64_t workers) {
    for (int64_t i = 0; i < workers; ++i) threads_.emplace_back([this] { worker(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  int64_t workers() const { return int64_t(threads_.size()); }

  // Runs the job on the pool; false when another thread's job holds it (run serially then).
  bool run(int64_t n, int64_t chunks, const std::function<void(int64_t, int64_t)>& fn) {
    std::unique_lock<std::mutex> job_lock(job_mu_, std::try_to_lock);
    if (!job_lock.owns_lock()) return false;
    auto job = std::make_shared<Job>(&fn, n, chunks);
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = job;
      ++generation_;
    }
    wake_.notify_all();
    work(*job);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return job->pending.load() == 0; });
    job_.reset();
    return true;
  }

 private:
  // Claims chunks until none is left; chunk c covers [c*n/chunks, (c+1)*n/chunks).
  void work(Job& job) {
    int64_t finished = 0;
    t_in_parallel = true;
    for (int64_t c; (c = job.next.fetch_add(1)) < job.chunks; ++finished)
      (*job.fn)(c * job.n / job.chunks, (c + 1) * job.n / job.chunks);
    t_in_parallel = false;
    if (finished > 0 && job.pending.fetch_sub(finished) == finished) {
      std::lock_guard<std::mutex> lock(mu_);
      done_.notify_all();
    }
  }

  void worker() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return shutdown_ || generation_ != seen; });
      if (shutdown_) return;
      seen = generation_;
      std::shared_ptr<Job> job = job_;
      lock.unlock();
      if (job) work(*job);
      lock.lock();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex job_mu_;  // one job at a time
  std::mutex mu_;      // guards job_, generation_, shutdown_
  std::condition_variable wake_, done_;
  bool shutdown_ = false;
  uint64_t generation_ = 0;
  std::shared_ptr<Job> job_;
};

WorkerPool& pool() {
  static WorkerPool p(std::max<int64_t>(1, std::thread::hardware_concurrency()) - 1);
  return p;
}

}  // namespace

void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn,
                  int64_t grain) {
  if (n <= 0) return;
  const int64_t threads = pool().workers() + 1;
  const int64_t chunks = std::min(threads, std::max<int64_t>(1, n / std::max<int64_t>(1, grain)));
  if (chunks == 1 || t_in_parallel || !pool().run(n, chunks, fn)) fn(0, n);
}

}  // namespace fp8rl
