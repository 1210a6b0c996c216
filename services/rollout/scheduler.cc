// The scheduler thread and its commands (services/rollout/scheduler.h).
#include "services/rollout/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status.h"
#include "inference/cpu_kv_model.h"

namespace fp8rl {
namespace {

constexpr const char* kAborted = "Aborted";
constexpr const char* kAbortedInQueue = "Abort before prefill";
constexpr const char* kShuttingDown = "The server is shutting down.";

double seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

// A prompt from submission to its last sample's finish (guarded by mu_).
struct Scheduler::Entry {
  std::shared_ptr<Ticket> ticket;
  GenerateRequest request;  // moved into the engine at admission
  std::vector<std::string> rids;
  bool stream = false;
  bool log_metrics = true;
  SteadyClock::time_point created;
  int64_t n = 1;
  int64_t tokens_per_sample = 0;  // KV tokens reserved per sample: prompt + max_new_tokens
  int64_t unfinished = 0;         // samples
  std::vector<size_t> seen;       // per sample: tokens already recorded
  std::vector<SteadyClock::time_point> last_token;
};

Scheduler::Scheduler(std::unique_ptr<Decoder> model, std::unique_ptr<KvModel> backend,
                     std::optional<Tokenizer> tokenizer, const EngineOptions& engine,
                     const SchedulerOptions& options, RolloutMetrics* metrics)
    : model_(std::move(model)),
      backend_(backend ? std::move(backend) : std::make_unique<CpuKvModel>(model_.get())),
      tokenizer_(std::move(tokenizer)),
      engine_(backend_.get(), tokenizer_ ? &*tokenizer_ : nullptr, engine),
      options_(options),
      max_total_tokens_(options.max_total_tokens > 0
                            ? options.max_total_tokens
                            : options.max_running_requests * engine_.limits().context_length),
      metrics_(metrics),
      weight_version_(options.weight_version) {}

Scheduler::~Scheduler() { stop(); }

void Scheduler::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) return;
  started_ = true;
  window_start_ = SteadyClock::now();
  thread_ = std::thread([this] { loop(); });
}

void Scheduler::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    work_.notify_all();
    settled_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  // Without a loop (never started, or it has exited), nothing may wait forever on a ticket.
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& e : std::exchange(queue_, {})) abort_entry_locked(*e, kShuttingDown);
  for (auto& [id, e] : std::exchange(running_, {})) abort_entry_locked(*e, kShuttingDown);
  queued_seqs_ = running_seqs_ = reserved_tokens_ = 0;
  settled_.notify_all();
}

absl::Status Scheduler::check(const GenerateRequest& request) const {
  FP8RL_RETURN_IF_ERROR(check_request(request, engine_.limits()));
  const int64_t per_sample = int64_t(request.input_ids.size()) + request.params.max_new_tokens;
  const int64_t need = request.params.n * per_sample;
  if (need > max_total_tokens_)
    return absl::InvalidArgumentError(absl::StrCat(
        "The request needs ", need, " KV tokens (n=", request.params.n, " x (",
        request.input_ids.size(), " prompt tokens + max_new_tokens ", request.params.max_new_tokens,
        ")), more than the server's max_total_num_tokens (", max_total_tokens_, ")."));
  return absl::OkStatus();
}

std::shared_ptr<Ticket> Scheduler::submit(const PromptInput& prompt, bool stream, bool log_metrics,
                                          SteadyClock::time_point created) {
  auto ticket = std::make_shared<Ticket>();
  auto e = std::make_shared<Entry>();
  e->ticket = ticket;
  e->request = prompt.request;
  e->rids = prompt.rids;
  e->stream = stream;
  e->log_metrics = log_metrics;
  e->created = created;
  e->n = prompt.request.params.n;
  e->tokens_per_sample =
      int64_t(prompt.request.input_ids.size()) + prompt.request.params.max_new_tokens;
  e->unfinished = e->n;
  e->seen.assign(size_t(e->n), 0);
  e->last_token.assign(size_t(e->n), created);

  std::lock_guard<std::mutex> lock(mu_);
  PromptState& st = ticket->state;
  st.prompt_tokens = int64_t(prompt.request.input_ids.size());
  st.samples.resize(size_t(e->n));
  for (size_t i = 0; i < st.samples.size(); ++i) {
    st.samples[i].rid = prompt.rids[i];
    st.samples[i].weight_version = weight_version_;
  }
  if (stop_) {
    abort_entry_locked(*e, kShuttingDown);
    return ticket;
  }
  queue_.push_back(e);
  queued_seqs_ += e->n;
  work_.notify_one();
  return ticket;
}

