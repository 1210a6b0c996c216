// HF config.json parsing for Qwen3, Qwen2 and Llama, its errors, and the Qwen3 config we write.
#include "core/hf_config.h"

#include <string>

#include "core/fs.h"
#include "tests/catch.h"
#include "tests/unit/core/test_util.h"

using namespace fp8rl;
using fp8rl::testing::check_error;
using fp8rl::testing::TempDir;
using fp8rl::testing::write_raw;
using Json = nlohmann::json;

namespace {

// Qwen/Qwen3-0.6B's config.json (transformers 4.51).
Json qwen3_config() {
  return Json::parse(R"({
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
    "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000,
    "sliding_window": null, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false,
    "vocab_size": 151936})");
}

// Qwen/Qwen2.5-0.5B's config.json: no head_dim, no attention_bias field.
Json qwen2_config() {
  return Json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
    "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
    "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
}

// meta-llama/Llama-3.2-1B-Instruct's config.json (abridged): eos is a list.
Json llama_config() {
  return Json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2048, "intermediate_size": 8192, "max_position_embeddings": 131072,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "tie_word_embeddings": true, "torch_dtype": "bfloat16", "vocab_size": 128256})");
}

const std::string kSource = "/ckpt/config.json";

absl::Status parse_status(const Json& j) { return parse_model_config(j, kSource).status(); }

}  // namespace

TEST_CASE("hf config: Qwen3", "[hf_config]") {
  auto c = parse_model_config(qwen3_config(), kSource);
  REQUIRE(c.ok());
  CHECK(c->model_type == "qwen3");
  CHECK(c->vocab_size == 151936);
  CHECK(c->hidden_size == 1024);
  CHECK(c->intermediate_size == 3072);
  CHECK(c->num_hidden_layers == 28);
  CHECK(c->num_attention_heads == 16);
  CHECK(c->num_key_value_heads == 8);
  CHECK(c->head_dim == 128);  // not hidden / heads (64)
  CHECK(c->max_position_embeddings == 40960);
  CHECK(c->rms_norm_eps == 1e-6);
  CHECK(c->rope_theta == 1e6);
  CHECK(c->tie_word_embeddings);
  CHECK(!c->attention_bias);
  CHECK(c->qk_norm);
  CHECK(c->hidden_act == "silu");
  CHECK(c->bos_token_id == 151643);
  CHECK(c->eos_token_ids == std::vector<int64_t>{151645});
  CHECK(c->dtype == DType::kBF16);
  CHECK(c->raw == qwen3_config());
}

TEST_CASE("hf config: Qwen2 and Llama differences", "[hf_config]") {
  auto q2 = parse_model_config(qwen2_config(), kSource);
  REQUIRE(q2.ok());
  CHECK(q2->head_dim == 64);  // 896 / 14
  CHECK(q2->attention_bias);  // implicit q/k/v biases
  CHECK(!q2->qk_norm);

  Json j = qwen2_config();
  j["attention_bias"] = false;  // Qwen2 has biases whatever the field says
  CHECK(parse_model_config(j, kSource)->attention_bias);

  auto llama = parse_model_config(llama_config(), kSource);
  REQUIRE(llama.ok());
  CHECK(llama->head_dim == 64);
  CHECK(!llama->attention_bias);
  CHECK(!llama->qk_norm);
  CHECK(llama->eos_token_ids == std::vector<int64_t>{128001, 128008, 128009});
  CHECK(llama->rope_theta == 500000.0);
  CHECK(llama->rms_norm_eps == 1e-5);

  j = llama_config();
  j["attention_bias"] = true;
  j.erase("head_dim");
  auto with_bias = parse_model_config(j, kSource);
  REQUIRE(with_bias.ok());
  CHECK(with_bias->attention_bias);
  CHECK(with_bias->head_dim == 2048 / 32);
}

