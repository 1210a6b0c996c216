// HF config.json for Qwen3, Qwen2 and Llama decoders: parsing with errors naming the file and
// field, validation, and the Qwen3 config.json that fp8rl writes.
#include "core/hf_config.h"

#include <cmath>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/fs.h"
#include "core/status.h"

namespace fp8rl {
namespace {

using Json = nlohmann::json;

// transformers' Qwen3Config default, used when a Qwen3 config.json has no head_dim.
constexpr int64_t kQwen3DefaultHeadDim = 128;

// Typed access to the fields of one config object; every error names the source and the field.
// Absent and null fields are the same: optional.
class FieldReader {
 public:
  FieldReader(const Json& j, std::string source) : j_(j), source_(std::move(source)) {}

  absl::Status error(std::string_view field, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": field \"", std::string(field), "\" ", std::string(what)));
  }

  // A reader of the nested object `j` found in `field`.
  FieldReader nested(const Json& j, std::string_view field) const {
    return FieldReader(j, absl::StrCat(source_, ": ", std::string(field)));
  }

  // nullptr when absent or null.
  const Json* find(const char* field) const {
    auto it = j_.find(field);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }

  absl::StatusOr<int64_t> integer(std::string_view field, const Json& v) const {
    if (!v.is_number_integer() ||
        (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))) {
      return error(field, absl::StrCat("must be an integer, got ", v.dump()));
    }
    return v.get<int64_t>();
  }

  absl::StatusOr<std::optional<int64_t>> optional_int(const char* field) const {
    const Json* v = find(field);
    if (!v) return std::nullopt;
    FP8RL_ASSIGN_OR_RETURN(int64_t i, integer(field, *v));
    return i;
  }

  absl::StatusOr<int64_t> required_int(const char* field) const {
    FP8RL_ASSIGN_OR_RETURN(std::optional<int64_t> v, optional_int(field));
    if (!v) return error(field, "is missing");
    return *v;
  }

  absl::StatusOr<double> number(const char* field, double fallback) const {
    const Json* v = find(field);
    if (!v) return fallback;
    if (!v->is_number()) return error(field, absl::StrCat("must be a number, got ", v->dump()));
    return v->get<double>();
  }

  absl::StatusOr<bool> boolean(const char* field, bool fallback) const {
    const Json* v = find(field);
    if (!v) return fallback;
    if (!v->is_boolean()) {
      return error(field, absl::StrCat("must be true or false, got ", v->dump()));
    }
    return v->get<bool>();
  }

  absl::StatusOr<std::string> string(const char* field, std::string fallback) const {
    const Json* v = find(field);
    if (!v) return fallback;
    if (!v->is_string()) return error(field, absl::StrCat("must be a string, got ", v->dump()));
    return v->get<std::string>();
  }

  // eos_token_id: an int, a list of ints, or absent.
  absl::StatusOr<std::vector<int64_t>> int_or_list(const char* field) const {
    const Json* v = find(field);
    if (!v) return std::vector<int64_t>{};
    if (!v->is_array()) {
      FP8RL_ASSIGN_OR_RETURN(int64_t i, integer(field, *v));
      return std::vector<int64_t>{i};
    }
    std::vector<int64_t> ids;
    for (const Json& e : *v) {
      FP8RL_ASSIGN_OR_RETURN(int64_t i, integer(field, e));
      ids.push_back(i);
    }
    return ids;
  }

 private:
  const Json& j_;
  std::string source_;
};

// rope_parameters.rope_theta (transformers >= 5) or the top-level rope_theta.
absl::StatusOr<double> read_rope_theta(const FieldReader& f) {
  if (const Json* params = f.find("rope_parameters")) {
    if (!params->is_object()) return f.error("rope_parameters", "must be an object");
    FieldReader inner = f.nested(*params, "rope_parameters");
    if (inner.find("rope_theta")) return inner.number("rope_theta", 0.0);
  }
  return f.number("rope_theta", 10000.0);
}

// dtype (transformers >= 5) or torch_dtype; bfloat16 when neither is given.
absl::StatusOr<DType> read_dtype(const FieldReader& f) {
  const char* field = f.find("dtype") ? "dtype" : "torch_dtype";
  FP8RL_ASSIGN_OR_RETURN(std::string name, f.string(field, "bfloat16"));
  absl::StatusOr<DType> dtype = parse_dtype(name);
  if (!dtype.ok()) return f.error(field, std::string(dtype.status().message()));
  return *dtype;
}

