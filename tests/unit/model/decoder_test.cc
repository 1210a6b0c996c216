// The whole decoder: finite-difference gradients of every parameter, packed-sequence
// independence, FP8/BF16 against F32, loading (FP8 checkpoints included) and bad input.
#include "model/decoder.h"

#include <vector>

#include "absl/strings/match.h"
#include "core/fs.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "model/hf_convert.h"
#include "model/tiny_model.h"
#include "tests/catch.h"
#include "tests/unit/core/test_util.h"
#include "tests/unit/model/grad_check.h"

using namespace fp8rl;
using namespace fp8rl::test;
using fp8rl::testing::TempDir;

namespace {

// Writes a random checkpoint of `c` and loads it.
Decoder make_decoder(const ModelConfig& c, const std::string& dir, double init_std,
                     const DecoderOptions& options = {}) {
  TinyModelOptions o;
  o.config = c;
  o.save_dir = dir;
  o.seed = 42;
  o.init_std = init_std;
  FP8RL_CHECK_OK(write_tiny_model(o));
  auto d = Decoder::load(dir, options);
  FP8RL_CHECK_OK(d.status());
  return *std::move(d);
}

// A decoder of `c` with random parameters built in memory (write_tiny_model writes Qwen3 only).
Decoder random_decoder(const ModelConfig& c, double init_std) {
  DecoderParams p = test::random_params(c, 99, init_std);
  auto d = Decoder::create(c, std::move(p));
  FP8RL_CHECK_OK(d.status());
  return *std::move(d);
}

PackedBatch batch_of(const std::vector<std::vector<int32_t>>& seqs) {
  PackedBatch b;
  for (const auto& s : seqs) {
    b.tokens.insert(b.tokens.end(), s.begin(), s.end());
    b.cu_seqlens.push_back(int32_t(b.tokens.size()));
  }
  return b;
}

// Next-token targets within each sequence; the last token of a sequence has none (-1).
std::vector<int32_t> next_tokens(const PackedBatch& b) {
  std::vector<int32_t> t(b.tokens.size(), -1);
  for (int64_t s = 0; s < b.num_seqs(); ++s)
    for (int32_t i = b.cu_seqlens[s]; i + 1 < b.cu_seqlens[s + 1]; ++i) t[i] = b.tokens[i + 1];
  return t;
}

// Checks d(sum w*logprob + v*entropy)/d(param) for every parameter against central differences.
void check_model_gradients(Decoder& model) {
  const PackedBatch b = batch_of({{3, 17, 5, 22, 9}, {1, 0, 14}});
  const auto targets = next_tokens(b);
  Rng rng(7);
  const auto w = random_vector(b.num_tokens(), rng), v = random_vector(b.num_tokens(), rng);
  auto loss = [&] {
    auto f = model.forward(b, targets);
    REQUIRE(f.ok());
    return dot(w, f->logprob.data()) + dot(v, f->entropy.data());
  };
  auto f = model.forward(b, targets);
  REQUIRE(f.ok());
  DecoderParams grads = DecoderParams::zeros(model.config());
  REQUIRE(model.backward(*f, w, v, &grads).ok());
  auto named_grads = grads.named(model.config());
  auto named_params = model.params().named(model.config());
  REQUIRE(named_grads.size() == named_params.size());
  for (size_t i = 0; i < named_params.size(); ++i) {
    Tensor* p = named_params[i].second;
    const auto numeric = numeric_grad(p->data<float>(), p->numel(), loss, 1e-2f);
    check_grad(named_params[i].first, numeric, named_grads[i].second->data<float>(), 2e-2);
  }
}

}  // namespace

TEST_CASE("decoder gradients match finite differences (qwen3)", "[model][decoder]") {
  TempDir dir;
  Decoder model = make_decoder(small_config(), dir.file("ckpt"), 0.3);
  check_model_gradients(model);
}

TEST_CASE("decoder gradients match finite differences (qwen2: biases, tied head)",
          "[model][decoder]") {
  ModelConfig c = small_config();
  c.qk_norm = false;
  c.attention_bias = true;
  c.tie_word_embeddings = true;
  c.num_hidden_layers = 1;
  Decoder model = random_decoder(c, 0.3);
  check_model_gradients(model);
}