bool Scheduler::wait(Ticket& ticket, uint64_t* seen, std::chrono::milliseconds timeout,
                     PromptState* out) {
  std::unique_lock<std::mutex> lock(mu_);
  const bool changed =
      ticket.changed.wait_for(lock, timeout, [&] { return ticket.updates != *seen; });
  *seen = ticket.updates;
  *out = ticket.state;
  return changed;
}

void Scheduler::cancel(const Ticket& ticket) {
  std::lock_guard<std::mutex> lock(mu_);
  abort_matching_locked([&](const Entry& e) { return e.ticket.get() == &ticket; });
}

void Scheduler::abort(const std::string& rid, bool abort_all) {
  std::lock_guard<std::mutex> lock(mu_);
  abort_matching_locked([&](const Entry& e) {
    if (abort_all) return true;
    if (rid.empty()) return false;
    return std::any_of(e.rids.begin(), e.rids.end(),
                       [&](const std::string& r) { return absl::StartsWith(r, rid); });
  });
}

void Scheduler::abort_matching_locked(const std::function<bool(const Entry&)>& match) {
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (match(**it)) {
      queued_seqs_ -= (*it)->n;
      abort_entry_locked(**it, kAbortedInQueue);
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [id, e] : running_) {
    if (match(*e)) engine_aborts_.push_back(id);
  }
  work_.notify_one();
}

void Scheduler::pause(PauseMode mode) {
  std::unique_lock<std::mutex> lock(mu_);
  paused_ = true;
  if (mode == PauseMode::kAbort) abort_matching_locked([](const Entry&) { return true; });
  // Returns once no step runs (and with kAbort, once the aborted requests have finished), so
  // nothing generates after the answer.
  settled_.wait(lock, [&] {
    return stop_ || (!stepping_ && (mode != PauseMode::kAbort || running_.empty()));
  });
}

void Scheduler::resume() {
  std::lock_guard<std::mutex> lock(mu_);
  paused_ = false;
  work_.notify_one();
}

bool Scheduler::flush_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.empty() && running_.empty();
}

absl::StatusOr<int64_t> Scheduler::update_weights(DecoderParams params,
                                                  std::optional<std::string> weight_version,
                                                  bool abort_all) {
  std::unique_lock<std::mutex> lock(mu_);
  if (abort_all) abort_matching_locked([](const Entry&) { return true; });
  // One update at a time: a second waits for the first to be applied.
  settled_.wait(lock, [&] { return !update_ || stop_; });
  auto update = std::make_shared<PendingUpdate>();
  update->params = std::move(params);
  update->weight_version = std::move(weight_version);
  update_ = update;
  work_.notify_one();
  settled_.wait(lock, [&] { return update->applied || stop_; });
  if (!update->applied) {
    if (update_ == update) update_.reset();
    return absl::UnavailableError("The server is shutting down; the weights were not updated.");
  }
  return update->paused_sequences;
}

bool Scheduler::health_check(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t start = stepped_;
  ++probes_waiting_;
  work_.notify_one();
  const bool ok = settled_.wait_for(lock, timeout, [&] { return stepped_ > start || stop_; });
  --probes_waiting_;
  return ok && !stop_;
}

bool Scheduler::wait_idle(SteadyClock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return settled_.wait_until(lock, deadline, [&] { return queue_.empty() && running_.empty(); });
}

SchedulerLoad Scheduler::load() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {running_seqs_, queued_seqs_, kv_tokens_, max_total_tokens_, gen_throughput_};
}

std::string Scheduler::weight_version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return weight_version_;
}

bool Scheduler::has_work_locked() const {
  const bool blocked = paused_ || update_ != nullptr;  // admission stops for both
  return !engine_aborts_.empty() || (update_ && (paused_ || running_.empty())) ||
         (!blocked && !queue_.empty()) || (!paused_ && engine_.has_unfinished()) ||
         (probes_waiting_ > 0 && !paused_ && probe_id_ < 0);
}

