// Continuous-batching generation over per-sequence KV caches (inference/engine.h).
#include "inference/engine.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace fp8rl {

Engine::Engine(const Decoder* model, const Tokenizer* tokenizer, EngineOptions options)
    : model_(model), tokenizer_(tokenizer), options_(std::move(options)), forward_(model) {
  if (options_.eos_token_ids.empty()) {
    for (int64_t id : model_->config().eos_token_ids) options_.eos_token_ids.push_back(int32_t(id));
  }
}

absl::StatusOr<int64_t> Engine::add_request(GenerateRequest request) {
  const SamplingParams& p = request.params;
  FP8RL_RETURN_IF_ERROR(p.validate());
  const std::vector<int32_t>& ids = request.input_ids;
  if (ids.empty()) return absl::InvalidArgumentError("input_ids cannot be empty.");
  const int64_t vocab = model_->config().vocab_size;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab)
      return absl::InvalidArgumentError(
          absl::StrCat("The input_ids contain ", id, ", outside the vocabulary [0, ", vocab, ")."));
  }
  const int64_t context = model_->config().max_position_embeddings;
  const int64_t prompt = int64_t(ids.size());
  if (prompt >= context)
    return absl::InvalidArgumentError(absl::StrCat("The input (", prompt,
                                                   " tokens) is longer than the model's context "
                                                   "length (",
                                                   context, " tokens)."));
  if (prompt + p.max_new_tokens >= context)
    return absl::InvalidArgumentError(absl::StrCat(
        "Requested token count exceeds the model's maximum context length of ", context,
        " tokens. You requested a total of ", prompt + p.max_new_tokens, " tokens: ", prompt,
        " tokens from the input messages and ", p.max_new_tokens,
        " tokens for the completion. Please reduce the number of tokens in the input messages or "
        "the completion to fit within the limit."));
  if (!p.stop.empty() && tokenizer_ == nullptr)
    return absl::InvalidArgumentError("stop strings need a tokenizer; this engine has none.");

  const int64_t id = next_id_++;
  const uint64_t seed = p.seed ? *p.seed : options_.default_seed + uint64_t(id);
  for (int64_t i = 0; i < p.n; ++i) {
    Sequence s{{}, p, TokenSampler(p, seed + uint64_t(i)), {}, ids, id};
    s.out.request_id = id;
    s.out.index = i;
    s.out.prompt_tokens = prompt;
    if (p.max_new_tokens == 0) {
      finish(&s, {FinishReason::Type::kLength, 0, {}, {}, {}});
      finished_.push_back(std::move(s.out));
    } else {
      sequences_.push_back(std::move(s));
    }
  }
  return id;
}

absl::StatusOr<std::vector<SequenceOutput>> Engine::step() {
  // One KvStep per prefilling request (its first sequence) and per decoding sequence; the other
  // samples of a prefilling request take a copy of the prompt's cache and the same logits row.
  std::vector<KvStep> steps;
  std::vector<std::vector<Sequence*>> users;  // per step: who samples from its logits row
  std::map<int64_t, size_t> prefill_step;     // group → step index
  std::vector<int32_t> last_tokens(sequences_.size());
  size_t n = 0;
  for (Sequence& s : sequences_) {
    if (s.prompt.empty()) {
      last_tokens[n] = s.out.output_ids.back();
      steps.push_back({&s.cache, std::span<const int32_t>(&last_tokens[n], 1)});
      users.push_back({&s});
    } else if (auto it = prefill_step.find(s.group); it != prefill_step.end()) {
      users[it->second].push_back(&s);
    } else {
      prefill_step[s.group] = steps.size();
      steps.push_back({&s.cache, s.prompt});
      users.push_back({&s});
    }
    ++n;
  }
  if (!steps.empty()) {
    std::vector<float> logits;
    if (absl::Status st = forward_.run(steps, &logits); !st.ok()) {
      for (Sequence& s : sequences_) {
        finish(&s, {FinishReason::Type::kAbort, 0, {}, {}, std::string(st.message())});
        finished_.push_back(std::move(s.out));
      }
      sequences_.clear();
      return st;
    }
    const int64_t vocab = model_->config().vocab_size;
    for (size_t i = 0; i < steps.size(); ++i) {
      const std::span<const float> row(logits.data() + int64_t(i) * vocab, size_t(vocab));
      for (Sequence* s : users[i]) {
        if (s != users[i][0]) s->cache = users[i][0]->cache;
        s->prompt.clear();
        const SampledToken tok = s->sampler.sample(row);
        s->out.output_ids.push_back(tok.id);
        s->out.output_logprobs.push_back(tok.logprob);
        check_finished(s);
      }
    }
  }
  for (auto it = sequences_.begin(); it != sequences_.end();) {
    if (it->out.finish) {
      finished_.push_back(std::move(it->out));
      it = sequences_.erase(it);
    } else {
      ++it;
    }
  }
  return std::exchange(finished_, {});
}

