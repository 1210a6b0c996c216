// SGLang's /generate request: FastAPI's schema check and normalize_batch_and_arguments
// (services/rollout/sglang_protocol.h).
#include <chrono>
#include <limits>
#include <random>
#include <set>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "services/rollout/sglang_protocol.h"

namespace fp8rl {
namespace {

using json = nlohmann::json;

absl::Status bad(std::string message) { return absl::InvalidArgumentError(std::move(message)); }

bool is_int(const json& v) {
  return v.is_number_integer() &&
         (!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(INT64_MAX));
}
bool is_int_list(const json& v) {
  if (!v.is_array()) return false;
  for (const json& x : v)
    if (!is_int(x)) return false;
  return true;
}
bool is_list_of(const json& v, bool (*item)(const json&)) {
  if (!v.is_array()) return false;
  for (const json& x : v)
    if (!item(x)) return false;
  return true;
}

// What FastAPI accepts for each GenerateReqInput field (null is always accepted: the default).
struct FieldRule {
  const char* name;
  bool (*ok)(const json&);
  const char* expected;
};

bool boolean(const json& v) { return v.is_boolean(); }
bool integer(const json& v) { return is_int(v); }
bool object(const json& v) { return v.is_object(); }
bool str_or_strs(const json& v) {
  return v.is_string() || is_list_of(v, [](const json& x) { return x.is_string(); });
}
bool ids_or_batch(const json& v) { return is_int_list(v) || is_list_of(v, is_int_list); }
bool dict_or_dicts(const json& v) { return v.is_object() || is_list_of(v, object); }
bool bool_or_bools(const json& v) { return v.is_boolean() || is_list_of(v, boolean); }
bool int_or_ints(const json& v) { return is_int(v) || is_list_of(v, integer); }
// Features fp8rl does not implement: accepted only at their defaults.
bool unset(const json& v) { return v.is_null(); }
bool is_false(const json& v) { return v.is_boolean() && !v.get<bool>(); }

constexpr FieldRule kFields[] = {
    {"text", str_or_strs, "a string or a list of strings"},
    {"input_ids", ids_or_batch, "a list of integers or a list of lists of integers"},
    {"sampling_params", dict_or_dicts, "an object or a list of objects"},
    {"return_logprob", bool_or_bools, "a boolean or a list of booleans"},
    {"logprob_start_len", int_or_ints, "an integer or a list of integers"},
    {"top_logprobs_num", int_or_ints, "an integer or a list of integers"},
    {"token_ids_logprob", ids_or_batch, "a list of integers or a list of lists of integers"},
    {"return_text_in_logprobs", boolean, "a boolean"},
    {"stream", boolean, "a boolean"},
    {"rid", str_or_strs, "a string or a list of strings"},
    {"log_metrics", boolean, "a boolean"},
    {"priority", integer, "an integer"},
    {"extra_key", str_or_strs, "a string or a list of strings"},
    {"no_logs", boolean, "a boolean"},
    {"custom_labels", object, "an object"},
    {"data_parallel_rank", [](const json& v) { return is_int(v) && v.get<int64_t>() == 0; },
     "0 (one data-parallel rank)"},
    {"routed_dp_rank", [](const json& v) { return is_int(v) && v.get<int64_t>() == 0; },
     "0 (one data-parallel rank)"},
    {"input_embeds", unset, "null (input embeddings are not supported)"},
    {"image_data", unset, "null (multimodal input is not supported)"},
    {"video_data", unset, "null (multimodal input is not supported)"},
    {"audio_data", unset, "null (multimodal input is not supported)"},
    {"modalities", unset, "null (multimodal input is not supported)"},
    {"lora_path", unset, "null (LoRA is not supported)"},
    {"lora_id", unset, "null (LoRA is not supported)"},
    {"session_params", unset, "null (sessions are not supported)"},
    {"custom_logit_processor", unset, "null (custom logit processors are not supported)"},
    {"bootstrap_host", unset, "null (PD disaggregation is not supported)"},
    {"bootstrap_port", unset, "null (PD disaggregation is not supported)"},
    {"bootstrap_room", unset, "null (PD disaggregation is not supported)"},
    {"return_hidden_states", is_false, "false (hidden states are not returned)"},
    {"return_entropy", is_false, "false (entropies are not returned)"},
    {"return_routed_experts", is_false, "false (a dense model routes no experts)"},
};

// SamplingParams(**sampling_params): one dict → engine params.
struct ParsedSampling {
  SamplingParams params;
  bool unlimited_new_tokens = false;  // max_new_tokens: null → up to the context
  std::optional<int64_t> stream_interval;
};

absl::StatusOr<int64_t> get_int(const json& v, std::string_view key) {
  if (!is_int(v))
    return bad(absl::StrCat(std::string(key), " must be an integer, got ", v.dump(), "."));
  return v.get<int64_t>();
}
absl::StatusOr<double> get_number(const json& v, std::string_view key) {
  if (!v.is_number() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)))
    return bad(absl::StrCat(std::string(key), " must be a number, got ", v.dump(), "."));
  return v.get<double>();
}
absl::StatusOr<bool> get_bool(const json& v, std::string_view key) {
  if (!v.is_boolean())
    return bad(absl::StrCat(std::string(key), " must be a boolean, got ", v.dump(), "."));
  return v.get<bool>();
}
// An id for a token list; ids beyond int32 can only be outside the vocabulary.
absl::StatusOr<int32_t> get_id(const json& v, std::string_view key, int64_t vocab) {
  FP8RL_ASSIGN_OR_RETURN(const int64_t id, get_int(v, key));
  if (id < std::numeric_limits<int32_t>::min() || id > std::numeric_limits<int32_t>::max())
    return bad(absl::StrCat("The ", std::string(key), " contain ", id,
                            ", outside the vocabulary [0, ", vocab, ")."));
  return int32_t(id);
}
absl::StatusOr<std::vector<int32_t>> get_ids(const json& v, std::string_view key, int64_t vocab) {
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (const json& x : v) {
    FP8RL_ASSIGN_OR_RETURN(const int32_t id, get_id(x, key, vocab));
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<ParsedSampling> parse_sampling(const json& sp, int64_t vocab) {
  ParsedSampling out;
  SamplingParams& p = out.params;
  for (const auto& [key, v] : sp.items()) {
    if (v.is_null()) {
      // Every key's default; max_new_tokens=None means "up to the context" in SGLang.
      if (key == "max_new_tokens") out.unlimited_new_tokens = true;
      continue;
    }
    if (key == "max_new_tokens") {
      FP8RL_ASSIGN_OR_RETURN(p.max_new_tokens, get_int(v, key));
    } else if (key == "min_new_tokens") {
      FP8RL_ASSIGN_OR_RETURN(p.min_new_tokens, get_int(v, key));
    } else if (key == "temperature") {
      FP8RL_ASSIGN_OR_RETURN(p.temperature, get_number(v, key));
    } else if (key == "top_p") {
      FP8RL_ASSIGN_OR_RETURN(p.top_p, get_number(v, key));
    } else if (key == "top_k") {
      FP8RL_ASSIGN_OR_RETURN(p.top_k, get_int(v, key));
    } else if (key == "min_p") {
      FP8RL_ASSIGN_OR_RETURN(p.min_p, get_number(v, key));
    } else if (key == "frequency_penalty") {
      FP8RL_ASSIGN_OR_RETURN(p.frequency_penalty, get_number(v, key));
    } else if (key == "presence_penalty") {
      FP8RL_ASSIGN_OR_RETURN(p.presence_penalty, get_number(v, key));
    } else if (key == "repetition_penalty") {
      FP8RL_ASSIGN_OR_RETURN(p.repetition_penalty, get_number(v, key));
    } else if (key == "n") {
      FP8RL_ASSIGN_OR_RETURN(p.n, get_int(v, key));
    } else if (key == "ignore_eos") {
      FP8RL_ASSIGN_OR_RETURN(p.ignore_eos, get_bool(v, key));
    } else if (key == "skip_special_tokens") {
      FP8RL_ASSIGN_OR_RETURN(p.skip_special_tokens, get_bool(v, key));
    } else if (key == "no_stop_trim") {
      FP8RL_ASSIGN_OR_RETURN(p.no_stop_trim, get_bool(v, key));
    } else if (key == "spaces_between_special_tokens") {
      // Only changes how adjacent special tokens are joined when they are not skipped; fp8rl's
      // decoder joins them as HF's fast tokenizers do (no spaces).
      FP8RL_RETURN_IF_ERROR(get_bool(v, key).status());
    } else if (key == "stop") {
      if (v.is_string()) {
        p.stop = {v.get<std::string>()};
      } else if (is_list_of(v, [](const json& x) { return x.is_string(); })) {
        p.stop = v.get<std::vector<std::string>>();
      } else {
        return bad(absl::StrCat("stop must be a string or a list of strings, got ", v.dump(), "."));
      }
    } else if (key == "stop_token_ids") {
      if (!v.is_array())
        return bad(absl::StrCat("stop_token_ids must be a list of integers, got ", v.dump(), "."));
      FP8RL_ASSIGN_OR_RETURN(p.stop_token_ids, get_ids(v, key, vocab));
    } else if (key == "sampling_seed") {
      FP8RL_ASSIGN_OR_RETURN(const int64_t seed, get_int(v, key));
      if (seed < 0) return bad(absl::StrCat("sampling_seed must be at least 0, got ", seed, "."));
      p.seed = uint64_t(seed);
    } else if (key == "logit_bias") {
      if (!v.is_object())
        return bad(
            absl::StrCat("logit_bias must be an object of token id to bias, got ", v.dump(), "."));
      for (const auto& [id_text, bias] : v.items()) {
        int64_t id = 0;
        if (!absl::SimpleAtoi(id_text, &id) || id < std::numeric_limits<int32_t>::min() ||
            id > std::numeric_limits<int32_t>::max())
          return bad(absl::StrCat("logit_bias keys must be token ids, got \"", id_text, "\"."));
        FP8RL_ASSIGN_OR_RETURN(const double b, get_number(bias, "logit_bias values"));
        p.logit_bias.emplace_back(int32_t(id), float(b));
      }
    } else if (key == "stream_interval") {
      FP8RL_ASSIGN_OR_RETURN(const int64_t interval, get_int(v, key));
      if (interval < 1)
        return bad(absl::StrCat("stream_interval must be at least 1, got ", interval, "."));
      out.stream_interval = interval;
    } else if (key == "custom_params") {
      // Inputs of custom logit processors, which fp8rl does not run (slime's
      // return_top_p_token_ids is one): accepted and unused.
    } else if (key == "json_schema" || key == "regex" || key == "ebnf" || key == "structural_tag" ||
               key == "stop_regex") {
      return bad(absl::StrCat(key,
                              " is not supported by fp8rl's rollout server (no constrained "
                              "decoding)."));
    } else {
      return bad(absl::StrCat("SamplingParams got an unexpected keyword argument '", key, "'."));
    }
  }
  if (p.top_k == -1 || p.top_k >= (int64_t(1) << 30)) p.top_k = -1;  // SGLang's "all"
  return out;
}

// A batch field: one value for every prompt, or a list of one per prompt (length checked).
const json* pick(const json* field, size_t i) {
  if (field == nullptr || !field->is_array()) return field;
  return i < field->size() ? &(*field)[i] : nullptr;
}

absl::Status check_batch_length(const json* field, const char* name, size_t batch, bool lists) {
  if (field == nullptr || !field->is_array()) return absl::OkStatus();
  // token_ids_logprob's single form is itself a list of ints.
  if (lists && (field->empty() || field->front().is_number())) return absl::OkStatus();
  if (field->size() != batch)
    return bad(absl::StrCat("The length of ", name, " (", field->size(),
                            ") does not match the batch size (", batch, ")."));
  return absl::OkStatus();
}
}  // namespace

absl::Status check_generate_schema(const json& body) {
  if (!body.is_object())
    return bad(
        absl::StrCat("body: Input should be a valid dictionary or object to extract "
                     "fields from, got ",
                     body.type_name(), "."));
  static const std::set<std::string_view> kKnown = [] {
    std::set<std::string_view> s;
    for (const FieldRule& f : kFields) s.insert(f.name);
    return s;
  }();
  for (const auto& [key, v] : body.items()) {
    if (!kKnown.count(key)) return bad(absl::StrCat(key, ": Extra inputs are not permitted."));
  }
  for (const FieldRule& f : kFields) {
    auto it = body.find(f.name);
    if (it == body.end() || it->is_null()) continue;
    if (!f.ok(*it))
      return bad(absl::StrCat(f.name, ": Input should be ", f.expected, ", got ",
                              it->dump().substr(0, 200), "."));
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerateInput> parse_generate(const json& body, const ProtocolContext& ctx) {
  const auto get = [&](const char* key) -> const json* {
    auto it = body.find(key);
    return it == body.end() || it->is_null() ? nullptr : &*it;
  };
  GenerateInput out;
  std::vector<std::vector<int32_t>> prompts;
  bool batch_input = false;
  if (const json* text = get("text")) {
    if (ctx.tokenizer == nullptr)
      return bad(
          "The engine initialized with skip_tokenizer_init=True cannot accept text prompts. "
          "Please provide input_ids or re-initialize the engine with skip_tokenizer_init=False.");
    batch_input = text->is_array();
    const std::vector<std::string> texts = batch_input
                                               ? text->get<std::vector<std::string>>()
                                               : std::vector<std::string>{text->get<std::string>()};
    for (const std::string& t : texts) {
      FP8RL_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ctx.tokenizer->encode(t));
      prompts.push_back(std::move(ids));
    }
  } else if (const json* ids = get("input_ids")) {
    if (ids->empty()) return bad("input_ids cannot be empty.");
    batch_input = ids->front().is_array();
    if (batch_input) {
      for (const json& one : *ids) {
        FP8RL_ASSIGN_OR_RETURN(std::vector<int32_t> p, get_ids(one, "input_ids", ctx.vocab_size));
        prompts.push_back(std::move(p));
      }
    } else {
      FP8RL_ASSIGN_OR_RETURN(std::vector<int32_t> p, get_ids(*ids, "input_ids", ctx.vocab_size));
      prompts.push_back(std::move(p));
    }
  } else {
    return bad("Either text, input_ids or input_embeds should be provided.");
  }
  const size_t batch = prompts.size();
  if (batch == 0) return bad("The batch is empty: text or input_ids has no prompt.");

  const json* sampling = get("sampling_params");
  if (sampling && sampling->is_array() && sampling->size() != batch)
    return bad(absl::StrCat("The length of sampling_params (", sampling->size(),
                            ") does not match the batch size (", batch, ")."));
  FP8RL_RETURN_IF_ERROR(check_batch_length(get("return_logprob"), "return_logprob", batch, false));
  FP8RL_RETURN_IF_ERROR(
      check_batch_length(get("logprob_start_len"), "logprob_start_len", batch, false));
  FP8RL_RETURN_IF_ERROR(
      check_batch_length(get("top_logprobs_num"), "top_logprobs_num", batch, false));
  FP8RL_RETURN_IF_ERROR(
      check_batch_length(get("token_ids_logprob"), "token_ids_logprob", batch, true));
  const json* rid = get("rid");
  if (rid && rid->is_array() && rid->size() != batch)
    return bad("The specified rids length mismatch with the batch_size for batch processing.");

  out.stream = get("stream") ? get("stream")->get<bool>() : false;
  out.log_metrics = get("log_metrics") ? get("log_metrics")->get<bool>() : true;
  const bool text_in_logprobs =
      get("return_text_in_logprobs") ? get("return_text_in_logprobs")->get<bool>() : false;

  int64_t n = -1;
  for (size_t i = 0; i < batch; ++i) {
    PromptInput p;
    const json* sp = sampling ? (sampling->is_array() ? &(*sampling)[i] : sampling) : nullptr;
    FP8RL_ASSIGN_OR_RETURN(ParsedSampling parsed,
                           parse_sampling(sp ? *sp : json::object(), ctx.vocab_size));
    if (n >= 0 && parsed.params.n != n)
      return bad("The parallel_sample_num should be the same for all samples in sample params.");
    n = parsed.params.n;
    p.request.input_ids = std::move(prompts[i]);
    p.request.params = std::move(parsed.params);
    const int64_t prompt_len = int64_t(p.request.input_ids.size());
    if (parsed.unlimited_new_tokens)
      p.request.params.max_new_tokens = std::max<int64_t>(0, ctx.context_length - 1 - prompt_len);
    p.stream_interval = parsed.stream_interval.value_or(ctx.stream_interval);

    const json* lp = pick(get("return_logprob"), i);
    p.return_logprob = lp && lp->get<bool>();
    p.return_text_in_logprobs = text_in_logprobs && ctx.tokenizer != nullptr;
    if (p.return_logprob) {
      if (const json* start = pick(get("logprob_start_len"), i)) {
        p.request.logprob_start_len = start->get<int64_t>();
        if (p.request.logprob_start_len < -1)
          return bad(absl::StrCat("logprob_start_len must be -1 or at least 0, got ",
                                  p.request.logprob_start_len, "."));
      }
      if (const json* top = pick(get("top_logprobs_num"), i))
        p.request.top_logprobs_num = top->get<int64_t>();
      if (const json* asked = get("token_ids_logprob")) {
        const bool per_prompt = !asked->empty() && asked->front().is_array();
        if (!per_prompt || i < asked->size()) {
          FP8RL_ASSIGN_OR_RETURN(
              p.request.token_ids_logprob,
              get_ids(per_prompt ? (*asked)[i] : *asked, "token_ids_logprob", ctx.vocab_size));
        }
        p.has_token_ids_logprob = true;
      }
    }
    // rids: one per sample, as normalize_batch_and_arguments expands them.
    const bool expand = batch_input || n > 1;
    for (int64_t j = 0; j < n; ++j) {
      if (rid == nullptr) {
        p.rids.push_back(random_rid());
      } else if (rid->is_string()) {
        p.rids.push_back(expand ? absl::StrCat(rid->get<std::string>(), "_", int64_t(i) * n + j)
                                : rid->get<std::string>());
      } else {
        const std::string base = (*rid)[i].get<std::string>();
        p.rids.push_back(n > 1 ? absl::StrCat(base, "_", j) : base);
      }
    }
    out.prompts.push_back(std::move(p));
  }
  out.batch = batch_input || n > 1;
  return out;
}

std::string random_rid() {
  thread_local std::mt19937_64 rng{
      std::random_device{}() ^
      uint64_t(std::chrono::steady_clock::now().time_since_epoch().count())};
  return absl::StrFormat("%016x%016x", rng(), rng());
}
}  // namespace fp8rl