void Scheduler::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_.wait(lock, [&] { return stop_ || has_work_locked(); });
    if (stop_) break;
    // Commands, admission and probes are cheap engine calls: made under the lock, so handlers
    // never see an entry that is neither queued nor running.
    for (int64_t id : std::exchange(engine_aborts_, {})) engine_.abort(id, kAborted);
    if (update_ && (paused_ || running_.empty())) apply_update_locked();
    if (!paused_ && !update_) admit_locked();
    if (probes_waiting_ > 0 && !paused_ && probe_id_ < 0 && !engine_.has_unfinished()) {
      GenerateRequest probe;  // SGLang's health request: input_ids [0], one greedy token
      probe.input_ids = {0};
      probe.params.max_new_tokens = 1;
      probe.params.temperature = 0.0;
      absl::StatusOr<int64_t> id = engine_.add_request(std::move(probe));
      if (id.ok()) probe_id_ = *id;
    }
    const bool step = !paused_ && engine_.has_unfinished();
    stepping_ = step;
    lock.unlock();
    // The model runs without the lock: handlers submit, abort and read tickets meanwhile.
    absl::StatusOr<std::vector<SequenceOutput>> outs =
        step ? engine_.step() : std::vector<SequenceOutput>{};
    lock.lock();
    stepping_ = false;
    if (!outs.ok()) FP8RL_LOG_ERROR("rollout: engine step failed: {}", outs.status().ToString());
    std::vector<SequenceOutput> finished = outs.ok() ? *std::move(outs) : engine_.take_finished();
    for (SequenceOutput& o : engine_.take_finished()) finished.push_back(std::move(o));
    publish_locked(std::move(finished), step && outs.ok());
  }
  // Stopping: what is running finishes as aborted, with the tokens it has.
  for (auto& [id, e] : running_) engine_.abort(id, kShuttingDown);
  publish_locked(engine_.take_finished(), false);
}

void Scheduler::admit_locked() {
  while (!queue_.empty()) {
    Entry& e = *queue_.front();
    const int64_t need = e.n * e.tokens_per_sample;
    // FIFO: the head waits for room rather than being overtaken; alone it always runs.
    if (running_seqs_ > 0 && (running_seqs_ + e.n > options_.max_running_requests ||
                              reserved_tokens_ + need > max_total_tokens_))
      break;
    std::shared_ptr<Entry> entry = std::move(queue_.front());
    queue_.pop_front();
    queued_seqs_ -= e.n;
    absl::StatusOr<int64_t> id = engine_.add_request(std::move(entry->request));
    if (!id.ok()) {  // check() ran at submission; only a bug gets here
      FP8RL_LOG_ERROR("rollout: the engine refused a checked request: {}", id.status().ToString());
      abort_entry_locked(*entry, std::string(id.status().message()));
      continue;
    }
    running_[*id] = std::move(entry);
    running_seqs_ += e.n;
    reserved_tokens_ += need;
  }
}

void Scheduler::apply_update_locked() {
  // Only the loop runs the model, and it does not run now: the parameters can be swapped. The
  // caller checked every shape against the running model's.
  model_->params() = std::move(update_->params);
  // A device backend copies the new weights now; should that fail the server cannot keep its
  // promise of serving the new weights, and says so loudly (the CPU weights are already new).
  if (absl::Status st = backend_->weights_changed(); !st.ok())
    FP8RL_LOG_ERROR("rollout: copying the new weights to the device failed: {}", st.ToString());
  if (update_->weight_version) weight_version_ = *update_->weight_version;
  update_->paused_sequences = engine_.num_running();
  update_->applied = true;
  update_.reset();
  FP8RL_LOG_INFO("rollout: weights updated (weight_version {})", weight_version_);
  settled_.notify_all();
}

void Scheduler::abort_entry_locked(Entry& e, const std::string& message) {
  Ticket& t = *e.ticket;
  const double e2e = seconds(SteadyClock::now() - e.created);
  for (SampleState& s : t.state.samples) {
    if (s.finish) continue;
    s.finish = FinishReason{FinishReason::Type::kAbort, 0, {}, {}, message};
    s.e2e_seconds = e2e;
    s.weight_version = weight_version_;
    if (metrics_ && e.log_metrics) metrics_->on_aborted();
  }
  t.state.done = true;
  notify_locked(t);
}

