// The generation engine on tiny random models: greedy tokens and log-probs against the full
// forward (Decoder::forward over prompt + output), continuous batching against requests run
// alone, seeds, n > 1, stops, abort and bad requests.
#include "inference/engine.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "core/random.h"
#include "core/status.h"
#include "inference/unicode.h"
#include "model/tiny_model.h"
#include "tests/catch.h"
#include "tests/unit/model/grad_check.h"

using namespace fp8rl;

namespace {

ModelConfig small_config(int64_t vocab) {
  ModelConfig c = tiny_qwen3_config();
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = vocab;
  c.max_position_embeddings = 96;
  c.dtype = DType::kF32;
  c.eos_token_ids = {2};
  return c;
}

// Random parameters, large enough that the next-token distributions are far from uniform.
Decoder random_decoder(const ModelConfig& c, LinearPrecision precision = LinearPrecision::kF32) {
  DecoderParams p = test::random_params(c, 7, 0.3);
  DecoderOptions o;
  o.linear.precision = precision;
  auto d = Decoder::create(c, std::move(p), o);
  FP8RL_CHECK_OK(d.status());
  return *std::move(d);
}

GenerateRequest request(std::vector<int32_t> ids, int64_t max_new, double temperature,
                        std::optional<uint64_t> seed = std::nullopt) {
  GenerateRequest r;
  r.input_ids = std::move(ids);
  r.params.max_new_tokens = max_new;
  r.params.temperature = temperature;
  r.params.ignore_eos = true;
  r.params.seed = seed;
  return r;
}

// Full forward over prompt + output: for each output token, the argmax of the logits that
// predicted it and the trainer's log-prob of it.
void check_against_full_forward(const Decoder& model, const std::vector<int32_t>& prompt,
                                const SequenceOutput& out, bool greedy) {
  PackedBatch b;
  b.tokens = prompt;
  b.tokens.insert(b.tokens.end(), out.output_ids.begin(), out.output_ids.end());
  b.cu_seqlens = {0, int32_t(b.tokens.size())};
  std::vector<int32_t> targets(b.tokens.size(), -1);
  for (size_t i = 0; i + 1 < b.tokens.size(); ++i) targets[i] = b.tokens[i + 1];
  auto fwd = model.forward(b, targets);
  REQUIRE(fwd.ok());
  const std::vector<float> logits = model.logits(*fwd);
  const int64_t v = model.config().vocab_size;
  for (size_t k = 0; k < out.output_ids.size(); ++k) {
    const size_t pos = prompt.size() - 1 + k;
    if (greedy) {
      const float* row = logits.data() + int64_t(pos) * v;
      CHECK(out.output_ids[k] == int32_t(std::max_element(row, row + v) - row));
    }
    CHECK(std::abs(out.output_logprobs[k] - fwd->logprob[pos]) <= 1e-5f);
  }
}

}  // namespace

TEST_CASE("engine: greedy tokens and log-probs equal the full forward's") {
  for (LinearPrecision precision : {LinearPrecision::kF32, LinearPrecision::kFP8}) {
    CAPTURE(linear_precision_name(precision));
    const Decoder model = random_decoder(small_config(61), precision);
    Engine engine(&model, nullptr);
    const std::vector<int32_t> prompt{5, 17, 3, 40, 22, 9};
    auto outs = engine.generate({request(prompt, 24, 0.0)});
    REQUIRE(outs.ok());
    REQUIRE(outs->size() == 1);
    const SequenceOutput& out = (*outs)[0];
    CHECK(out.output_ids.size() == 24);
    CHECK(out.finish->type == FinishReason::Type::kLength);
    CHECK(out.finish->length == 24);
    check_against_full_forward(model, prompt, out, true);
    // Not a constant continuation (the check above would be weak).
    CHECK(std::set<int32_t>(out.output_ids.begin(), out.output_ids.end()).size() > 3);
  }
}

TEST_CASE("engine: sampled tokens carry the full forward's log-probs at temperature 1") {
  const Decoder model = random_decoder(small_config(61));
  Engine engine(&model, nullptr);
  GenerateRequest r = request({1, 2, 3}, 20, 0.7, 11);
  r.params.top_p = 0.9;
  r.params.top_k = 20;
  auto outs = engine.generate({r});
  REQUIRE(outs.ok());
  check_against_full_forward(model, {1, 2, 3}, (*outs)[0], false);
}

