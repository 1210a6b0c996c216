// The generation engine: requests of token ids in, sampled continuations out, with a KV cache
// per sequence and continuous batching (every step() advances all running sequences by one
// token; requests added between steps join the next one).
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/kv_forward.h"
#include "inference/sampling.h"
#include "inference/tokenizer.h"
#include "model/decoder.h"

namespace fp8rl {

struct GenerateRequest {
  std::vector<int32_t> input_ids;
  SamplingParams params;
};

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
  std::vector<int32_t> output_ids;     // every generated token, the matched stop/EOS token included
  std::vector<float> output_logprobs;  // per output id: log_softmax of the raw logits
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
};

// Driven from one thread: no method may run concurrently with another. The model and tokenizer
// must outlive the engine and stay unchanged while sequences are running.
class Engine {
 public:
  // `tokenizer` may be null: then requests with stop strings are refused and outputs have no text.
  Engine(const Decoder* model, const Tokenizer* tokenizer, EngineOptions options = {});

  // Queues a request of params.n sequences; they join the batch at the next step(). Returns the
  // request id. InvalidArgument (SGLang's messages) for empty input_ids, ids outside the
  // vocabulary, bad sampling params, prompt + max_new_tokens beyond the context, or stop strings
  // without a tokenizer.
  absl::StatusOr<int64_t> add_request(GenerateRequest request);

  // Runs one batch: the prompts of new requests (prefill; n samples share one) and one decode
  // token of every running sequence. Returns the sequences that finished since the last call
  // (aborted ones included), which the engine then forgets. On a model error every sequence is
  // aborted with that message and the error is returned.
  absl::StatusOr<std::vector<SequenceOutput>> step();

  // Finishes every sequence of `request_id` with type abort; they come out of the next step().
  // False when no such request is unfinished.
  bool abort(int64_t request_id, const std::string& message = "Aborted");

  // The sequences of `request_id` so far (for streaming); empty when it is unknown or finished.
  std::vector<const SequenceOutput*> progress(int64_t request_id) const;
  bool has_unfinished() const { return !sequences_.empty(); }
  int64_t num_running() const { return int64_t(sequences_.size()); }

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
  };
  // Checks the stop conditions after a new token; sets out.finish (and text) when one holds.
  void check_finished(Sequence* s) const;
  void finish(Sequence* s, FinishReason reason) const;

  const Decoder* model_;
  const Tokenizer* tokenizer_;
  EngineOptions options_;
  KvForward forward_;
  int64_t next_id_ = 0;
  std::list<Sequence> sequences_;  // unfinished, in arrival order
  std::vector<SequenceOutput> finished_;
};

}  // namespace fp8rl