TEST_CASE("packed sequences do not see each other", "[model][decoder]") {
  TempDir dir;
  Decoder model = make_decoder(small_config(), dir.file("ckpt"), 0.3);
  const std::vector<int32_t> a = {3, 17, 5, 22, 9}, c = {1, 0, 14};
  const PackedBatch packed = batch_of({c, a, c});
  auto fp = model.forward(packed, std::vector<int32_t>(packed.tokens.size(), -1));
  REQUIRE(fp.ok());
  const auto lp = model.logits(*fp);
  const PackedBatch alone = batch_of({a});
  auto fa = model.forward(alone, std::vector<int32_t>(alone.tokens.size(), -1));
  REQUIRE(fa.ok());
  const auto la = model.logits(*fa);
  const int64_t v = model.config().vocab_size;
  // a sits after c in the pack: tokens [3, 8).
  CHECK(rel_norm_error(lp.data() + 3 * v, la.data(), int64_t(la.size())) < 1e-6);
  // Both copies of c agree.
  CHECK(rel_norm_error(lp.data() + 8 * v, lp.data(), 3 * v) < 1e-6);
}

TEST_CASE("fp8 and bf16 decoders track the f32 decoder", "[model][decoder]") {
  ModelConfig c = small_config();
  c.hidden_size = 256;
  c.intermediate_size = 384;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.vocab_size = 300;
  TempDir dir;
  Decoder model = make_decoder(c, dir.file("ckpt"), 0.05);
  Rng rng(3);
  std::vector<int32_t> s1(40), s2(24);
  for (auto& t : s1) t = int32_t(rng.next_u64() % 300);
  for (auto& t : s2) t = int32_t(rng.next_u64() % 300);
  const PackedBatch b = batch_of({s1, s2});
  const auto targets = next_tokens(b);
  const std::vector<float> ones(b.tokens.size(), 1.f), zeros(b.tokens.size(), 0.f);

  auto run = [&](LinearPrecision p, std::vector<float>* logits) {
    DecoderOptions o;
    o.linear.precision = p;
    model.set_options(o);
    auto f = model.forward(b, targets);
    REQUIRE(f.ok());
    *logits = model.logits(*f);
    DecoderParams g = DecoderParams::zeros(c);
    REQUIRE(model.backward(*f, ones, zeros, &g).ok());
    return g;
  };
  std::vector<float> l32, l8, l16;
  DecoderParams g32 = run(LinearPrecision::kF32, &l32);
  DecoderParams g8 = run(LinearPrecision::kFP8, &l8);
  DecoderParams g16 = run(LinearPrecision::kBF16, &l16);
  // E4M3 rounds each operand with ~2.5% RMS relative error, so one FP8 GEMM is off by ~3.5%
  // (linear_modes_test bounds one at 5e-2); seven of them per layer over two random layers
  // compound to ~13% on the logits (measured 0.127), BF16 to well under 1%.
  CHECK(rel_norm_error(l8.data(), l32.data(), int64_t(l32.size())) < 0.2);
  CHECK(rel_norm_error(l16.data(), l32.data(), int64_t(l32.size())) < 1e-2);
  auto n32 = g32.named(c), n8 = g8.named(c), n16 = g16.named(c);
  for (size_t i = 0; i < n32.size(); ++i) {
    INFO(n32[i].first);
    const int64_t n = n32[i].second->numel();
    CHECK(cosine(n8[i].second->data<float>(), n32[i].second->data<float>(), n) > 0.95);
    CHECK(cosine(n16[i].second->data<float>(), n32[i].second->data<float>(), n) > 0.99);
  }
}

TEST_CASE("an FP8 blockwise checkpoint loads", "[model][decoder]") {
  ModelConfig c = small_config();
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.head_dim = 64;
  c.dtype = DType::kBF16;
  TempDir bf16_dir, fp8_dir;
  Decoder ref = make_decoder(c, bf16_dir.file("ckpt"), 0.05);
  ConvertOptions o;
  o.model_dir = bf16_dir.file("ckpt");
  o.save_dir = fp8_dir.file("ckpt");
  REQUIRE(convert_hf_checkpoint(o).ok());
  auto fp8 = Decoder::load(fp8_dir.file("ckpt"));
  REQUIRE(fp8.ok());
  const PackedBatch b = batch_of({{1, 2, 3, 4, 5, 6}});
  const std::vector<int32_t> none(6, -1);
  auto fr = ref.forward(b, none);
  auto f8 = fp8->forward(b, none);
  REQUIRE(fr.ok());
  REQUIRE(f8.ok());
  const auto lr = ref.logits(*fr), l8 = fp8->logits(*f8);
  const double err = rel_norm_error(l8.data(), lr.data(), int64_t(lr.size()));
  CHECK(err > 0);    // the projections really were quantized
  CHECK(err < 0.1);  // weight-only 128x128 FP8 over two layers: measured 0.072
}

