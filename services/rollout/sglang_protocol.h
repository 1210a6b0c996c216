// SGLang's /generate wire format (reference/sglang.md §1.2–1.5): the request body checked the way
// FastAPI checks GenerateReqInput, normalised into one engine request per prompt the way
// normalize_batch_and_arguments and the tokenizer manager do, and the response objects, SSE
// chunks and error bodies SGLang sends. Pure functions: no HTTP, no threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/engine.h"
#include "inference/tokenizer.h"
#include "nlohmann/json.hpp"

namespace fp8rl {

using ojson = nlohmann::ordered_json;

// One prompt of a /generate call, ready for the scheduler.
struct PromptInput {
  GenerateRequest request;        // tokenized; max_new_tokens resolved; not yet check_request'ed
  std::vector<std::string> rids;  // one per sample (params.n)
  bool return_logprob = false;
  bool return_text_in_logprobs = false;
  bool has_token_ids_logprob = false;  // token_ids_logprob was given (even empty)
  int64_t stream_interval = 1;         // tokens per streamed chunk
};

struct GenerateInput {
  std::vector<PromptInput> prompts;
  bool batch = false;  // the answer is a list: a batch of prompts, or n > 1
  bool stream = false;
  bool log_metrics = true;
};

struct ProtocolContext {
  const Tokenizer* tokenizer = nullptr;  // null: text prompts are refused (skip_tokenizer_init)
  int64_t vocab_size = 0;                // for messages about ids beyond int32
  int64_t context_length = 0;            // for max_new_tokens = null
  int64_t stream_interval = 1;           // --stream-interval
};

// FastAPI's request validation of GenerateReqInput: the body is a JSON object whose fields have
// their declared types; fields SGLang has but fp8rl does not implement must be null or default.
// InvalidArgument naming the field; the caller answers with error_response(400, ...).
absl::Status check_generate_schema(const nlohmann::json& body);

// normalize_batch_and_arguments, tokenization and SamplingParams(**sampling_params): one
// PromptInput per prompt, n samples each, rids expanded like SGLang's (a string rid R becomes
// R_0, R_1, ... for batches and n > 1; none: a uuid4 hex per sample). InvalidArgument with
// SGLang's ValueError messages; the caller answers with value_error_response(...). Expects a body
// that passed check_generate_schema.
absl::StatusOr<GenerateInput> parse_generate(const nlohmann::json& body,
                                             const ProtocolContext& context);

// A 32-character random hex id (uuid4().hex's shape).
std::string random_rid();

// SGLang's finish_reason objects: {"type":"length","length":N}, {"type":"stop","matched":id or
// "str"}, {"type":"abort","message":...,"status_code":null,"err_type":null}.
ojson finish_reason_json(const FinishReason& reason);

// What the scheduler has of one sample (a snapshot).
struct SampleState {
  std::string rid;
  std::vector<int32_t> output_ids;
  std::vector<float> output_logprobs;
  std::vector<std::vector<TokenLogprob>> output_top_logprobs, output_token_ids_logprobs;
  std::optional<FinishReason> finish;
  std::string text;            // the engine's final text, once finished
  std::string weight_version;  // of the weights that produced the latest token
  double e2e_seconds = 0;      // once finished
};

// What the scheduler has of one prompt (a snapshot).
struct PromptState {
  int64_t prompt_tokens = 0;
  std::vector<float> input_token_logprobs;  // from logprob_start_len + 1 on (engine.h)
  std::vector<std::vector<TokenLogprob>> input_top_logprobs, input_token_ids_logprobs;
  std::vector<SampleState> samples;
  bool done = false;  // every sample finished
};

// Where an incremental stream (--incremental-streaming-output) left off for one sample.
struct StreamCursor {
  size_t tokens = 0;  // output ids already sent
  size_t text = 0;    // bytes of text already sent
};

// One response object {"text", "output_ids", "meta_info"} for sample `k` of `prompt` as SGLang
// builds it, as of its first `upto` tokens (a stream's chunk for an earlier step; the sample counts
// as finished only with all of them): cumulative (cursor null) or the part after *cursor (which
// is then advanced); text only with a tokenizer (an unfinished sample's text stops before an
// incomplete UTF-8 character); "index" when given (batch streams); e2e_latency once finished.
ojson sample_response(const PromptInput& input, const PromptState& prompt, size_t k,
                      const Tokenizer* tokenizer, std::optional<int64_t> index,
                      StreamCursor* cursor, size_t upto = SIZE_MAX);

// {"object":"error","message":...,"type":...,"param":null,"code":code}: FastAPI's validation and
// HTTPException bodies (type "Bad Request" for 400, "Service Unavailable" for 503, ...).
ojson error_response(int code, const std::string& message);
// {"error":{"message":...}}: SGLang's _create_error_response for ValueErrors (HTTP 400, or an SSE
// chunk inside a 200 stream).
ojson value_error_response(const std::string& message);
// `data: <json>\n\n`, and the terminator `data: [DONE]\n\n`.
std::string sse_event(const ojson& j);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";
// JSON text with invalid UTF-8 replaced (decoded text is valid, this is the backstop).
std::string dump_json(const ojson& j);

}  // namespace fp8rl
