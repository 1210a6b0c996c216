// The generation engine: requests of token ids in, sampled continuations out, with a KV cache
// per sequence and continuous batching (every step() advances all running sequences by one
// token; requests added between steps join the next one).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/kv_model.h"
#include "inference/sampling.h"
#include "inference/tokenizer.h"
#include "model/decoder.h"

namespace fp8rl {

struct GenerateRequest {
  std::vector<int32_t> input_ids;
  SamplingParams params;
  // SGLang's log-prob options. Every output token's log-prob is always computed; these add:
  int64_t logprob_start_len = -1;          // >= 0: the prompt's log-probs from this position on
  int64_t top_logprobs_num = 0;            // > 0: the most likely ids at every position
  std::vector<int32_t> token_ids_logprob;  // the log-probs of these ids at every position
};

// What a request is checked against (Engine::limits()).
struct RequestLimits {
  int64_t vocab_size = 0;
  int64_t context_length = 0;  // prompt + max_new_tokens must stay below it
  bool has_tokenizer = false;  // stop strings need one
};

// InvalidArgument with SGLang's messages for empty input_ids, ids outside the vocabulary, bad
// sampling params, prompt + max_new_tokens beyond the context, stop strings without a tokenizer,
// a logprob_start_len past the prompt, and log-prob or logit_bias ids outside the vocabulary.
// Thread-safe (reads only its arguments).
absl::Status check_request(const GenerateRequest& request, const RequestLimits& limits);

// SGLang's finish_reason: {"type":"length","length":N}, {"type":"stop","matched":id or string},
// {"type":"abort","message":...}.
struct FinishReason {
  enum class Type { kLength, kStop, kAbort };
  Type type = Type::kLength;
  int64_t length = 0;                         // kLength: max_new_tokens
  std::optional<int32_t> matched_token;       // kStop on a stop token or EOS id
  std::optional<std::string> matched_string;  // kStop on a stop string
  std::string message;                        // kAbort
};

// One sequence (sample `index` of request `request_id`).
struct SequenceOutput {
  int64_t request_id = 0;
  int64_t index = 0;
  int64_t prompt_tokens = 0;
  std::vector<int32_t> output_ids;  // every generated token, the matched stop/EOS token included
  // Per output id: log_softmax of the raw logits (no temperature, penalties or filters), with the
  // arithmetic of the trainer's log-probs (sampling.h log_sum_exp).
  std::vector<float> output_logprobs;
  // Per output id when asked for (top_logprobs_num, token_ids_logprob): the most likely ids and
  // the asked ids at the position that produced it.
  std::vector<std::vector<TokenLogprob>> output_top_logprobs, output_token_ids_logprobs;
  // With logprob_start_len = s >= 0, for every prompt position p in (s, prompt_tokens): the
  // log-prob of input_ids[p] given the tokens before it (Decoder::forward's numbers), and the
  // top / asked ids there. (SGLang reports position s itself as null.)
  std::vector<float> input_token_logprobs;
  std::vector<std::vector<TokenLogprob>> input_top_logprobs, input_token_ids_logprobs;
  std::optional<FinishReason> finish;  // set once finished
  // With a tokenizer, once finished: the output decoded with params.skip_special_tokens, cut
  // before the matched stop string or token unless params.no_stop_trim.
  std::string text;
};

struct EngineOptions {
  // Ids that end a sequence unless ignore_eos; empty: the model config's eos_token_ids.
  std::vector<int32_t> eos_token_ids;
  // Seed of requests that give none: request r uses default_seed + r (ids count from 0).
  uint64_t default_seed = 0;
  // Prompt + max_new_tokens must stay below this; 0: the model's max_position_embeddings (a
  // larger value is clamped to it).
  int64_t context_length = 0;
};

// Driven from one thread: no method may run concurrently with another. The model and tokenizer
// must outlive the engine. The model's weights may be replaced between step() calls (a weight
// update, then KvModel::weights_changed); running sequences then continue from their caches with
// the new weights.
class Engine {
 public:
  // `tokenizer` may be null: then requests with stop strings are refused and outputs have no text.
  Engine(KvModel* model, const Tokenizer* tokenizer, EngineOptions options = {});
  // The engine on a CPU decoder (a CpuKvModel it owns).
  Engine(const Decoder* model, const Tokenizer* tokenizer, EngineOptions options = {});