TEST_CASE("engine: continuous batching gives the tokens each request gets alone") {
  const Decoder model = random_decoder(small_config(61));
  const std::vector<GenerateRequest> reqs{request({4, 8, 15, 16}, 12, 1.0, 1),
                                          request({23, 42}, 7, 0.0),
                                          request({7, 7, 7, 1, 2, 3, 4, 5}, 10, 0.8, 3)};
  std::vector<SequenceOutput> alone;
  for (const GenerateRequest& r : reqs) {
    Engine e(&model, nullptr);
    auto o = e.generate({r});
    REQUIRE(o.ok());
    alone.push_back((*o)[0]);
  }
  // Staggered arrivals: request 1 joins after 2 steps, request 2 after 5.
  Engine engine(&model, nullptr);
  std::map<int64_t, SequenceOutput> got;
  std::vector<int64_t> ids;
  for (int s = 0; engine.has_unfinished() || s < 6; ++s) {
    if (s == 0 || s == 2 || s == 5) {
      auto id = engine.add_request(reqs[ids.size()]);
      REQUIRE(id.ok());
      ids.push_back(*id);
    }
    if (s == 3) CHECK(engine.num_running() == 2);
    auto outs = engine.step();
    REQUIRE(outs.ok());
    for (SequenceOutput& o : *outs) got[o.request_id] = o;
  }
  REQUIRE(got.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(got[ids[i]].output_ids == alone[i].output_ids);
    CHECK(got[ids[i]].output_logprobs == alone[i].output_logprobs);
  }
}

TEST_CASE("engine: seeds reproduce and sample i of n uses seed + i") {
  const Decoder model = random_decoder(small_config(61));
  Engine engine(&model, nullptr);
  auto a = engine.generate({request({3, 1, 4}, 16, 1.0, 100)});
  auto b = engine.generate({request({3, 1, 4}, 16, 1.0, 100)});
  auto c = engine.generate({request({3, 1, 4}, 16, 1.0, 101)});
  REQUIRE((a.ok() && b.ok() && c.ok()));
  CHECK((*a)[0].output_ids == (*b)[0].output_ids);
  CHECK((*a)[0].output_ids != (*c)[0].output_ids);
  GenerateRequest three = request({3, 1, 4}, 16, 1.0, 100);
  three.params.n = 3;
  auto n3 = engine.generate({three});
  REQUIRE(n3.ok());
  REQUIRE(n3->size() == 3);
  CHECK((*n3)[0].output_ids == (*a)[0].output_ids);
  CHECK((*n3)[1].output_ids == (*c)[0].output_ids);
  CHECK((*n3)[1].index == 1);
  check_against_full_forward(model, {3, 1, 4}, (*n3)[2], false);
}

TEST_CASE("engine: stop tokens and EOS and ignore_eos and zero max_new_tokens") {
  const Decoder model = random_decoder(small_config(61));
  Engine engine(&model, nullptr);
  const std::vector<int32_t> prompt{9, 8, 7};
  const std::vector<int32_t> free_run =
      (*engine.generate({request(prompt, 16, 0.0)}))[0].output_ids;
  const int32_t stop = free_run[5];
  const size_t first = size_t(std::find(free_run.begin(), free_run.end(), stop) - free_run.begin());

  GenerateRequest r = request(prompt, 16, 0.0);
  r.params.stop_token_ids = {stop};
  SequenceOutput out = (*engine.generate({r}))[0];
  CHECK(out.output_ids == std::vector<int32_t>(free_run.begin(), free_run.begin() + first + 1));
  CHECK(out.finish->type == FinishReason::Type::kStop);
  CHECK(out.finish->matched_token == stop);

  // The same token as EOS: stops unless ignore_eos.
  EngineOptions eos;
  eos.eos_token_ids = {stop};
  Engine with_eos(&model, nullptr, eos);
  r.params.stop_token_ids.clear();
  r.params.ignore_eos = false;
  CHECK((*with_eos.generate({r}))[0].output_ids.size() == first + 1);
  r.params.ignore_eos = true;
  CHECK((*with_eos.generate({r}))[0].output_ids == free_run);

  r.params.max_new_tokens = 0;
  out = (*engine.generate({r}))[0];
  CHECK(out.output_ids.empty());
  CHECK(out.finish->type == FinishReason::Type::kLength);
}