TEST_CASE("bad batches are rejected", "[model][decoder]") {
  ModelConfig c = small_config();
  c.max_position_embeddings = 6;
  TempDir dir;
  Decoder model = make_decoder(c, dir.file("ckpt"), 0.3);
  auto code = [&](const PackedBatch& b, std::vector<int32_t> targets) {
    return model.forward(b, targets).status();
  };
  PackedBatch ok = batch_of({{1, 2, 3}});
  CHECK(code(ok, {2, 3, -1}).ok());
  const auto oov = code(batch_of({{1, 23, 3}}), {-1, -1, -1});
  CHECK(oov.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(oov.message(), "vocabulary"));
  CHECK(code(batch_of({{1, -2, 3}}), {-1, -1, -1}).code() == absl::StatusCode::kInvalidArgument);
  const auto too_long = code(batch_of({{1, 2, 3, 4, 5, 6, 7}}), std::vector<int32_t>(7, -1));
  CHECK(too_long.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(too_long.message(), "max_position_embeddings"));
  CHECK(code(ok, {1, 2}).code() == absl::StatusCode::kInvalidArgument);      // target count
  CHECK(code(ok, {1, 2, 99}).code() == absl::StatusCode::kInvalidArgument);  // target id
  PackedBatch bad_cu = ok;
  bad_cu.cu_seqlens = {0, 2};  // does not cover the tokens
  CHECK(code(bad_cu, {-1, -1, -1}).code() == absl::StatusCode::kInvalidArgument);
  bad_cu.cu_seqlens = {0, 3, 2, 3};  // decreasing
  CHECK(code(bad_cu, {-1, -1, -1}).code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("checkpoints that do not match their config are rejected", "[model][decoder]") {
  const ModelConfig c = small_config();
  TempDir dir;
  make_decoder(c, dir.file("ckpt"), 0.3);
  auto rewrite_config = [&](const ModelConfig& changed) {
    FP8RL_CHECK_OK(write_file_atomic(dir.file("ckpt") + "/config.json",
                                     model_config_to_json(changed).dump(2)));
  };
  SECTION("wrong shape") {
    ModelConfig wide = c;
    wide.intermediate_size = 32;
    rewrite_config(wide);
    const auto s = Decoder::load(dir.file("ckpt")).status();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    INFO(s.message());
    CHECK(absl::StrContains(s.message(), "model.layers.0.mlp.gate_proj.weight"));
    CHECK(absl::StrContains(s.message(), "[24, 16]"));
  }
  SECTION("missing tensor") {
    ModelConfig deeper = c;
    deeper.num_hidden_layers = 3;
    rewrite_config(deeper);
    const auto s = Decoder::load(dir.file("ckpt")).status();
    CHECK(s.code() == absl::StatusCode::kNotFound);
    INFO(s.message());
    CHECK(absl::StrContains(s.message(), "model.layers.2."));
  }
  SECTION("integer dtype") {
    auto file = SafetensorsFile::open(dir.file("ckpt") + "/model.safetensors");
    REQUIRE(file.ok());
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const TensorInfo& t : (*file)->tensors()) {
      auto x = (*file)->tensor(t.name);
      REQUIRE(x.ok());
      tensors.emplace_back(
          t.name, t.name == "model.norm.weight" ? Tensor::zeros(DType::kI32, t.shape) : x->clone());
    }
    file->reset();
    REQUIRE(save_safetensors(dir.file("ckpt") + "/model.safetensors", tensors).ok());
    const auto s = Decoder::load(dir.file("ckpt")).status();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    INFO(s.message());
    CHECK(absl::StrContains(s.message(), "model.norm.weight"));
  }
}