  // Queues a request of params.n sequences; they join the batch at the next step(). Returns the
  // request id. InvalidArgument from check_request(request, limits()).
  absl::StatusOr<int64_t> add_request(GenerateRequest request);
  // Immutable after construction (safe to read from any thread).
  const RequestLimits& limits() const { return limits_; }

  // Runs one batch: the prompts of new requests (prefill; n samples share one) and one decode
  // token of every running sequence. Returns the sequences that finished since the last call
  // (aborted ones included), which the engine then forgets. On a model error every sequence is
  // aborted with that message and the error is returned.
  absl::StatusOr<std::vector<SequenceOutput>> step();

  // Finishes every sequence of `request_id` with type abort; they come out of the next step()
  // (or take_finished()). False when no such request is unfinished.
  bool abort(int64_t request_id, const std::string& message = "Aborted");
  // The sequences that finished outside a step (aborted ones, max_new_tokens 0) since the last
  // step() or take_finished(), without running the model (e.g. while generation is paused).
  std::vector<SequenceOutput> take_finished() { return std::exchange(finished_, {}); }

  // The sequences of `request_id` so far (for streaming); empty when it is unknown or finished.
  std::vector<const SequenceOutput*> progress(int64_t request_id) const;
  // Every unfinished sequence so far, in arrival order (one pass for all streams).
  std::vector<const SequenceOutput*> running() const;
  bool has_unfinished() const { return !sequences_.empty(); }
  int64_t num_running() const { return int64_t(sequences_.size()); }
  // Tokens whose K/V the caches of unfinished sequences hold (what the KV memory grows with).
  int64_t kv_tokens() const;

  // Convenience: adds `requests`, steps until they are all finished and returns their sequences
  // in request order, then sample order. Other requests already queued advance too and are
  // returned by later step() calls.
  absl::StatusOr<std::vector<SequenceOutput>> generate(std::vector<GenerateRequest> requests);

 private:
  struct Sequence {
    SequenceOutput out;
    SamplingParams params;
    TokenSampler sampler;
    KvCache cache;
    std::vector<int32_t> prompt;  // until prefilled
    int64_t group = 0;            // sequences of one request prefilled together share the prompt
    int64_t logprob_start_len = -1;
    int64_t top_logprobs_num = 0;
    std::vector<int32_t> token_ids_logprob;
    std::unordered_map<int32_t, int32_t> output_counts;  // kept only for penalties
  };
  // Whether `s` needs its whole logits row to choose and report its next token (else the
  // model's argmax and its log-prob suffice).
  static bool needs_logits(const Sequence& s);
  // Samples the next token of `s` from its logits row and records it with its log-probs.
  void append_token(Sequence* s, std::span<const float> row, std::vector<float>* scratch) const;
  // Appends the chosen token and its log-prob, then checks the stop conditions.
  void record_token(Sequence* s, int32_t id, float logprob) const;
  // The prompt's log-probs of a request with logprob_start_len >= 0 (a full forward over it).
  absl::Status fill_input_logprobs(Sequence* s);
  // Checks the stop conditions after a new token; sets out.finish (and text) when one holds.
  void check_finished(Sequence* s) const;
  void finish(Sequence* s, FinishReason reason) const;

  std::unique_ptr<KvModel> owned_model_;  // the CPU decoder's, for the Decoder constructor
  KvModel* model_;
  const Tokenizer* tokenizer_;
  EngineOptions options_;
  RequestLimits limits_;
  KvOutput step_out_;  // reused: its logits rows are large
  int64_t next_id_ = 0;
  std::list<Sequence> sequences_;  // unfinished, in arrival order
  std::vector<SequenceOutput> finished_;
};

}  // namespace fp8rl