TEST_CASE("engine: stop strings cut the text unless no_stop_trim") {
  // A byte-level tokenizer whose ids 0..255 are the bytes' tokens; the model's vocabulary matches.
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0, n = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    std::string ch;
    utf8_append(printable ? uint32_t(b) : uint32_t(256 + n++), &ch);
    vocab[ch] = b;
  }
  auto tok = Tokenizer::from_json(
      {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
       {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
       {"decoder", {{"type", "ByteLevel"}}}});
  REQUIRE(tok.ok());
  const Decoder model = random_decoder(small_config(256));
  Engine engine(&model, &*tok);
  const std::vector<int32_t> prompt{'H', 'i', ' '};
  const SequenceOutput free_run = (*engine.generate({request(prompt, 20, 0.0)}))[0];
  CHECK(free_run.text == tok->decode(free_run.output_ids, true));
  // Two ASCII output tokens as the stop string, so the match is at a known byte.
  size_t k = 4;
  while (k + 1 < free_run.output_ids.size() &&
         (free_run.output_ids[k] >= 128 || free_run.output_ids[k + 1] >= 128))
    ++k;
  REQUIRE(k + 1 < free_run.output_ids.size());
  const std::string stop{char(free_run.output_ids[k]), char(free_run.output_ids[k + 1])};
  GenerateRequest r = request(prompt, 20, 0.0);
  r.params.stop = {"never-there", stop};
  SequenceOutput out = (*engine.generate({r}))[0];
  REQUIRE(out.finish->type == FinishReason::Type::kStop);
  CHECK(out.finish->matched_string == stop);
  CHECK(out.output_ids.size() <= k + 2);
  const std::string full = tok->decode(out.output_ids, true);
  CHECK(absl::EndsWith(full, stop));
  CHECK(out.text == full.substr(0, full.find(stop)));
  r.params.no_stop_trim = true;
  CHECK((*engine.generate({r}))[0].text == full);
}

TEST_CASE("engine: abort finishes a running request that progress shows") {
  const Decoder model = random_decoder(small_config(61));
  Engine engine(&model, nullptr);
  auto id = engine.add_request(request({1, 2, 3}, 50, 1.0, 5));
  REQUIRE(id.ok());
  REQUIRE(engine.step().ok());
  REQUIRE(engine.step().ok());
  REQUIRE(engine.progress(*id).size() == 1);
  CHECK(engine.progress(*id)[0]->output_ids.size() == 2);
  CHECK(engine.abort(*id, "client went away"));
  CHECK_FALSE(engine.abort(*id));
  CHECK_FALSE(engine.has_unfinished());
  auto outs = engine.step();
  REQUIRE(outs.ok());
  REQUIRE(outs->size() == 1);
  CHECK((*outs)[0].finish->type == FinishReason::Type::kAbort);
  CHECK((*outs)[0].finish->message == "client went away");
  CHECK((*outs)[0].output_ids.size() == 2);
}

TEST_CASE("engine: bad requests are refused with SGLang's messages") {
  const Decoder model = random_decoder(small_config(61));
  Engine engine(&model, nullptr);
  const auto message = [&](GenerateRequest r) {
    auto id = engine.add_request(std::move(r));
    CHECK(id.status().code() == absl::StatusCode::kInvalidArgument);
    return std::string(id.status().message());
  };
  CHECK(message(request({}, 4, 0.0)) == "input_ids cannot be empty.");
  CHECK(absl::StrContains(message(request({1, 61}, 4, 0.0)), "61"));
  CHECK(absl::StrContains(message(request(std::vector<int32_t>(96, 1), 4, 0.0)),
                          "longer than the model's context length (96 tokens)"));
  CHECK(absl::StrContains(message(request({1}, 95, 0.0)), "maximum context length of 96"));
  GenerateRequest bad = request({1}, 4, 0.0);
  bad.params.top_p = 0;
  CHECK(absl::StrContains(message(bad), "top_p must be in (0, 1]"));
  bad = request({1}, 4, 0.0);
  bad.params.stop = {"x"};
  CHECK(absl::StrContains(message(bad), "tokenizer"));
  CHECK_FALSE(engine.has_unfinished());
}