void Scheduler::record_tokens_locked(Entry& e, const SequenceOutput& o,
                                     SteadyClock::time_point now) {
  const size_t k = size_t(o.index);
  size_t& seen = e.seen[k];
  if (o.output_ids.size() <= seen) return;
  if (metrics_ && e.log_metrics) {
    for (size_t t = seen; t < o.output_ids.size(); ++t) {
      if (t == 0) {
        metrics_->on_first_token(seconds(now - e.created));
      } else {
        metrics_->on_next_token(seconds(now - e.last_token[k]));
      }
    }
  }
  window_tokens_ += int64_t(o.output_ids.size() - seen);
  e.last_token[k] = now;
  if (e.stream) {
    PromptState& st = e.ticket->state;
    SampleState& s = st.samples[k];
    const auto append = [&](auto& to, const auto& from) {
      if (from.size() > seen) to.insert(to.end(), from.begin() + ptrdiff_t(seen), from.end());
    };
    append(s.output_ids, o.output_ids);
    append(s.output_logprobs, o.output_logprobs);
    append(s.output_top_logprobs, o.output_top_logprobs);
    append(s.output_token_ids_logprobs, o.output_token_ids_logprobs);
    s.weight_version = weight_version_;
    if (st.input_token_logprobs.empty()) st.input_token_logprobs = o.input_token_logprobs;
    if (st.input_top_logprobs.empty()) st.input_top_logprobs = o.input_top_logprobs;
    if (st.input_token_ids_logprobs.empty())
      st.input_token_ids_logprobs = o.input_token_ids_logprobs;
    notify_locked(*e.ticket);
  }
  seen = o.output_ids.size();
}

void Scheduler::publish_locked(std::vector<SequenceOutput> finished, bool stepped) {
  const SteadyClock::time_point now = SteadyClock::now();
  if (stepped) {
    for (const SequenceOutput* o : engine_.running()) {
      auto it = running_.find(o->request_id);
      if (it != running_.end()) record_tokens_locked(*it->second, *o, now);
    }
  }
  for (SequenceOutput& o : finished) {
    if (o.request_id == probe_id_) {
      probe_id_ = -1;
      continue;
    }
    auto it = running_.find(o.request_id);
    if (it == running_.end()) continue;
    Entry& e = *it->second;
    record_tokens_locked(e, o, now);
    PromptState& st = e.ticket->state;
    SampleState& s = st.samples[size_t(o.index)];
    s.output_ids = std::move(o.output_ids);
    s.output_logprobs = std::move(o.output_logprobs);
    s.output_top_logprobs = std::move(o.output_top_logprobs);
    s.output_token_ids_logprobs = std::move(o.output_token_ids_logprobs);
    s.text = std::move(o.text);
    s.finish = std::move(o.finish);
    s.e2e_seconds = seconds(now - e.created);
    s.weight_version = weight_version_;
    if (st.input_token_logprobs.empty())
      st.input_token_logprobs = std::move(o.input_token_logprobs);
    if (st.input_top_logprobs.empty()) st.input_top_logprobs = std::move(o.input_top_logprobs);
    if (st.input_token_ids_logprobs.empty())
      st.input_token_ids_logprobs = std::move(o.input_token_ids_logprobs);
    if (metrics_ && e.log_metrics) {
      metrics_->on_finished(st.prompt_tokens, int64_t(s.output_ids.size()), s.e2e_seconds);
      if (s.finish && s.finish->type == FinishReason::Type::kAbort) metrics_->on_aborted();
    }
    --running_seqs_;
    reserved_tokens_ -= e.tokens_per_sample;
    if (--e.unfinished == 0) st.done = true;
    notify_locked(*e.ticket);
    if (st.done) running_.erase(it);
  }
  if (stepped) ++stepped_;
  kv_tokens_ = engine_.kv_tokens();
  if (const double window = seconds(now - window_start_); window >= 1.0) {
    gen_throughput_ = double(window_tokens_) / window;
    window_tokens_ = 0;
    window_start_ = now;
  }
  settled_.notify_all();
}

void Scheduler::notify_locked(Ticket& t) {
  ++t.updates;
  t.changed.notify_all();
}

}  // namespace fp8rl
