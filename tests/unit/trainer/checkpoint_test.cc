// Megatron torch_dist checkpoints of the trainer: exact round trips and resume, the tracker, and
// every damaged or foreign checkpoint refused with the trainer untouched.
#include "trainer/checkpoint.h"

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "core/dcp.h"
#include "core/fs.h"
#include "core/random.h"
#include "core/status.h"
#include "tests/catch.h"
#include "tests/unit/core/test_util.h"
#include "tests/unit/model/grad_check.h"

using namespace fp8rl;
using fp8rl::testing::check_error;
using fp8rl::testing::TempDir;
using fp8rl::testing::write_raw;
namespace stdfs = std::filesystem;

namespace {

Trainer make_trainer(const ModelConfig& c, uint64_t seed = 3) {
  DecoderParams p = test::random_params(c, seed, 0.1);
  auto d = Decoder::create(c, std::move(p));
  FP8RL_CHECK_OK(d.status());
  TrainerOptions o;
  o.lr.lr = 1e-2;
  auto t = Trainer::create(*std::move(d), std::nullopt, o);
  FP8RL_CHECK_OK(t.status());
  return *std::move(t);
}

std::vector<Sample> batch(int64_t step, int64_t vocab) {
  Rng rng(100 + uint64_t(step));
  std::vector<Sample> out;
  for (int i = 0; i < 3; ++i) {
    Sample s;
    for (int t = 0; t < 7; ++t) s.tokens.push_back(int32_t(rng.next_u64() % uint64_t(vocab)));
    s.response_length = 4;
    s.loss_mask.assign(4, 1.0f);
    s.advantages.assign(4, i == 1 ? -1.0f : 1.0f);
    for (int t = 0; t < 4; ++t) s.rollout_log_probs.push_back(float(-3 + rng.normal()));
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<double> train(Trainer& t, int steps) {
  TrainConfig config;
  config.use_rollout_logprobs = true;
  std::vector<double> losses;
  for (int i = 0; i < steps; ++i) {
    auto r = t.train(batch(t.optimizer().steps(), t.policy().config().vocab_size), config);
    FP8RL_CHECK_OK(r.status());
    FP8RL_CHECK(!r->skipped);
    losses.push_back(r->metrics.at("loss"));
  }
  return losses;
}

// Every byte of weights and optimizer state, and the step count.
struct Snapshot {
  std::vector<std::string> tensors;
  int64_t steps = 0;
  bool operator==(const Snapshot&) const = default;
};
Snapshot snapshot(Trainer& t) {
  Snapshot s;
  for (auto& [name, p] : t.policy().params().named(t.policy().config()))
    s.tensors.emplace_back(static_cast<const char*>(p->raw()), p->nbytes());
  for (auto& [name, p] : t.optimizer().named_state())
    s.tensors.emplace_back(static_cast<const char*>(p.raw()), p.nbytes());
  s.steps = t.optimizer().steps();
  return s;
}

ModelConfig qwen2_tied() {
  ModelConfig c = test::small_config();
  c.model_type = "qwen2";
  c.attention_bias = true;
  c.qk_norm = false;
  c.tie_word_embeddings = true;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;  // 2 query heads per KV group
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  return c;
}

std::string distcp(const CheckpointInfo& info) { return info.path + "/__0_0.distcp"; }

}  // namespace

TEST_CASE("a saved and loaded trainer resumes bit for bit", "[trainer][checkpoint]") {
  for (const ModelConfig& c : {test::small_config(), qwen2_tied()}) {
    INFO("model_type " << c.model_type << ", tied " << c.tie_word_embeddings);
    for (uint64_t chunk_bytes : {uint64_t(1) << 30, uint64_t(40)}) {
      INFO("max_chunk_bytes " << chunk_bytes);
      TempDir dir;
      CheckpointArgs args;
      args.max_chunk_bytes = chunk_bytes;
      Trainer uninterrupted = make_trainer(c);
      const std::vector<double> all = train(uninterrupted, 5);

      Trainer first = make_trainer(c);
      train(first, 3);
      auto info = save_checkpoint(first, dir.path(), 3, args);
      REQUIRE(info.ok());
      CHECK(info->path == dir.file("iter_0000003"));
      CHECK(info->iteration == 3);
      CHECK(info->bytes == stdfs::file_size(distcp(*info)) +
                               stdfs::file_size(info->path + "/common.pt") +
                               stdfs::file_size(info->path + "/.metadata") +
                               stdfs::file_size(info->path + "/metadata.json"));

      Trainer resumed = make_trainer(c, /*seed=*/99);  // other weights: all must be replaced
      auto it = load_checkpoint(&resumed, dir.path());
      REQUIRE(it.ok());
      CHECK(*it == 3);
      CHECK(snapshot(resumed) == snapshot(first));
      const std::vector<double> rest = train(resumed, 2);
      CHECK(rest == std::vector<double>(all.begin() + 3, all.end()));
      CHECK(snapshot(resumed) == snapshot(uninterrupted));
    }
  }
}

TEST_CASE("the tracker names the latest complete iteration", "[trainer][checkpoint]") {
  TempDir dir;
  Trainer t = make_trainer(test::small_config());
  train(t, 1);
  REQUIRE(save_checkpoint(t, dir.path(), 1, {}).ok());
  const Snapshot at1 = snapshot(t);
  train(t, 1);
  REQUIRE(save_checkpoint(t, dir.path(), 2, {}).ok());
  const Snapshot at2 = snapshot(t);
  CHECK(*read_file(dir.file("latest_checkpointed_iteration.txt")) == "2");
  check_error(save_checkpoint(t, dir.path(), 2, {}).status(), absl::StatusCode::kAlreadyExists,
              {"iter_0000002"});

  Trainer u = make_trainer(test::small_config(), 5);
  CHECK(*load_checkpoint(&u, dir.path(), 1) == 1);
  CHECK(snapshot(u) == at1);
  CHECK(*load_checkpoint(&u, dir.path()) == 2);
  CHECK(snapshot(u) == at2);
  check_error(load_checkpoint(&u, dir.path(), 7).status(), absl::StatusCode::kNotFound,
              {"iter_0000007"});
  TempDir empty;
  check_error(load_checkpoint(&u, empty.path()).status(), absl::StatusCode::kNotFound,
              {"latest_checkpointed_iteration.txt"});
  write_raw(dir.file("latest_checkpointed_iteration.txt"), "two");
  check_error(load_checkpoint(&u, dir.path()).status(), absl::StatusCode::kDataLoss, {"'two'"});
  write_raw(dir.file("latest_checkpointed_iteration.txt"), "9\n");
  check_error(load_checkpoint(&u, dir.path()).status(), absl::StatusCode::kDataLoss,
              {"iter_0000009", "does not exist"});
  CHECK(snapshot(u) == at2);
}

TEST_CASE("a crashed save leaves the previous checkpoint as the latest", "[trainer][checkpoint]") {
  TempDir dir;
  Trainer t = make_trainer(test::small_config());
  train(t, 1);
  REQUIRE(save_checkpoint(t, dir.path(), 1, {}).ok());
  const Snapshot at1 = snapshot(t);
  // What a process killed while writing iteration 2 leaves: a half-written staging folder.
  stdfs::create_directories(dir.file(".iter_0000002.tmp-999999-0"));
  write_raw(dir.file(".iter_0000002.tmp-999999-0/__0_0.distcp"), "half");
  Trainer u = make_trainer(test::small_config(), 5);
  CHECK(*load_checkpoint(&u, dir.path()) == 1);
  CHECK(snapshot(u) == at1);
  // The next save of iteration 2 is not disturbed by the leftover.
  train(t, 1);
  REQUIRE(save_checkpoint(t, dir.path(), 2, {}).ok());
  CHECK(*load_checkpoint(&u, dir.path()) == 2);
  CHECK(snapshot(u) == snapshot(t));
}

TEST_CASE("damaged checkpoints are refused with the trainer untouched", "[trainer][checkpoint]") {
  TempDir dir;
  Trainer t = make_trainer(test::small_config());
  train(t, 2);
  auto info = save_checkpoint(t, dir.path(), 2, {});
  REQUIRE(info.ok());
  Trainer u = make_trainer(test::small_config(), 5);
  train(u, 1);
  const Snapshot before = snapshot(u);
  const std::string path = distcp(*info);
  const std::string good = *read_file(path);
  auto md = dcp_metadata_loads(*read_file(info->path + "/.metadata"), ".metadata");
  REQUIRE(md.ok());
  auto chunk_of = [&](const std::string& key) {
    for (const DcpTensor& x : md->tensors)
      if (x.fqn == key) return x.chunks[0];
    FP8RL_CHECK(false);
    return DcpChunk{};
  };

  SECTION("a flipped bit in a tensor") {
    const DcpChunk c = chunk_of("optimizer.state.exp_avg.decoder.layers.mlp.linear_fc1.weight");
    std::string bad = good;
    bad[c.offset + c.length / 2] ^= 0x04;
    write_raw(path, bad);
    check_error(
        load_checkpoint(&u, dir.path()).status(), absl::StatusCode::kDataLoss,
        {"__0_0.distcp", "optimizer.state.exp_avg.decoder.layers.mlp.linear_fc1.weight", "CRC32"});
  }
  SECTION("a truncated .distcp") {
    write_raw(path, good.substr(0, good.size() - 10));
    check_error(load_checkpoint(&u, dir.path()).status(), absl::StatusCode::kDataLoss,
                {"__0_0.distcp", "truncated"});
  }
  SECTION("a BF16 weight that is not its master's rounding, with valid CRCs") {
    const DcpChunk c = chunk_of("decoder.final_layernorm.weight");
    auto view = read_torch_tensor(std::string_view(good).substr(c.offset, c.length), "item");
    REQUIRE(view.ok());
    std::string data(view->data);
    data[0] ^= 0x01;
    std::string item;
    REQUIRE(write_torch_tensor(view->dtype, view->shape, data, [&](std::string_view b) {
              item.append(b);
              return absl::OkStatus();
            }).ok());
    REQUIRE(item.size() == c.length);
    write_raw(path, good.substr(0, c.offset) + item + good.substr(c.offset + c.length));
    check_error(load_checkpoint(&u, dir.path()).status(), absl::StatusCode::kDataLoss,
                {"decoder.final_layernorm.weight", "fp32 master"});
  }
  for (const char* name : {"common.pt", ".metadata", "__0_0.distcp", "metadata.json"}) {
    DYNAMIC_SECTION("missing " << name) {
      stdfs::remove(info->path + "/" + name);
      check_error(load_checkpoint(&u, dir.path()).status(), absl::StatusCode::kDataLoss, {name});
    }
  }
  SECTION("a truncated common.pt") {
    const std::string common = *read_file(info->path + "/common.pt");
    write_raw(info->path + "/common.pt", common.substr(0, common.size() - 30));
    check_error(load_checkpoint(&u, dir.path()).status(), absl::StatusCode::kDataLoss,
                {"common.pt"});
  }
  SECTION("a truncated .metadata") {
    const std::string meta = *read_file(info->path + "/.metadata");
    write_raw(info->path + "/.metadata", meta.substr(0, meta.size() / 2));
    check_error(load_checkpoint(&u, dir.path()).status(), absl::StatusCode::kDataLoss,
                {".metadata", "truncated"});
  }
  SECTION("another backend") {
    write_raw(info->path + "/metadata.json", R"({"sharded_backend": "zarr"})");
    check_error(load_checkpoint(&u, dir.path()).status(), absl::StatusCode::kInvalidArgument,
                {"metadata.json", "zarr"});
  }
  CHECK(snapshot(u) == before);
}

TEST_CASE("another model's checkpoint is refused naming the field", "[trainer][checkpoint]") {
  TempDir dir;
  Trainer t = make_trainer(test::small_config());
  REQUIRE(save_checkpoint(t, dir.path(), 1, {}).ok());
  struct Case {
    ModelConfig config;
    std::string field;
  };
  std::vector<Case> cases;
  ModelConfig c = test::small_config();
  c.hidden_size = 24;
  cases.push_back({c, "args.hidden_size"});
  c = test::small_config();
  c.num_hidden_layers = 3;
  cases.push_back({c, "args.num_layers"});
  c = test::small_config();
  c.vocab_size = 29;
  cases.push_back({c, "args.vocab_size"});
  c = test::small_config();
  c.num_key_value_heads = 2;
  cases.push_back({c, "args.num_query_groups"});
  c = test::small_config();
  c.tie_word_embeddings = true;
  cases.push_back({c, "args.untie_embeddings_and_output_weights"});
  c = test::small_config();
  c.qk_norm = false;
  cases.push_back({c, "args.qk_layernorm"});
  cases.push_back({qwen2_tied(), "args."});
  for (const Case& k : cases) {
    INFO(k.field);
    Trainer u = make_trainer(k.config);
    const Snapshot before = snapshot(u);
    check_error(load_checkpoint(&u, dir.path()).status(), absl::StatusCode::kInvalidArgument,
                {"common.pt", k.field, "another model"});
    CHECK(snapshot(u) == before);
  }
}

TEST_CASE("checkpoint arguments are validated", "[trainer][checkpoint]") {
  TempDir dir;
  Trainer t = make_trainer(test::small_config());
  CheckpointArgs a;
  a.global_batch_size = 0;
  check_error(save_checkpoint(t, dir.path(), 1, a).status(), absl::StatusCode::kInvalidArgument,
              {"global_batch_size"});
  check_error(save_checkpoint(t, dir.path(), -1, {}).status(), absl::StatusCode::kInvalidArgument,
              {"iteration"});
  CHECK(!stdfs::exists(dir.file("latest_checkpointed_iteration.txt")));
}