TEST_CASE("engine: penalties steer sampling, log-probs stay the model's") {
  const Decoder model = random_decoder(small_config(61));
  Engine engine(&model, nullptr);
  const std::vector<int32_t> prompt{6, 2, 8};
  GenerateRequest plain = request(prompt, 24, 0.0);
  const SequenceOutput free_run = (*engine.generate({plain}))[0];
  GenerateRequest penalized = plain;
  penalized.params.frequency_penalty = 2.0;
  penalized.params.presence_penalty = 2.0;
  penalized.params.repetition_penalty = 2.0;
  const SequenceOutput out = (*engine.generate({penalized}))[0];
  CHECK(out.output_ids != free_run.output_ids);
  // Each greedy pick is the argmax of the penalized row: a repeat needs a large margin.
  check_against_full_forward(model, prompt, out, false);
  CHECK(std::set<int32_t>(out.output_ids.begin(), out.output_ids.end()).size() >
        std::set<int32_t>(free_run.output_ids.begin(), free_run.output_ids.end()).size());

  // logit_bias forces a token; min_new_tokens holds back EOS.
  GenerateRequest biased = plain;
  biased.params.logit_bias = {{13, 1e4f}};
  const SequenceOutput forced = (*engine.generate({biased}))[0];
  CHECK(forced.output_ids == std::vector<int32_t>(24, 13));
  EngineOptions eos;
  eos.eos_token_ids = {free_run.output_ids[0]};
  Engine with_eos(&model, nullptr, eos);
  GenerateRequest min_new = plain;
  min_new.params.ignore_eos = false;
  CHECK((*with_eos.generate({min_new}))[0].output_ids.size() == 1);
  min_new.params.min_new_tokens = 5;
  const SequenceOutput held = (*with_eos.generate({min_new}))[0];
  CHECK(held.output_ids.size() >= 6);
  for (size_t i = 0; i < 5; ++i) CHECK(held.output_ids[i] != free_run.output_ids[0]);
}

TEST_CASE("engine: top-k, asked-id and prompt log-probs equal the full forward's") {
  const Decoder model = random_decoder(small_config(61));
  Engine engine(&model, nullptr);
  const std::vector<int32_t> prompt{5, 17, 3, 40, 22, 9};
  GenerateRequest r = request(prompt, 6, 0.8, 21);
  r.logprob_start_len = 1;
  r.top_logprobs_num = 4;
  r.token_ids_logprob = {0, 60};
  r.params.n = 2;
  auto outs = engine.generate({r});
  REQUIRE(outs.ok());
  REQUIRE(outs->size() == 2);

  PackedBatch b;
  b.tokens = prompt;
  b.cu_seqlens = {0, int32_t(prompt.size())};
  std::vector<int32_t> targets(prompt.size(), -1);
  for (size_t i = 0; i + 1 < prompt.size(); ++i) targets[i] = prompt[i + 1];
  auto fwd = model.forward(b, targets);
  REQUIRE(fwd.ok());
  const std::vector<float> logits = model.logits(*fwd);
  const int64_t v = model.config().vocab_size;
  for (const SequenceOutput& out : *outs) {
    check_against_full_forward(model, prompt, out, false);
    // Prompt positions 2..5 (one past logprob_start_len), bitwise the trainer's numbers.
    REQUIRE(out.input_token_logprobs.size() == prompt.size() - 2);
    REQUIRE(out.input_top_logprobs.size() == prompt.size() - 2);
    REQUIRE(out.input_token_ids_logprobs.size() == prompt.size() - 2);
    for (size_t p = 2; p < prompt.size(); ++p) {
      CHECK(out.input_token_logprobs[p - 2] == fwd->logprob[p - 1]);
      const float* row = logits.data() + int64_t(p - 1) * v;
      const int32_t best = int32_t(std::max_element(row, row + v) - row);
      CHECK(out.input_top_logprobs[p - 2].size() == 4);
      CHECK(out.input_top_logprobs[p - 2][0].id == best);
      CHECK(out.input_token_ids_logprobs[p - 2].size() == 2);
      CHECK(out.input_token_ids_logprobs[p - 2][1].id == 60);
    }
    REQUIRE(out.output_top_logprobs.size() == out.output_ids.size());
    REQUIRE(out.output_token_ids_logprobs.size() == out.output_ids.size());
    for (size_t t = 0; t < out.output_ids.size(); ++t) {
      const std::vector<TokenLogprob>& top = out.output_top_logprobs[t];
      REQUIRE(top.size() == 4);
      for (size_t i = 1; i < top.size(); ++i) CHECK(top[i - 1].logprob >= top[i].logprob);
      // The sampled token's log-prob is at most the best one's; when it is in the top-k, equal.
      CHECK(out.output_logprobs[t] <= top[0].logprob);
      for (const TokenLogprob& e : top)
        if (e.id == out.output_ids[t]) CHECK(e.logprob == out.output_logprobs[t]);
      if (out.output_ids[t] == 60)
        CHECK(out.output_token_ids_logprobs[t][1].logprob == out.output_logprobs[t]);
    }
  }
}