TEST_CASE("hf config: defaults and transformers 5 fields", "[hf_config]") {
  Json j = qwen3_config();
  for (const char* k :
       {"num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "tie_word_embeddings",
        "attention_bias", "hidden_act", "bos_token_id", "eos_token_id", "torch_dtype"}) {
    j.erase(k);
  }
  auto c = parse_model_config(j, kSource);
  REQUIRE(c.ok());
  CHECK(c->num_key_value_heads == 16);
  CHECK(c->head_dim == 128);  // transformers' Qwen3Config default
  CHECK(c->rms_norm_eps == 1e-6);
  CHECK(c->rope_theta == 10000.0);
  CHECK(!c->tie_word_embeddings);
  CHECK(!c->attention_bias);
  CHECK(c->hidden_act == "silu");
  CHECK(!c->bos_token_id);
  CHECK(c->eos_token_ids.empty());
  CHECK(c->dtype == DType::kBF16);

  j = qwen3_config();
  j.erase("rope_theta");
  j.erase("torch_dtype");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e6}};
  j["dtype"] = "float32";
  j["eos_token_id"] = nullptr;
  j["num_key_value_heads"] = nullptr;
  c = parse_model_config(j, kSource);
  REQUIRE(c.ok());
  CHECK(c->rope_theta == 5e6);
  CHECK(c->dtype == DType::kF32);
  CHECK(c->eos_token_ids.empty());
  CHECK(c->num_key_value_heads == 16);

  j["rope_parameters"] = {{"rope_type", "default"}};
  j["rope_theta"] = 2e6;
  CHECK(parse_model_config(j, kSource)->rope_theta == 2e6);
}

