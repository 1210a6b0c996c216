// SGLang's /generate answers, SSE chunks and error bodies (services/rollout/sglang_protocol.h).
#include <algorithm>
#include <chrono>
#include <string_view>

#include "services/rollout/sglang_protocol.h"

namespace fp8rl {
namespace {

// Text of one token for return_text_in_logprobs (tokenizer.batch_decode of single ids).
ojson logprob_entry(std::optional<float> logprob, int32_t id, const Tokenizer* text_of) {
  ojson e = ojson::array();
  e.push_back(logprob ? ojson(double(*logprob)) : ojson(nullptr));
  e.push_back(id);
  e.push_back(text_of ? ojson(text_of->decode(std::span<const int32_t>(&id, 1), false))
                      : ojson(nullptr));
  return e;
}

ojson top_entry(const std::vector<TokenLogprob>& top, const Tokenizer* text_of) {
  if (top.empty()) return nullptr;  // SGLang reports an empty position as null
  ojson list = ojson::array();
  for (const TokenLogprob& t : top) list.push_back(logprob_entry(t.logprob, t.id, text_of));
  return list;
}

// An unfinished sample's text: the decoded ids without a trailing incomplete character (what
// SGLang's incremental detokenizer holds back).
std::string partial_text(const Tokenizer& tok, std::span<const int32_t> ids, bool skip_special) {
  std::string text = tok.decode(ids, skip_special);
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  while (text.size() >= kReplacement.size() &&
         std::string_view(text).substr(text.size() - kReplacement.size()) == kReplacement)
    text.resize(text.size() - kReplacement.size());
  return text;
}

const char* reason_phrase(int code) {
  switch (code) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Payload Too Large";
    case 503:
      return "Service Unavailable";
    default:
      return "Internal Server Error";
  }
}

}  // namespace

ojson finish_reason_json(const FinishReason& r) {
  ojson j = ojson::object();
  switch (r.type) {
    case FinishReason::Type::kLength:
      j["type"] = "length";
      j["length"] = r.length;
      break;
    case FinishReason::Type::kStop:
      j["type"] = "stop";
      if (r.matched_token) {
        j["matched"] = *r.matched_token;
      } else {
        j["matched"] = r.matched_string.value_or("");
      }
      break;
    case FinishReason::Type::kAbort:
      j["type"] = "abort";
      j["message"] = r.message;
      j["status_code"] = nullptr;
      j["err_type"] = nullptr;
      break;
  }
  return j;
}

ojson sample_response(const PromptInput& input, const PromptState& prompt, size_t k,
                      const Tokenizer* tokenizer, std::optional<int64_t> index,
                      StreamCursor* cursor, size_t upto) {
  const SampleState& s = prompt.samples[k];
  const size_t total = std::min(upto, s.output_ids.size());
  const bool finished = s.finish.has_value() && total == s.output_ids.size();
  const size_t from = cursor ? std::min(cursor->tokens, total) : 0;
  const std::span<const int32_t> ids = std::span<const int32_t>(s.output_ids).first(total);
  ojson out = ojson::object();
  if (tokenizer != nullptr) {
    std::string text =
        finished ? s.text : partial_text(*tokenizer, ids, input.request.params.skip_special_tokens);
    if (cursor) {
      const size_t sent = std::min(cursor->text, text.size());
      cursor->text = text.size();
      text = text.substr(sent);
    }
    out["text"] = std::move(text);
  }
  out["output_ids"] = std::vector<int32_t>(ids.begin() + ptrdiff_t(from), ids.end());

  ojson meta = ojson::object();
  meta["id"] = s.rid;
  meta["finish_reason"] = finished ? finish_reason_json(*s.finish) : ojson(nullptr);
  meta["prompt_tokens"] = prompt.prompt_tokens;
  meta["weight_version"] = s.weight_version;
  meta["total_retractions"] = 0;
  if (input.return_logprob) {
    const Tokenizer* text_of = input.return_text_in_logprobs ? tokenizer : nullptr;
    const std::vector<int32_t>& in_ids = input.request.input_ids;
    // Prompt positions [start, len): SGLang reports the first as null; -1 means the last only.
    const size_t start = input.request.logprob_start_len >= 0
                             ? size_t(input.request.logprob_start_len)
                             : in_ids.size() - 1;
    ojson in_lp = ojson::array(), in_top = ojson::array(), in_asked = ojson::array();
    for (size_t pos = start; pos < in_ids.size(); ++pos) {
      const size_t i = pos - start - 1;  // index into the engine's lists (pos > start)
      const bool known = pos > start && i < prompt.input_token_logprobs.size();
      in_lp.push_back(
          logprob_entry(known ? std::optional<float>(prompt.input_token_logprobs[i]) : std::nullopt,
                        in_ids[pos], text_of));
      in_top.push_back(pos > start && i < prompt.input_top_logprobs.size()
                           ? top_entry(prompt.input_top_logprobs[i], text_of)
                           : ojson(nullptr));
      in_asked.push_back(pos > start && i < prompt.input_token_ids_logprobs.size()
                             ? top_entry(prompt.input_token_ids_logprobs[i], text_of)
                             : ojson(nullptr));
    }
    ojson out_lp = ojson::array(), out_top = ojson::array(), out_asked = ojson::array();
    for (size_t t = from; t < total; ++t) {
      out_lp.push_back(logprob_entry(s.output_logprobs[t], s.output_ids[t], text_of));
      if (t < s.output_top_logprobs.size())
        out_top.push_back(top_entry(s.output_top_logprobs[t], text_of));
      if (t < s.output_token_ids_logprobs.size())
        out_asked.push_back(top_entry(s.output_token_ids_logprobs[t], text_of));
    }
    meta["input_token_logprobs"] = std::move(in_lp);
    meta["output_token_logprobs"] = std::move(out_lp);
    if (input.request.top_logprobs_num > 0) {
      meta["input_top_logprobs"] = std::move(in_top);
      meta["output_top_logprobs"] = std::move(out_top);
    }
    if (input.has_token_ids_logprob) {
      meta["input_token_ids_logprobs"] = std::move(in_asked);
      meta["output_token_ids_logprobs"] = std::move(out_asked);
    }
  }
  meta["completion_tokens"] = int64_t(total);
  meta["cached_tokens"] = 0;
  meta["cached_tokens_details"] = nullptr;
  meta["dp_rank"] = nullptr;
  if (finished) {
    meta["e2e_latency"] = s.e2e_seconds;
    meta["response_sent_to_client_ts"] =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  }
  out["meta_info"] = std::move(meta);
  if (index) out["index"] = *index;
  if (cursor) cursor->tokens = total;
  return out;
}

ojson error_response(int code, const std::string& message) {
  ojson j = ojson::object();
  j["object"] = "error";
  j["message"] = message;
  j["type"] = reason_phrase(code);
  j["param"] = nullptr;
  j["code"] = code;
  return j;
}

ojson value_error_response(const std::string& message) {
  ojson inner = ojson::object();
  inner["message"] = message;
  ojson j = ojson::object();
  j["error"] = std::move(inner);
  return j;
}

std::string dump_json(const ojson& j) {
  return j.dump(-1, ' ', false, nlohmann::detail::error_handler_t::replace);
}

std::string sse_event(const ojson& j) { return "data: " + dump_json(j) + "\n\n"; }

}  // namespace fp8rl
