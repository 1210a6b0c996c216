// /generate: one answer, a batch, or an SSE stream (RolloutServer::handle_generate).
#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include "services/rollout/rollout_http.h"
#include "services/rollout/rollout_server.h"

namespace fp8rl {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

// Starlette adds the charset to text/* media types; without it clients decode as Latin-1.
constexpr const char* kEventStream = "text/event-stream; charset=utf-8";

// What one /generate stream has sent so far.
struct StreamState {
  std::vector<PromptInput> inputs;
  std::vector<std::shared_ptr<Ticket>> tickets;
  std::vector<uint64_t> seen;
  std::vector<PromptState> states;
  std::vector<std::vector<StreamCursor>> cursors;
  std::vector<std::vector<size_t>> emitted;  // tokens at the last chunk
  std::vector<std::vector<bool>> final_sent;
  size_t unfinished = 0;  // samples whose final chunk is not sent yet
  bool batch = false;
};

}  // namespace

void RolloutServer::handle_generate(const httplib::Request& req, httplib::Response& res) {
  const auto created = SteadyClock::now();
  if (!require_ready(res)) return;
  // Counted until the answer is written (a stream: until its provider is released), so a drain
  // stops the HTTP server only after every answer went out.
  generating_.fetch_add(1);
  struct Done {
    std::atomic<int64_t>* count;
    bool stream = false;
    ~Done() {
      if (!stream) count->fetch_sub(1);
    }
  } done{&generating_};
  const std::optional<json> body = parse_body(req, res, false);
  if (!body) return;
  if (absl::Status st = check_generate_schema(*body); !st.ok()) {
    reply(res, 400, error_response(400, std::string(st.message())));
    return;
  }
  const auto stream_field = body->find("stream");
  const bool stream =
      stream_field != body->end() && stream_field->is_boolean() && stream_field->get<bool>();
  // SGLang's ValueErrors: a 400 body, or inside a 200 stream an error chunk and [DONE].
  const auto value_error = [&](const absl::Status& st) {
    if (stream) {
      res.status = 200;
      res.set_content(sse_event(value_error_response(std::string(st.message()))) + kSseDone,
                      kEventStream);
    } else {
      reply(res, 400, value_error_response(std::string(st.message())));
    }
  };
  Scheduler& sched = *scheduler_;
  const ProtocolContext context{sched.tokenizer(), sched.limits().vocab_size,
                                sched.limits().context_length, options_.stream_interval};
  absl::StatusOr<GenerateInput> input = parse_generate(*body, context);
  if (!input.ok()) return value_error(input.status());
  for (const PromptInput& p : input->prompts) {
    if (absl::Status st = sched.check(p.request); !st.ok()) return value_error(st);
  }

  std::vector<std::shared_ptr<Ticket>> tickets;
  for (const PromptInput& p : input->prompts)
    tickets.push_back(sched.submit(p, input->stream, input->log_metrics, created));

  if (!input->stream) {
    ojson out = ojson::array();
    for (size_t i = 0; i < tickets.size(); ++i) {
      PromptState state;
      uint64_t seen = 0;
      while (!state.done) sched.wait(*tickets[i], &seen, milliseconds(1000), &state);
      for (size_t k = 0; k < state.samples.size(); ++k)
        out.push_back(
            sample_response(input->prompts[i], state, k, sched.tokenizer(), std::nullopt, nullptr));
    }
    reply(res, 200, input->batch ? out : out[0]);
    return;
  }

  auto s = std::make_shared<StreamState>();
  s->batch = input->batch;
  s->inputs = std::move(input->prompts);
  s->tickets = std::move(tickets);
  s->seen.assign(s->tickets.size(), 0);
  s->states.resize(s->tickets.size());
  for (const PromptInput& p : s->inputs) {
    const size_t n = p.rids.size();
    s->cursors.emplace_back(n);
    s->emitted.emplace_back(n, 0);
    s->final_sent.emplace_back(n, false);
    s->unfinished += n;
  }
  const bool incremental = options_.incremental_streaming_output;
  done.stream = true;
  res.set_chunked_content_provider(
      kEventStream,
      [this, s, incremental](size_t, httplib::DataSink& sink) {
        Scheduler& sched = *scheduler_;
        // Block on the first unfinished prompt (briefly when there are others to look at).
        size_t first = 0;
        while (first < s->tickets.size() && s->states[first].done) ++first;
        if (first < s->tickets.size()) {
          sched.wait(*s->tickets[first], &s->seen[first],
                     milliseconds(s->tickets.size() > 1 ? 20 : 1000), &s->states[first]);
        }
        std::string chunk;
        int64_t index = 0;
        for (size_t i = 0; i < s->tickets.size(); ++i) {
          if (i != first) sched.wait(*s->tickets[i], &s->seen[i], milliseconds(0), &s->states[i]);
          const PromptState& st = s->states[i];
          const size_t interval = size_t(s->inputs[i].stream_interval);
          for (size_t k = 0; k < st.samples.size(); ++k, ++index) {
            if (s->final_sent[i][k]) continue;
            const SampleState& sample = st.samples[k];
            const size_t have = sample.output_ids.size();
            const bool final = sample.finish.has_value();
            const auto emit = [&](size_t upto) {
              chunk +=
                  sse_event(sample_response(s->inputs[i], st, k, sched.tokenizer(),
                                            s->batch ? std::optional<int64_t>(index) : std::nullopt,
                                            incremental ? &s->cursors[i][k] : nullptr, upto));
              s->emitted[i][k] = upto;
            };
            // One chunk per decode step, as SGLang sends them: every token with interval 1,
            // else at counts 1, 1 + interval, ...; the finished state always.
            for (size_t c = s->emitted[i][k] + 1; c <= have; ++c) {
              if (final && c == have) break;
              if (interval == 1 || c % interval == 1) emit(c);
            }
            if (final) {
              emit(have);
              s->final_sent[i][k] = true;
              --s->unfinished;
            }
          }
        }
        if (s->unfinished == 0) chunk += kSseDone;
        if (!chunk.empty() && !sink.write(chunk.data(), chunk.size())) return false;
        if (s->unfinished == 0) sink.done();
        return true;
      },
      [this, s](bool success) {
        // A client that went away (or a server stop) aborts what it was waiting for.
        if (!success) {
          for (const auto& t : s->tickets) scheduler_->cancel(*t);
        }
        generating_.fetch_sub(1);
      });
}
}  // namespace fp8rl