TEST_CASE("hf config: missing required fields", "[hf_config][corrupt]") {
  for (const char* field :
       {"model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "max_position_embeddings"}) {
    INFO("field " << field);
    Json j = qwen3_config();
    j.erase(field);
    check_error(parse_status(j), absl::StatusCode::kInvalidArgument,
                {kSource, "\"" + std::string(field) + "\"", "missing"});
    j[field] = nullptr;
    check_error(parse_status(j), absl::StatusCode::kInvalidArgument, {kSource, field});
  }
  check_error(parse_status(Json::array()), absl::StatusCode::kInvalidArgument,
              {kSource, "not a JSON object"});
}

TEST_CASE("hf config: wrong types", "[hf_config][corrupt]") {
  struct Case {
    const char* field;
    Json value;
    const char* expected;
  };
  const Case cases[] = {
      {"hidden_size", "1024", "must be an integer"},
      {"hidden_size", 1024.5, "must be an integer"},
      {"vocab_size", 18446744073709551615ull, "must be an integer"},
      {"num_key_value_heads", true, "must be an integer"},
      {"head_dim", Json::array({128}), "must be an integer"},
      {"rms_norm_eps", "1e-6", "must be a number"},
      {"rope_theta", Json::object(), "must be a number"},
      {"tie_word_embeddings", "true", "must be true or false"},
      {"attention_bias", 1, "must be true or false"},
      {"hidden_act", 3, "must be a string"},
      {"model_type", 3, "must be a string"},
      {"bos_token_id", "<s>", "must be an integer"},
      {"eos_token_id", "</s>", "must be an integer"},
      {"eos_token_id", Json::array({1, "x"}), "must be an integer"},
      {"torch_dtype", 16, "must be a string"},
      {"torch_dtype", "float99", "float99"},
      {"dtype", "bogus", "bogus"},
      {"rope_parameters", 5, "must be an object"},
  };
  for (const Case& c : cases) {
    INFO("field " << c.field << " = " << c.value.dump());
    Json j = qwen3_config();
    j[c.field] = c.value;
    check_error(parse_status(j), absl::StatusCode::kInvalidArgument,
                {kSource, "\"" + std::string(c.field) + "\"", c.expected});
  }
  Json j = qwen3_config();
  j["rope_parameters"] = {{"rope_theta", "big"}};
  check_error(parse_status(j), absl::StatusCode::kInvalidArgument,
              {kSource, "rope_parameters", "\"rope_theta\"", "must be a number"});
}

TEST_CASE("hf config: inconsistent values", "[hf_config][corrupt]") {
  auto with = [](const char* field, Json value, Json base = qwen3_config()) {
    base[field] = std::move(value);
    return parse_status(base);
  };
  const auto bad = absl::StatusCode::kInvalidArgument;
  check_error(with("num_key_value_heads", 3), bad,
              {kSource, "num_attention_heads", "16", "not a multiple", "3"});
  check_error(with("hidden_size", 0), bad, {kSource, "\"hidden_size\"", "positive"});
  check_error(with("vocab_size", -1), bad, {kSource, "\"vocab_size\"", "positive"});
  check_error(with("num_hidden_layers", 0), bad, {"\"num_hidden_layers\""});
  check_error(with("num_attention_heads", 0), bad, {"\"num_attention_heads\"", "positive"});
  check_error(with("num_key_value_heads", 0), bad, {"\"num_key_value_heads\"", "positive"});
  check_error(with("head_dim", 0), bad, {"\"head_dim\""});
  check_error(with("rms_norm_eps", 0.0), bad, {"\"rms_norm_eps\""});
  check_error(with("rope_theta", -1.0), bad, {"\"rope_theta\""});
  check_error(with("bos_token_id", -1), bad, {"\"bos_token_id\""});
  check_error(with("eos_token_id", Json::array({1, -2})), bad, {"\"eos_token_id\""});
  check_error(with("model_type", "gpt2"), bad, {kSource, "\"model_type\"", "gpt2"});
  check_error(with("num_attention_heads", 3, qwen2_config()), bad,
              {kSource, "\"hidden_size\"", "896", "num_attention_heads 3"});
  check_error(with("num_attention_heads", 0, qwen2_config()), bad, {"\"num_attention_heads\""});
}

TEST_CASE("hf config: load from a folder", "[hf_config]") {
  TempDir dir;
  std::string path = dir.file("config.json");
  check_error(load_model_config(dir.path()).status(), absl::StatusCode::kNotFound, {path});
  write_raw(path, "{\"model_type\": ");
  check_error(load_model_config(dir.path()).status(), absl::StatusCode::kInvalidArgument,
              {path, "not valid JSON"});
  Json j = qwen3_config();
  j.erase("vocab_size");
  write_raw(path, j.dump());
  check_error(load_model_config(dir.path()).status(), absl::StatusCode::kInvalidArgument,
              {path, "\"vocab_size\""});
  write_raw(path, qwen3_config().dump(2));
  auto c = load_model_config(dir.path());
  REQUIRE(c.ok());
  CHECK(c->hidden_size == 1024);
}

TEST_CASE("hf config: Qwen3 config.json writer", "[hf_config]") {
  ModelConfig c = *parse_model_config(qwen3_config(), kSource);
  c.raw["custom_field"] = "kept";
  c.hidden_size = 2048;
  c.num_hidden_layers = 4;
  c.eos_token_ids = {1, 2};
  c.bos_token_id.reset();
  Json j = model_config_to_json(c);
  CHECK(j["architectures"] == Json::array({"Qwen3ForCausalLM"}));
  CHECK(j["model_type"] == "qwen3");
  CHECK(j["hidden_size"] == 2048);
  CHECK(j["head_dim"] == 128);
  CHECK(j["attention_dropout"] == 0.0);
  CHECK(j["torch_dtype"] == "bfloat16");
  CHECK(j["use_cache"] == true);
  CHECK(j["sliding_window"].is_null());
  CHECK(j["use_sliding_window"] == false);
  CHECK(j["max_window_layers"] == 4);
  CHECK(j["eos_token_id"] == Json::array({1, 2}));
  CHECK(j["bos_token_id"].is_null());
  CHECK(j["custom_field"] == "kept");

  auto back = parse_model_config(j, "written");
  REQUIRE(back.ok());
  CHECK(back->hidden_size == 2048);
  CHECK(back->num_hidden_layers == 4);
  CHECK(back->num_key_value_heads == c.num_key_value_heads);
  CHECK(back->head_dim == c.head_dim);
  CHECK(back->rope_theta == c.rope_theta);
  CHECK(back->rms_norm_eps == c.rms_norm_eps);
  CHECK(back->tie_word_embeddings == c.tie_word_embeddings);
  CHECK(back->eos_token_ids == c.eos_token_ids);
  CHECK(back->qk_norm);

  // A Qwen2 source becomes a complete Qwen3 file: head_dim written, transformers 5 fields synced.
  Json q2 = qwen2_config();
  q2["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  q2["dtype"] = "float32";
  ModelConfig from_q2 = *parse_model_config(q2, kSource);
  from_q2.rope_theta = 3e6;
  Json out = model_config_to_json(from_q2);
  CHECK(out["model_type"] == "qwen3");
  CHECK(out["head_dim"] == 64);
  CHECK(out["attention_bias"] == true);
  CHECK(out["eos_token_id"] == 151643);
  CHECK(out["rope_theta"] == 3e6);
  CHECK(out["rope_parameters"]["rope_theta"] == 3e6);
  CHECK(out["dtype"] == "bfloat16");

  ModelConfig bare;  // no raw: the typed fields alone make the file
  bare.model_type = "qwen3";
  bare.vocab_size = 32;
  bare.hidden_size = 16;
  bare.intermediate_size = 32;
  bare.num_hidden_layers = 2;
  bare.num_attention_heads = 4;
  bare.num_key_value_heads = 2;
  bare.head_dim = 4;
  bare.max_position_embeddings = 64;
  REQUIRE(bare.validate().ok());
  auto reparsed = parse_model_config(model_config_to_json(bare), "bare");
  REQUIRE(reparsed.ok());
  CHECK(reparsed->head_dim == 4);
  CHECK(reparsed->num_key_value_heads == 2);
}