TEST_CASE("engine: running(), kv_tokens() and take_finished() for a scheduler") {
  const Decoder model = random_decoder(small_config(61));
  Engine engine(&model, nullptr);
  auto a = engine.add_request(request({1, 2, 3, 4}, 10, 1.0, 1));
  GenerateRequest two = request({5, 6}, 10, 1.0, 2);
  two.params.n = 2;
  auto b = engine.add_request(two);
  REQUIRE((a.ok() && b.ok()));
  CHECK(engine.kv_tokens() == 0);
  CHECK(engine.running().size() == 3);
  REQUIRE(engine.step().ok());
  CHECK(engine.kv_tokens() == 4 + 2 + 2);
  REQUIRE(engine.step().ok());
  CHECK(engine.kv_tokens() == 5 + 3 + 3);
  CHECK(engine.running()[1]->output_ids.size() == 2);
  CHECK(engine.abort(*b));
  const std::vector<SequenceOutput> aborted = engine.take_finished();
  CHECK(aborted.size() == 2);
  CHECK(engine.take_finished().empty());
  CHECK(engine.running().size() == 1);
  CHECK(engine.kv_tokens() == 5);
  // max_new_tokens 0 finishes without a step.
  REQUIRE(engine.add_request(request({7}, 0, 0.0)).ok());
  CHECK(engine.take_finished().size() == 1);
}

TEST_CASE("engine: check_request names the log-prob and logit_bias fields") {
  const RequestLimits limits{61, 96, false};
  GenerateRequest r = request({1, 2, 3}, 4, 0.0);
  CHECK(check_request(r, limits).ok());
  r.logprob_start_len = 3;
  CHECK(check_request(r, limits).message() ==
        "logprob_start_len, (3) is higher than the number of input tokens (3). Request with a "
        "lower logprob_start_len.");
  r.logprob_start_len = -1;
  r.token_ids_logprob = {61};
  CHECK(absl::StrContains(check_request(r, limits).message(), "token_ids_logprob"));
  r.token_ids_logprob.clear();
  r.params.logit_bias = {{-1, 1.f}};
  CHECK(check_request(r, limits).message() == "logit_bias must has keys in [0, 61), got -1.");
  r.params.logit_bias.clear();
  r.top_logprobs_num = -2;
  CHECK(absl::StrContains(check_request(r, limits).message(), "top_logprobs_num"));
  // EngineOptions::context_length shrinks the model's context.
  const Decoder model = random_decoder(small_config(61));
  EngineOptions short_context;
  short_context.context_length = 16;
  Engine engine(&model, nullptr, short_context);
  CHECK(engine.limits().context_length == 16);
  CHECK(absl::StrContains(engine.add_request(request({1}, 15, 0.0)).status().message(),
                          "maximum context length of 16"));
}