void Engine::check_finished(Sequence* s) const {
  const SamplingParams& p = s->params;
  const std::vector<int32_t>& out = s->out.output_ids;
  const int32_t last = out.back();
  const auto has = [](const std::vector<int32_t>& v, int32_t x) {
    return std::find(v.begin(), v.end(), x) != v.end();
  };
  // SGLang's order: length first, then stop tokens, then stop strings.
  if (int64_t(out.size()) >= p.max_new_tokens) {
    finish(s, {FinishReason::Type::kLength, p.max_new_tokens, {}, {}, {}});
  } else if (has(p.stop_token_ids, last) || (!p.ignore_eos && has(options_.eos_token_ids, last))) {
    finish(s, {FinishReason::Type::kStop, 0, last, {}, {}});
  } else if (!p.stop.empty()) {
    // A match ending at the newest token lies within the last (longest stop + a few) tokens:
    // every token holds at least one byte, and a cut UTF-8 character completes within 4.
    size_t longest = 0;
    for (const std::string& stop : p.stop) longest = std::max(longest, stop.size());
    const size_t window = std::min(out.size(), longest + 4);
    const std::string tail = tokenizer_->decode(
        std::span<const int32_t>(out).subspan(out.size() - window), p.skip_special_tokens);
    for (const std::string& stop : p.stop) {
      if (tail.find(stop) != std::string::npos) {
        finish(s, {FinishReason::Type::kStop, 0, {}, stop, {}});
        return;
      }
    }
  }
}

void Engine::finish(Sequence* s, FinishReason reason) const {
  if (tokenizer_ != nullptr) {
    std::span<const int32_t> ids(s->out.output_ids);
    const bool trim = !s->params.no_stop_trim;
    if (trim && reason.matched_token && !ids.empty()) ids = ids.first(ids.size() - 1);
    s->out.text = tokenizer_->decode(ids, s->params.skip_special_tokens);
    if (trim && reason.matched_string) {
      s->out.text = s->out.text.substr(0, s->out.text.find(*reason.matched_string));
    }
  }
  s->out.finish = std::move(reason);
}

bool Engine::abort(int64_t request_id, const std::string& message) {
  bool found = false;
  for (auto it = sequences_.begin(); it != sequences_.end();) {
    if (it->out.request_id != request_id) {
      ++it;
      continue;
    }
    finish(&*it, {FinishReason::Type::kAbort, 0, {}, {}, message});
    finished_.push_back(std::move(it->out));
    it = sequences_.erase(it);
    found = true;
  }
  return found;
}

std::vector<const SequenceOutput*> Engine::progress(int64_t request_id) const {
  std::vector<const SequenceOutput*> out;
  for (const Sequence& s : sequences_) {
    if (s.out.request_id == request_id) out.push_back(&s.out);
  }
  return out;
}

absl::StatusOr<std::vector<SequenceOutput>> Engine::generate(
    std::vector<GenerateRequest> requests) {
  std::map<int64_t, size_t> first;  // request id → its position among the requests
  for (size_t i = 0; i < requests.size(); ++i) {
    FP8RL_ASSIGN_OR_RETURN(const int64_t id, add_request(std::move(requests[i])));
    first[id] = i;
  }
  std::vector<SequenceOutput> mine, others;
  const auto take = [&](std::vector<SequenceOutput> outs) {
    for (SequenceOutput& o : outs)
      (first.count(o.request_id) ? mine : others).push_back(std::move(o));
  };
  take(std::exchange(finished_, {}));
  while (std::any_of(sequences_.begin(), sequences_.end(),
                     [&](const Sequence& s) { return first.count(s.out.request_id) > 0; })) {
    absl::StatusOr<std::vector<SequenceOutput>> outs = step();
    if (!outs.ok()) {
      finished_.insert(finished_.end(), others.begin(), others.end());
      return outs.status();
    }
    take(*std::move(outs));
  }
  finished_ = std::move(others);
  std::sort(mine.begin(), mine.end(), [&](const SequenceOutput& a, const SequenceOutput& b) {
    return std::pair(first[a.request_id], a.index) < std::pair(first[b.request_id], b.index);
  });
  return mine;
}

}  // namespace fp8rl
