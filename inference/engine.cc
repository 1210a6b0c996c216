// Continuous-batching generation over per-sequence KV caches (inference/engine.h).
#include "inference/engine.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "inference/cpu_kv_model.h"
#include "inference/logit_processors.h"

namespace fp8rl {

absl::Status check_request(const GenerateRequest& request, const RequestLimits& limits) {
  const SamplingParams& p = request.params;
  FP8RL_RETURN_IF_ERROR(p.validate());
  const std::vector<int32_t>& ids = request.input_ids;
  if (ids.empty()) return absl::InvalidArgumentError("input_ids cannot be empty.");
  const int64_t vocab = limits.vocab_size;
  const auto outside = [vocab](int32_t id) { return id < 0 || id >= vocab; };
  for (int32_t id : ids) {
    if (outside(id))
      return absl::InvalidArgumentError(
          absl::StrCat("The input_ids contain ", id, ", outside the vocabulary [0, ", vocab, ")."));
  }
  const int64_t context = limits.context_length;
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
  if (!p.stop.empty() && !limits.has_tokenizer)
    return absl::InvalidArgumentError("stop strings need a tokenizer; this engine has none.");
  if (request.logprob_start_len >= prompt)
    return absl::InvalidArgumentError(
        absl::StrCat("logprob_start_len, (", request.logprob_start_len,
                     ") is higher than the number of input tokens (", prompt,
                     "). Request with a lower logprob_start_len."));
  if (request.top_logprobs_num < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs_num must be at least 0, got ", request.top_logprobs_num, "."));
  for (int32_t id : request.token_ids_logprob) {
    if (outside(id))
      return absl::InvalidArgumentError(absl::StrCat("token_ids_logprob contains ", id,
                                                     ", outside the vocabulary [0, ", vocab, ")."));
  }
  for (const auto& [id, bias] : p.logit_bias) {
    if (outside(id))
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias must has keys in [0, ", vocab, "), got ", id, "."));
  }
  return absl::OkStatus();
}

Engine::Engine(const Decoder* model, const Tokenizer* tokenizer, EngineOptions options)
    : Engine(new CpuKvModel(model), tokenizer, std::move(options)) {
  owned_model_.reset(model_);
}

Engine::Engine(KvModel* model, const Tokenizer* tokenizer, EngineOptions options)
    : model_(model), tokenizer_(tokenizer), options_(std::move(options)) {
  if (options_.eos_token_ids.empty()) {
    for (int64_t id : model_->config().eos_token_ids) options_.eos_token_ids.push_back(int32_t(id));
  }
  const int64_t context = model_->config().max_position_embeddings;
  limits_ = {model_->config().vocab_size,
             options_.context_length > 0 ? std::min(options_.context_length, context) : context,
             tokenizer_ != nullptr};
}

absl::StatusOr<int64_t> Engine::add_request(GenerateRequest request) {
  FP8RL_RETURN_IF_ERROR(check_request(request, limits_));
  const SamplingParams& p = request.params;
  const int64_t id = next_id_++;
  const uint64_t seed = p.seed ? *p.seed : options_.default_seed + uint64_t(id);
  for (int64_t i = 0; i < p.n; ++i) {
    Sequence s{.out = {},
               .params = p,
               .sampler = TokenSampler(p, seed + uint64_t(i)),
               .cache = {},
               .prompt = request.input_ids,
               .group = id,
               .logprob_start_len = request.logprob_start_len,
               .top_logprobs_num = request.top_logprobs_num,
               .token_ids_logprob = request.token_ids_logprob,
               .output_counts = {}};
    s.out.request_id = id;
    s.out.index = i;
    s.out.prompt_tokens = int64_t(request.input_ids.size());
    if (p.max_new_tokens == 0) {
      if (s.logprob_start_len >= 0) {
        if (absl::Status st = fill_input_logprobs(&s); !st.ok()) return st;
      }
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
      steps.push_back({&s.cache, std::span<const int32_t>(&last_tokens[n], 1), needs_logits(s)});
      users.push_back({&s});
    } else if (auto it = prefill_step.find(s.group); it != prefill_step.end()) {
      users[it->second].push_back(&s);
      steps[it->second].need_logits |= needs_logits(s);
    } else {
      prefill_step[s.group] = steps.size();
      steps.push_back({&s.cache, s.prompt, needs_logits(s)});
      users.push_back({&s});
    }
    ++n;
  }
  if (!steps.empty()) {
    if (absl::Status st = model_->run(steps, &step_out_); !st.ok()) {
      for (Sequence& s : sequences_) {
        finish(&s, {FinishReason::Type::kAbort, 0, {}, {}, std::string(st.message())});
        finished_.push_back(std::move(s.out));
      }
      sequences_.clear();
      return st;
    }
    const int64_t vocab = model_->config().vocab_size;
    std::vector<float> scratch;
    for (size_t i = 0; i < steps.size(); ++i) {
      const std::span<const float> row(step_out_.logits.data() + int64_t(i) * vocab,
                                       steps[i].need_logits ? size_t(vocab) : 0);
      Sequence* first = users[i][0];
      if (!first->prompt.empty() && first->logprob_start_len >= 0) {
        if (absl::Status st = fill_input_logprobs(first); !st.ok()) {
          for (Sequence* s : users[i])
            finish(s, {FinishReason::Type::kAbort, 0, {}, {}, std::string(st.message())});
          continue;
        }
      }
      for (Sequence* s : users[i]) {
        if (s != first) {
          if (absl::Status st = model_->fork(first->cache, &s->cache); !st.ok()) {
            finish(s, {FinishReason::Type::kAbort, 0, {}, {}, std::string(st.message())});
            continue;
          }
          s->out.input_token_logprobs = first->out.input_token_logprobs;
          s->out.input_top_logprobs = first->out.input_top_logprobs;
          s->out.input_token_ids_logprobs = first->out.input_token_ids_logprobs;
        }
        if (steps[i].need_logits) {
          append_token(s, row, &scratch);
        } else {
          record_token(s, step_out_.argmax[i], step_out_.argmax_logprob[i]);
        }
      }
      for (Sequence* s : users[i]) s->prompt.clear();
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

bool Engine::needs_logits(const Sequence& s) {
  return !s.params.greedy() || has_logit_processors(s.params) || s.top_logprobs_num > 0 ||
         !s.token_ids_logprob.empty();
}

void Engine::record_token(Sequence* s, int32_t id, float logprob) const {
  s->out.output_ids.push_back(id);
  s->out.output_logprobs.push_back(logprob);
  if (s->params.frequency_penalty != 0.0 || s->params.presence_penalty != 0.0 ||
      s->params.repetition_penalty != 1.0)
    ++s->output_counts[id];
  check_finished(s);
}

void Engine::append_token(Sequence* s, std::span<const float> row,
                          std::vector<float>* scratch) const {
  const SamplingParams& p = s->params;
  SequenceOutput& out = s->out;
  int32_t id;
  if (has_logit_processors(p)) {
    scratch->assign(row.begin(), row.end());
    apply_logit_processors(
        p, {&s->output_counts, int64_t(out.output_ids.size()), options_.eos_token_ids}, *scratch);
    id = s->sampler.draw(*scratch);
  } else {
    id = s->sampler.draw(row);
  }
  const float lse = log_sum_exp(row, model_->vocab_chunk());
  if (s->top_logprobs_num > 0)
    out.output_top_logprobs.push_back(top_logprobs(row, lse, s->top_logprobs_num));
  if (!s->token_ids_logprob.empty()) {
    std::vector<TokenLogprob>& asked = out.output_token_ids_logprobs.emplace_back();
    for (int32_t t : s->token_ids_logprob) asked.push_back({t, row[size_t(t)] - lse});
  }
  record_token(s, id, row[size_t(id)] - lse);
}

absl::Status Engine::fill_input_logprobs(Sequence* s) {
  const std::vector<int32_t>& prompt = s->prompt;
  const bool extras = s->top_logprobs_num > 0 || !s->token_ids_logprob.empty();
  FP8RL_ASSIGN_OR_RETURN(const PromptScores scores, model_->score(prompt, extras));
  // Position p's token is predicted at p - 1; SGLang starts one past logprob_start_len.
  const size_t start = size_t(s->logprob_start_len);
  SequenceOutput& out = s->out;
  out.input_token_logprobs.assign(scores.logprob.begin() + ptrdiff_t(start), scores.logprob.end());
  if (extras) {
    const std::vector<float>& logits = scores.logits;
    const int64_t vocab = model_->config().vocab_size;
    for (size_t pos = start; pos + 1 < prompt.size(); ++pos) {
      const std::span<const float> row(logits.data() + int64_t(pos) * vocab, size_t(vocab));
      const float lse = log_sum_exp(row, model_->vocab_chunk());
      if (s->top_logprobs_num > 0)
        out.input_top_logprobs.push_back(top_logprobs(row, lse, s->top_logprobs_num));
      if (!s->token_ids_logprob.empty()) {
        std::vector<TokenLogprob>& asked = out.input_token_ids_logprobs.emplace_back();
        for (int32_t t : s->token_ids_logprob) asked.push_back({t, row[size_t(t)] - lse});
      }
    }
  }
  return absl::OkStatus();
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

std::vector<const SequenceOutput*> Engine::running() const {
  std::vector<const SequenceOutput*> out;
  out.reserve(sequences_.size());
  for (const Sequence& s : sequences_) out.push_back(&s.out);
  return out;
}

int64_t Engine::kv_tokens() const {
  int64_t n = 0;
  for (const Sequence& s : sequences_) n += s.cache.len;
  return n;
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