absl::Status read_sizes(const FieldReader& f, ModelConfig& c) {
  FP8RL_ASSIGN_OR_RETURN(c.vocab_size, f.required_int("vocab_size"));
  FP8RL_ASSIGN_OR_RETURN(c.hidden_size, f.required_int("hidden_size"));
  FP8RL_ASSIGN_OR_RETURN(c.intermediate_size, f.required_int("intermediate_size"));
  FP8RL_ASSIGN_OR_RETURN(c.num_hidden_layers, f.required_int("num_hidden_layers"));
  FP8RL_ASSIGN_OR_RETURN(c.num_attention_heads, f.required_int("num_attention_heads"));
  FP8RL_ASSIGN_OR_RETURN(c.max_position_embeddings, f.required_int("max_position_embeddings"));
  FP8RL_ASSIGN_OR_RETURN(std::optional<int64_t> kv_heads, f.optional_int("num_key_value_heads"));
  c.num_key_value_heads = kv_heads.value_or(c.num_attention_heads);
  FP8RL_ASSIGN_OR_RETURN(std::optional<int64_t> head_dim, f.optional_int("head_dim"));
  if (head_dim) {
    c.head_dim = *head_dim;
  } else if (c.model_type == "qwen3") {
    c.head_dim = kQwen3DefaultHeadDim;
  } else if (c.num_attention_heads > 0) {  // else validate() reports the heads
    if (c.hidden_size % c.num_attention_heads != 0) {
      return f.error("hidden_size",
                     absl::StrCat(c.hidden_size, " is not a multiple of num_attention_heads ",
                                  c.num_attention_heads, " (no head_dim given)"));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  return absl::OkStatus();
}

absl::Status positive(std::string_view field, int64_t v) {
  if (v > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("field \"", std::string(field), "\" must be positive, got ", v));
}

absl::Status positive_finite(std::string_view field, double v) {
  if (v > 0 && std::isfinite(v)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("field \"", std::string(field), "\" must be positive and finite, got ", v));
}

}  // namespace

absl::Status ModelConfig::validate() const {
  if (model_type != "qwen3" && model_type != "qwen2" && model_type != "llama") {
    return absl::InvalidArgumentError(absl::StrCat("field \"model_type\" \"", model_type,
                                                   "\" is not one of qwen3, qwen2, llama"));
  }
  FP8RL_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  FP8RL_RETURN_IF_ERROR(positive("hidden_size", hidden_size));
  FP8RL_RETURN_IF_ERROR(positive("intermediate_size", intermediate_size));
  FP8RL_RETURN_IF_ERROR(positive("num_hidden_layers", num_hidden_layers));
  FP8RL_RETURN_IF_ERROR(positive("num_attention_heads", num_attention_heads));
  FP8RL_RETURN_IF_ERROR(positive("num_key_value_heads", num_key_value_heads));
  FP8RL_RETURN_IF_ERROR(positive("head_dim", head_dim));
  FP8RL_RETURN_IF_ERROR(positive("max_position_embeddings", max_position_embeddings));
  FP8RL_RETURN_IF_ERROR(positive_finite("rms_norm_eps", rms_norm_eps));
  FP8RL_RETURN_IF_ERROR(positive_finite("rope_theta", rope_theta));
  if (num_attention_heads % num_key_value_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"num_attention_heads\" ", num_attention_heads,
                     " is not a multiple of num_key_value_heads ", num_key_value_heads));
  }
  if (bos_token_id && *bos_token_id < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"bos_token_id\" must be non-negative, got ", *bos_token_id));
  }
  for (int64_t id : eos_token_ids) {
    if (id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"eos_token_id\" must be non-negative, got ", id));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> parse_model_config(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": config is not a JSON object"));
  }
  FieldReader f(j, source);
  ModelConfig c;
  FP8RL_ASSIGN_OR_RETURN(c.model_type, f.string("model_type", ""));
  if (c.model_type.empty()) return f.error("model_type", "is missing");
  FP8RL_RETURN_IF_ERROR(read_sizes(f, c));
  FP8RL_ASSIGN_OR_RETURN(c.rms_norm_eps, f.number("rms_norm_eps", c.rms_norm_eps));
  FP8RL_ASSIGN_OR_RETURN(c.rope_theta, read_rope_theta(f));
  FP8RL_ASSIGN_OR_RETURN(c.tie_word_embeddings, f.boolean("tie_word_embeddings", false));
  FP8RL_ASSIGN_OR_RETURN(c.attention_bias, f.boolean("attention_bias", false));
  if (c.model_type == "qwen2") c.attention_bias = true;  // Qwen2 always has q/k/v biases
  c.qk_norm = c.model_type == "qwen3";
  FP8RL_ASSIGN_OR_RETURN(c.hidden_act, f.string("hidden_act", c.hidden_act));
  FP8RL_ASSIGN_OR_RETURN(c.bos_token_id, f.optional_int("bos_token_id"));
  FP8RL_ASSIGN_OR_RETURN(c.eos_token_ids, f.int_or_list("eos_token_id"));
  FP8RL_ASSIGN_OR_RETURN(c.dtype, read_dtype(f));
  c.raw = j;
  FP8RL_RETURN_IF_ERROR(annotate(c.validate(), source));
  return c;
}

absl::StatusOr<ModelConfig> load_model_config(const std::string& dir) {
  std::string path = (std::filesystem::path(dir) / "config.json").string();
  FP8RL_ASSIGN_OR_RETURN(std::string text, read_file(path));
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  return parse_model_config(j, path);
}

nlohmann::json model_config_to_json(const ModelConfig& c) {
  Json j = c.raw.is_object() ? c.raw : Json::object();
  j["architectures"] = Json::array({"Qwen3ForCausalLM"});
  j["model_type"] = "qwen3";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    j["rope_parameters"]["rope_theta"] = c.rope_theta;  // transformers 5 reads it from here
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["attention_bias"] = c.attention_bias;
  j["attention_dropout"] = 0.0;
  j["hidden_act"] = c.hidden_act;
  // fp8rl writes BF16 weights (FP8 and INT4 exports keep BF16 activations, as HF's do).
  j["torch_dtype"] = "bfloat16";
  if (j.contains("dtype")) j["dtype"] = "bfloat16";
  j["bos_token_id"] = c.bos_token_id ? Json(*c.bos_token_id) : Json(nullptr);
  if (c.eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  j["use_cache"] = true;
  j["sliding_window"] = nullptr;
  j["use_sliding_window"] = false;
  j["max_window_layers"] = c.num_hidden_layers;
  return j;
}

}  // namespace fp8rl
