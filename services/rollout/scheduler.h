// The rollout server's scheduler: one thread owns the model, the tokenizer and the Engine. HTTP
// handlers submit prompts and wait on their tickets (or stream from them); between engine steps
// the thread admits queued prompts within the --max-running-requests / --max-total-tokens
// budget (continuous batching), carries out aborts and pauses, and swaps in new weights.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/engine.h"
#include "inference/tokenizer.h"
#include "model/decoder.h"
#include "services/rollout/rollout_metrics.h"
#include "services/rollout/sglang_protocol.h"

namespace fp8rl {

using SteadyClock = std::chrono::steady_clock;

// SGLang's /pause_generation modes. kAbort aborts what runs and what waits; kRetract and
// kInPlace keep running sequences (with their KV caches: fp8rl never retracts) until
// /continue_generation.
enum class PauseMode { kAbort, kRetract, kInPlace };

struct SchedulerOptions {
  int64_t max_running_requests = 64;  // sequences decoding at once
  // KV tokens a batch may reserve: every admitted sequence reserves prompt + max_new_tokens, so a
  // running sequence never waits for memory. 0: max_running_requests * the context length.
  int64_t max_total_tokens = 0;
  std::string weight_version = "default";
};

// One prompt in flight: written by the scheduler thread, read by the handler that submitted it,
// both under the scheduler's lock (Scheduler::wait copies it out).
struct Ticket {
  PromptState state;
  uint64_t updates = 0;  // bumped at every change of `state`
  std::condition_variable changed;
};

class Scheduler {
 public:
  // Owns the model, the backend that runs it (null: the CPU decoder itself; else one built
  // over `model`, e.g. the CUDA engine) and the tokenizer (none: skip_tokenizer_init). Call
  // start() to run.
  Scheduler(std::unique_ptr<Decoder> model, std::unique_ptr<KvModel> backend,
            std::optional<Tokenizer> tokenizer, const EngineOptions& engine,
            const SchedulerOptions& options, RolloutMetrics* metrics);
  ~Scheduler();  // stop()s
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void start();
  // Aborts what is queued or running (their tickets finish with an abort reason), releases every
  // waiter and joins the thread. Idempotent.
  void stop();

  // Immutable while the scheduler lives; safe from any thread.
  const ModelConfig& config() const { return model_->config(); }
  const DecoderOptions& decoder_options() const { return model_->options(); }
  const Tokenizer* tokenizer() const { return tokenizer_ ? &*tokenizer_ : nullptr; }
  const RequestLimits& limits() const { return engine_.limits(); }
  int64_t max_total_tokens() const { return max_total_tokens_; }

  // check_request plus the KV budget: a prompt whose samples alone need more than
  // max_total_tokens can never be admitted. InvalidArgument naming the limit.
  absl::Status check(const GenerateRequest& request) const;
  // Queues a checked prompt. `created` is when its HTTP request arrived (for latency metrics);
  // `stream` tickets get every token as it is generated, others only the final state.
  std::shared_ptr<Ticket> submit(const PromptInput& prompt, bool stream, bool log_metrics,
                                 SteadyClock::time_point created);
  // Waits until `ticket` changed after *seen, at most `timeout`; copies its state into *out and
  // advances *seen. Returns whether it changed.
  bool wait(Ticket& ticket, uint64_t* seen, std::chrono::milliseconds timeout, PromptState* out);
  // The client of `ticket` went away: abort it (SGLang aborts disconnected requests).
  void cancel(const Ticket& ticket);

  // /abort_request: every prompt with a sample whose rid starts with `rid` (SGLang's prefix
  // match; an empty rid matches nothing), or everything with abort_all.
  void abort(const std::string& rid, bool abort_all);
  // /pause_generation: returns once no step runs; with kAbort once the aborted requests have
  // finished.
  void pause(PauseMode mode);
  // /continue_generation.
  void resume();
  // /flush_cache: fp8rl keeps no prefix cache, so this only reports SGLang's condition: true when
  // nothing waits or runs.
  bool flush_cache();
  // Swaps in `params` (shaped like the running model's: the caller checked) between steps: at
  // once when paused, else when the running requests have finished (new ones wait meanwhile, as
  // behind SGLang's model-update writer lock). abort_all aborts everything first. Returns the
  // number of paused sequences that continue with the new weights; Unavailable when stopping.
  absl::StatusOr<int64_t> update_weights(DecoderParams params,
                                         std::optional<std::string> weight_version, bool abort_all);
  // SGLang's health check: true when any engine step produces tokens within `timeout` after the
  // call (a 1-token probe runs when nothing else does); false when paused or stuck.
  bool health_check(std::chrono::milliseconds timeout);
  // Waits until nothing is queued or running, at most until `deadline`; true when idle.
  bool wait_idle(SteadyClock::time_point deadline);

  SchedulerLoad load() const;
  std::string weight_version() const;

 private:
  struct Entry;
  struct PendingUpdate {
    DecoderParams params;
    std::optional<std::string> weight_version;
    bool applied = false;
    int64_t paused_sequences = 0;
  };

  void loop();
  bool has_work_locked() const;
  void admit_locked();
  void apply_update_locked();
  // Queued matches finish at once ("Abort before prefill"); running ones go to the engine.
  void abort_matching_locked(const std::function<bool(const Entry&)>& match);
  // Finishes the unfinished samples of an entry the engine does not hold with an abort reason.
  void abort_entry_locked(Entry& e, const std::string& message);
  // Tokens of a running or finished sequence: latency metrics, and stream tickets' state.
  void record_tokens_locked(Entry& e, const SequenceOutput& o, SteadyClock::time_point now);
  void publish_locked(std::vector<SequenceOutput> finished, bool stepped);
  void notify_locked(Ticket& t);

  std::unique_ptr<Decoder> model_;
  std::unique_ptr<KvModel> backend_;  // runs model_'s weights
  std::optional<Tokenizer> tokenizer_;
  Engine engine_;  // refers to backend_ and tokenizer_
  const SchedulerOptions options_;
  const int64_t max_total_tokens_;
  RolloutMetrics* const metrics_;  // may be null

  mutable std::mutex mu_;
  std::condition_variable work_;     // the loop sleeps here
  std::condition_variable settled_;  // pause, update, health and idle waiters
  bool started_ = false, stop_ = false, paused_ = false;
  bool stepping_ = false;  // the loop runs the model (without the lock)
  std::deque<std::shared_ptr<Entry>> queue_;
  std::map<int64_t, std::shared_ptr<Entry>> running_;  // engine request id → entry
  std::vector<int64_t> engine_aborts_;                 // for the loop to pass to the engine
  std::shared_ptr<PendingUpdate> update_;
  std::string weight_version_;
  int64_t queued_seqs_ = 0, running_seqs_ = 0, reserved_tokens_ = 0, kv_tokens_ = 0;
  uint64_t stepped_ = 0;  // engine steps that produced tokens (health checks wait for one)
  int64_t probes_waiting_ = 0;
  int64_t probe_id_ = -1;  // the engine request of a health probe in flight
  int64_t window_tokens_ = 0;
  SteadyClock::time_point window_start_;
  double gen_throughput_ = 0;
  std::thread thread_;
};

}  // namespace fp8rl
