// Megatron torch_dist checkpoints: save and load (trainer/checkpoint.h).
#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/dcp.h"
#include "core/fs.h"
#include "core/pickle.h"
#include "core/status.h"
#include "model/hf_names.h"
#include "trainer/megatron_layout.h"

namespace fp8rl {
namespace {

namespace stdfs = std::filesystem;

constexpr char kTracker[] = "latest_checkpointed_iteration.txt";
constexpr char kDistcp[] = "__0_0.distcp";
// json.dump of Megatron's CheckpointingConfig (core ≤ 0.18 rejects any other key).
constexpr char kMetadataJson[] =
    "{\"sharded_backend\": \"torch_dist\", \"sharded_backend_version\": 1, "
    "\"common_backend\": \"torch\", \"common_backend_version\": 1}";

// The tensors of a checkpoint come in four families with the same keys and chunking.
struct Family {
  const char* prefix;  // before the Megatron key
  DType dtype;
  const char* state_suffix;  // of AdamW::named_state names; the weights are bf16(master)
};
constexpr std::array<Family, 4> kFamilies = {{
    {"", DType::kBF16, ".master"},
    {"optimizer.state.fp32_param.", DType::kF32, ".master"},
    {"optimizer.state.exp_avg.", DType::kF32, ".exp_avg"},
    {"optimizer.state.exp_avg_sq.", DType::kF32, ".exp_avg_sq"},
}};
constexpr size_t kWeights = 0;

std::string join(const std::string& dir, const std::string& name) {
  return (stdfs::path(dir) / name).string();
}

// The optimizer's tensors of one state suffix, in decoder_parameter_specs order.
absl::StatusOr<std::vector<Tensor>> state_tensors(const AdamW& optimizer, const ModelConfig& config,
                                                  const char* suffix) {
  std::map<std::string, Tensor> state;
  for (auto& [name, t] : optimizer.named_state()) state[name] = t;
  std::vector<Tensor> out;
  for (const TensorSpec& spec : decoder_parameter_specs(config)) {
    auto it = state.find(spec.name + suffix);
    if (it == state.end() || it->second.shape() != spec.shape) {
      return absl::InternalError(
          absl::StrCat("optimizer has no state ", spec.name, suffix, shape_to_string(spec.shape)));
    }
    out.push_back(it->second);
  }
  return out;
}

// Each layer (stacked keys) is its own chunk, split along rows to at most max_bytes of float32.
std::vector<std::pair<Shape, Shape>> plan_chunks(const MegatronParam& p, uint64_t max_bytes) {
  const int64_t row_bytes = p.row_elems() * int64_t(sizeof(float));
  const int64_t max_rows = std::max<int64_t>(1, int64_t(max_bytes) / row_bytes);
  const int64_t layers = p.stacked ? p.shape()[0] : 1;
  std::vector<std::pair<Shape, Shape>> chunks;
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t r = 0; r < p.rows(); r += max_rows) {
      Shape offsets{r}, sizes{std::min(max_rows, p.rows() - r)};
      if (p.layer_shape.size() > 1) {
        offsets.push_back(0);
        sizes.push_back(p.row_elems());
      }
      if (p.stacked) {
        offsets.insert(offsets.begin(), l);
        sizes.insert(sizes.begin(), 1);
      }
      chunks.emplace_back(std::move(offsets), std::move(sizes));
    }
  }
  return chunks;
}

// The bytes of float32 `v` in `dtype` (bf16 rounds to nearest even).
std::string encode(const std::vector<float>& v, DType dtype) {
  if (dtype == DType::kF32)
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  std::string out(v.size() * 2, '\0');
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t b = f32_to_bf16(v[i]);
    std::memcpy(&out[2 * i], &b, 2);
  }
  return out;
}

std::vector<const float*> const_ptrs(const std::vector<Tensor>& ts) {
  std::vector<const float*> out;
  for (const Tensor& t : ts) out.push_back(t.data<float>());
  return out;
}

std::string new_uuid() {
  std::random_device rd;
  std::array<uint8_t, 16> b;
  for (uint8_t& x : b) x = uint8_t(rd());
  b[6] = uint8_t((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = uint8_t((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  std::string s;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    absl::StrAppendFormat(&s, "%02x", b[i]);
  }
  return s;
}

PyValue py_bool(bool v) { return PyValue::boolean(v); }
PyValue py_int(int64_t v) { return PyValue::integer(v); }
PyValue py_float(double v) { return PyValue::real(v); }
PyValue py_str(std::string v) { return PyValue::str(std::move(v)); }
std::pair<PyValue, PyValue> kv(const char* k, PyValue v) { return {py_str(k), std::move(v)}; }

const char* decay_style_name(LrDecayStyle s) {
  switch (s) {
    case LrDecayStyle::kConstant:
      return "constant";
    case LrDecayStyle::kLinear:
      return "linear";
    case LrDecayStyle::kCosine:
      return "cosine";
  }
  return "constant";
}

// Megatron's argparse.Namespace, with the fields its loader and slime's converter read.
PyValue megatron_args(const Trainer& trainer, const CheckpointArgs& a, int64_t padded_vocab) {
  const ModelConfig& c = trainer.policy().config();
  const TrainerOptions& o = trainer.options();
  // --rotary-base is an int in Megatron; keep a float only when the theta is not integral.
  const PyValue rotary_base = c.rope_theta == std::floor(c.rope_theta) && c.rope_theta < 0x1p53
                                  ? py_int(int64_t(c.rope_theta))
                                  : py_float(c.rope_theta);
  std::vector<std::pair<PyValue, PyValue>> f = {
      kv("num_layers", py_int(c.num_hidden_layers)),
      kv("hidden_size", py_int(c.hidden_size)),
      kv("ffn_hidden_size", py_int(c.intermediate_size)),
      kv("num_attention_heads", py_int(c.num_attention_heads)),
      kv("group_query_attention", py_bool(c.num_key_value_heads != c.num_attention_heads)),
      kv("num_query_groups", py_int(c.num_key_value_heads)),
      kv("kv_channels", py_int(c.head_dim)),
      kv("q_lora_rank", PyValue()),
      kv("num_experts", PyValue()),
      kv("vocab_size", py_int(c.vocab_size)),
      kv("padded_vocab_size", py_int(padded_vocab)),
      kv("make_vocab_size_divisible_by", py_int(a.make_vocab_size_divisible_by)),
      kv("max_position_embeddings", py_int(c.max_position_embeddings)),
      kv("seq_length", py_int(a.seq_length > 0 ? a.seq_length : c.max_position_embeddings)),
      kv("normalization", py_str("RMSNorm")),
      kv("norm_epsilon", py_float(c.rms_norm_eps)),
      kv("position_embedding_type", py_str("rope")),
      kv("rotary_base", rotary_base),
      kv("rotary_percent", py_float(1.0)),
      kv("swiglu", py_bool(true)),
      kv("add_bias_linear", py_bool(false)),
      kv("add_qkv_bias", py_bool(c.attention_bias)),
      kv("qk_layernorm", py_bool(c.qk_norm)),
      kv("untie_embeddings_and_output_weights", py_bool(!c.tie_word_embeddings)),
      kv("hidden_dropout", py_float(0.0)),
      kv("attention_dropout", py_float(0.0)),
      kv("bf16", py_bool(true)),
      kv("fp16", py_bool(false)),
      kv("params_dtype", PyValue::global("torch", "bfloat16")),
      kv("tensor_model_parallel_size", py_int(1)),
      kv("pipeline_model_parallel_size", py_int(1)),
      kv("virtual_pipeline_model_parallel_size", PyValue()),
      kv("context_parallel_size", py_int(1)),
      kv("expert_model_parallel_size", py_int(1)),
      kv("data_parallel_size", py_int(1)),
      kv("world_size", py_int(1)),
      kv("micro_batch_size", py_int(a.micro_batch_size)),
      kv("global_batch_size", py_int(a.global_batch_size)),
      kv("seed", py_int(a.seed)),
      kv("optimizer", py_str("adam")),
      kv("lr", py_float(o.lr.lr)),
      kv("min_lr", py_float(o.lr.min_lr)),
      kv("lr_warmup_init", py_float(o.lr.warmup_init)),
      kv("lr_warmup_iters", py_int(o.lr.warmup_iters)),
      kv("lr_decay_iters", py_int(o.lr.decay_iters)),
      kv("lr_decay_style", py_str(decay_style_name(o.lr.style))),
      kv("weight_decay", py_float(o.adam.weight_decay)),
      kv("adam_beta1", py_float(o.adam.beta1)),
      kv("adam_beta2", py_float(o.adam.beta2)),
      kv("adam_eps", py_float(o.adam.eps)),
      kv("clip_grad", py_float(o.adam.clip_grad)),
      kv("ckpt_format", py_str("torch_dist")),
      kv("hf_checkpoint", a.hf_checkpoint.empty() ? PyValue() : py_str(a.hf_checkpoint)),
  };
  return PyValue::new_object(PyValue::global("argparse", "Namespace"), PyValue::tuple({}),
                             PyValue::dict(std::move(f)));
}

// The common (non-tensor) state: common.pt's dict.
PyValue common_state(const Trainer& trainer, const CheckpointArgs& a, int64_t iteration,
                     int64_t padded_vocab) {
  const TrainerOptions& o = trainer.options();
  const int64_t steps = trainer.optimizer().steps();
  // Megatron's two groups: decayed (matrices) and not (norms, biases); the step lives in each.
  std::vector<PyValue> groups;
  for (const bool decayed : {true, false}) {
    groups.push_back(PyValue::dict({
        kv("lr", py_float(o.lr.lr_at(steps))),
        kv("weight_decay", py_float(decayed ? o.adam.weight_decay : 0.0)),
        kv("wd_mult", py_float(decayed ? 1.0 : 0.0)),
        kv("lr_mult", py_float(1.0)),
        kv("betas", PyValue::tuple({py_float(o.adam.beta1), py_float(o.adam.beta2)})),
        kv("eps", py_float(o.adam.eps)),
        kv("bias_correction", py_bool(true)),
        kv("is_expert_parallel", py_bool(false)),
        kv("is_decoupled_lr", py_bool(false)),
        kv("step", py_int(steps)),
    }));
  }
  // OptimizerParamScheduler.state_dict(), which counts samples.
  const int64_t gbs = a.global_batch_size;
  const PyValue scheduler = PyValue::dict({
      kv("max_lr", py_float(o.lr.lr)),
      kv("lr_warmup_steps", py_int(o.lr.warmup_iters * gbs)),
      kv("num_steps", py_int(steps * gbs)),
      kv("lr_decay_style", py_str(decay_style_name(o.lr.style))),
      kv("lr_decay_steps", py_int(o.lr.decay_iters * gbs)),
      kv("min_lr", py_float(o.lr.min_lr)),
      kv("start_wd", py_float(o.adam.weight_decay)),
      kv("end_wd", py_float(o.adam.weight_decay)),
      kv("wd_incr_style", py_str("constant")),
      kv("wd_incr_steps", py_int(o.lr.decay_iters * gbs)),
  });
  return PyValue::dict({
      kv("args", megatron_args(trainer, a, padded_vocab)),
      kv("checkpoint_version", py_float(3.0)),
      kv("iteration", py_int(iteration)),
      kv("optimizer",
         PyValue::dict({kv(
             "optimizer", PyValue::dict({kv("param_groups", PyValue::list(std::move(groups)))}))})),
      kv("opt_param_scheduler", scheduler),
      kv("num_floating_point_operations_so_far", py_int(0)),
  });
}

// Appends to a new file; every error carries the path.
class FileSink {
 public:
  static absl::StatusOr<FileSink> create(const std::string& path) {
    FileSink s;
    s.path_ = path;
    s.file_.reset(std::fopen(path.c_str(), "wbe"));
    if (!s.file_) return absl::ErrnoToStatus(errno, absl::StrCat("create ", path));
    return s;
  }
  absl::Status write(std::string_view bytes) {
    if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), file_.get()) != bytes.size())
      return absl::ErrnoToStatus(errno, absl::StrCat("write ", path_));
    offset_ += bytes.size();
    return absl::OkStatus();
  }
  absl::Status close() {
    if (std::fclose(file_.release()) != 0)
      return absl::ErrnoToStatus(errno, absl::StrCat("close ", path_));
    return absl::OkStatus();
  }
  uint64_t offset() const { return offset_; }

 private:
  struct Closer {
    void operator()(std::FILE* f) const {
      if (f) std::fclose(f);
    }
  };
  std::string path_;
  std::unique_ptr<std::FILE, Closer> file_;
  uint64_t offset_ = 0;
};

// Reads byte ranges of the .distcp files of one iteration folder.
class ItemReader {
 public:
  explicit ItemReader(std::string dir) : dir_(std::move(dir)) {}
  ~ItemReader() {
    for (auto& [name, f] : files_) ::close(f.fd);
  }

  absl::StatusOr<std::string> read(const DcpChunk& c, const std::string& what) {
    const std::string& name = c.relative_path;
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
      return absl::DataLossError(
          absl::StrCat(what, ": storage path '", name, "' is not a file of the checkpoint folder"));
    }
    auto it = files_.find(name);
    if (it == files_.end()) {
      const std::string path = join(dir_, name);
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        return absl::DataLossError(
            absl::StrCat(what, ": cannot open ", path, ": ", std::strerror(errno)));
      }
      struct stat st;
      if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        return absl::DataLossError(absl::StrCat(what, ": stat ", path, ": ", std::strerror(err)));
      }
      it = files_.emplace(name, File{fd, uint64_t(st.st_size)}).first;
    }
    const File& f = it->second;
    if (c.offset > f.size || c.length > f.size - c.offset) {
      return absl::DataLossError(absl::StrCat(what, ": bytes [", c.offset, ", +", c.length,
                                              ") lie past the end of ", join(dir_, name), " (",
                                              f.size, " bytes): the file is truncated"));
    }
    std::string buf(c.length, '\0');
    for (uint64_t done = 0; done < c.length;) {
      const ssize_t n = ::pread(f.fd, buf.data() + done, c.length - done, off_t(c.offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        return absl::DataLossError(absl::StrCat(what, ": read ", join(dir_, name), ": ",
                                                n < 0 ? std::strerror(errno) : "end of file"));
      }
      done += uint64_t(n);
    }
    return buf;
  }

 private:
  struct File {
    int fd;
    uint64_t size;
  };
  std::string dir_;
  std::map<std::string, File> files_;
};

// The chunks must tile the tensor: inside it, pairwise disjoint, covering every element.
absl::Status check_tiling(const DcpTensor& t, const std::string& what) {
  uint64_t covered = 0;
  for (const DcpChunk& c : t.chunks) {
    bool inside = c.offsets.size() == t.size.size() && c.sizes.size() == t.size.size();
    for (size_t d = 0; inside && d < t.size.size(); ++d)
      inside = c.offsets[d] + c.sizes[d] <= t.size[d];
    if (!inside) {
      return absl::DataLossError(absl::StrCat(what, ": chunk at ", shape_to_string(c.offsets),
                                              " of size ", shape_to_string(c.sizes),
                                              " lies outside ", shape_to_string(t.size)));
    }
    covered += uint64_t(shape_numel(c.sizes));
  }
  for (size_t i = 0; i < t.chunks.size(); ++i) {
    for (size_t j = i + 1; j < t.chunks.size(); ++j) {
      const DcpChunk &a = t.chunks[i], &b = t.chunks[j];
      bool overlap = shape_numel(a.sizes) > 0 && shape_numel(b.sizes) > 0;
      for (size_t d = 0; overlap && d < t.size.size(); ++d)
        overlap =
            a.offsets[d] < b.offsets[d] + b.sizes[d] && b.offsets[d] < a.offsets[d] + a.sizes[d];
      if (overlap) {
        return absl::DataLossError(absl::StrCat(what, ": chunks at ", shape_to_string(a.offsets),
                                                " and ", shape_to_string(b.offsets), " overlap"));
      }
    }
  }
  if (covered != uint64_t(shape_numel(t.size))) {
    return absl::DataLossError(
        absl::StrCat(what, ": chunks cover ", covered, " of ", shape_numel(t.size), " elements"));
  }
  return absl::OkStatus();
}

// args.NAME of common.pt as an int; nullopt when None or absent.
absl::StatusOr<std::optional<int64_t>> arg_int(const PyValue& args, const char* name) {
  const PyValue* v = args.attr(name);
  if (v == nullptr || v->is_none()) return std::nullopt;
  if (v->kind() != PyValue::Kind::kInt) {
    return absl::DataLossError(absl::StrCat("common.pt: args.", name, " is ", v->repr()));
  }
  return v->as_int();
}
absl::StatusOr<bool> arg_bool(const PyValue& args, const char* name, bool fallback) {
  const PyValue* v = args.attr(name);
  if (v == nullptr || v->is_none()) return fallback;
  if (v->kind() != PyValue::Kind::kBool) {
    return absl::DataLossError(absl::StrCat("common.pt: args.", name, " is ", v->repr()));
  }
  return v->as_bool();
}

// What load needs from common.pt, checked against the model.
struct CommonState {
  int64_t iteration = 0;
  int64_t steps = 0;
  int64_t padded_vocab = 0;
};

absl::StatusOr<CommonState> read_common(const PyValue& common, const ModelConfig& c,
                                        const std::string& path) {
  auto loss = [&](auto&&... parts) {
    return absl::DataLossError(absl::StrCat(path, ": ", parts...));
  };
  const PyValue* args = common.find("args");
  const PyValue* iteration = common.find("iteration");
  if (args == nullptr || args->kind() != PyValue::Kind::kObject) return loss("no args Namespace");
  if (iteration == nullptr || iteration->kind() != PyValue::Kind::kInt || iteration->as_int() < 0)
    return loss("no iteration");
  CommonState s;
  s.iteration = iteration->as_int();

  struct IntArg {
    const char* megatron;
    const char* hf;
    int64_t model;
    std::optional<int64_t> value;
  };
  std::vector<IntArg> ints = {
      {"num_layers", "num_hidden_layers", c.num_hidden_layers, {}},
      {"hidden_size", "hidden_size", c.hidden_size, {}},
      {"ffn_hidden_size", "intermediate_size", c.intermediate_size, {}},
      {"num_attention_heads", "num_attention_heads", c.num_attention_heads, {}},
      {"num_query_groups", "num_key_value_heads", c.num_key_value_heads, {}},
      {"kv_channels", "head_dim", c.head_dim, {}},
      {"vocab_size", "vocab_size", c.vocab_size, {}},
  };
  for (IntArg& a : ints) {
    FP8RL_ASSIGN_OR_RETURN(a.value, arg_int(*args, a.megatron));
  }
  // Megatron leaves num_query_groups None without GQA (a group per head) and kv_channels None
  // for hidden_size / num_attention_heads.
  const std::optional<int64_t> hidden = ints[1].value, heads = ints[3].value;
  if (!ints[4].value) ints[4].value = heads;
  if (!ints[5].value && hidden && heads && *heads > 0) ints[5].value = *hidden / *heads;
  for (const IntArg& a : ints) {
    if (!a.value) return loss("args.", a.megatron, " is missing");
    FP8RL_REQUIRE(*a.value == a.model, path, ": args.", a.megatron, " is ", *a.value,
                  " but the model's ", a.hf, " is ", a.model, ": a checkpoint of another model");
  }
  struct BoolArg {
    const char* megatron;
    const char* hf;
    bool model;
  };
  const BoolArg bools[] = {
      {"add_qkv_bias", "attention_bias", c.attention_bias},
      {"qk_layernorm", "qk_norm", c.qk_norm},
      {"untie_embeddings_and_output_weights", "tie_word_embeddings", !c.tie_word_embeddings},
  };
  for (const BoolArg& a : bools) {
    FP8RL_ASSIGN_OR_RETURN(const bool v, arg_bool(*args, a.megatron, false));
    FP8RL_REQUIRE(v == a.model, path, ": args.", a.megatron, " is ", v ? "True" : "False",
                  ", the model needs ", a.model ? "True" : "False", " (its config's ", a.hf, ")",
                  ": a checkpoint of another model");
  }
  FP8RL_ASSIGN_OR_RETURN(const std::optional<int64_t> padded, arg_int(*args, "padded_vocab_size"));
  s.padded_vocab = padded.value_or(c.vocab_size);
  if (s.padded_vocab < c.vocab_size) return loss("args.padded_vocab_size ", s.padded_vocab);

  // optimizer.optimizer.param_groups[*].step, one value.
  const PyValue* opt = common.find("optimizer");
  const PyValue* inner = opt ? opt->find("optimizer") : nullptr;
  const PyValue* groups = inner ? inner->find("param_groups") : nullptr;
  FP8RL_REQUIRE(
      groups != nullptr && groups->kind() == PyValue::Kind::kList && !groups->items().empty(), path,
      ": no optimizer param_groups (saved without optimizer state?)");
  for (size_t g = 0; g < groups->items().size(); ++g) {
    const PyValue* step = groups->items()[g].find("step");
    if (step == nullptr || step->kind() != PyValue::Kind::kInt || step->as_int() < 0)
      return loss("optimizer param_groups[", g, "] has no step");
    if (g > 0 && step->as_int() != s.steps)
      return loss("optimizer param_groups disagree on the step (", s.steps, ", ", step->as_int(),
                  ")");
    s.steps = step->as_int();
  }
  return s;
}

// The host copies a checkpoint reads must be current (a device optimizer leaves them stale).
absl::Status check_host_state(const Trainer& trainer) {
  if (trainer.host_state_current()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "checkpoint: the optimizer state is on the device and the host copy is stale: call "
      "Trainer::sync_to_host() first");
}

}  // namespace

absl::Status CheckpointArgs::validate() const {
  FP8RL_REQUIRE(micro_batch_size >= 1, "micro_batch_size: ", micro_batch_size);
  FP8RL_REQUIRE(global_batch_size >= 1, "global_batch_size: ", global_batch_size);
  FP8RL_REQUIRE(seq_length >= 0, "seq_length: ", seq_length);
  FP8RL_REQUIRE(make_vocab_size_divisible_by >= 1,
                "make_vocab_size_divisible_by: ", make_vocab_size_divisible_by);
  FP8RL_REQUIRE(max_chunk_bytes >= sizeof(float), "max_chunk_bytes: ", max_chunk_bytes);
  return absl::OkStatus();
}

std::string checkpoint_iteration_dir(const std::string& save_dir, int64_t iteration) {
  return join(save_dir, absl::StrFormat("iter_%07d", iteration));
}

absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> megatron_state_dict(
    const Trainer& trainer, const CheckpointArgs& args) {
  FP8RL_RETURN_IF_ERROR(args.validate());
  FP8RL_RETURN_IF_ERROR(check_host_state(trainer));
  const ModelConfig& config = trainer.policy().config();
  FP8RL_ASSIGN_OR_RETURN(
      const std::vector<MegatronParam> params,
      megatron_params(config,
                      padded_vocab_size(config.vocab_size, args.make_vocab_size_divisible_by)));
  std::vector<std::pair<std::string, Tensor>> out;
  for (const Family& f : kFamilies) {
    FP8RL_ASSIGN_OR_RETURN(const std::vector<Tensor> hf,
                           state_tensors(trainer.optimizer(), config, f.state_suffix));
    for (const MegatronParam& p : params) {
      const Shape shape = p.shape();
      std::vector<float> v(size_t(shape_numel(shape)));
      FP8RL_RETURN_IF_ERROR(gather_box(p, Shape(shape.size(), 0), shape, const_ptrs(hf), v.data()));
      const std::string bytes = encode(v, f.dtype);
      Tensor t = Tensor::empty(f.dtype, shape);
      std::memcpy(t.raw(), bytes.data(), bytes.size());
      out.emplace_back(f.prefix + p.key, std::move(t));
    }
  }
  return out;
}

absl::StatusOr<CheckpointInfo> save_checkpoint(const Trainer& trainer, const std::string& save_dir,
                                               int64_t iteration, const CheckpointArgs& args) {
  FP8RL_RETURN_IF_ERROR(args.validate());
  FP8RL_RETURN_IF_ERROR(check_host_state(trainer));
  FP8RL_REQUIRE(iteration >= 0, "iteration: ", iteration);
  const ModelConfig& config = trainer.policy().config();
  const int64_t padded_vocab =
      padded_vocab_size(config.vocab_size, args.make_vocab_size_divisible_by);
  FP8RL_ASSIGN_OR_RETURN(const std::vector<MegatronParam> params,
                         megatron_params(config, padded_vocab));

  CheckpointInfo info;
  info.iteration = iteration;
  FP8RL_ASSIGN_OR_RETURN(StagedDir dir,
                         StagedDir::create(checkpoint_iteration_dir(save_dir, iteration)));
  info.path = dir.final_path();
  auto write_small = [&](const char* name, std::string_view bytes) {
    info.bytes += bytes.size();
    return write_file_atomic(join(dir.path(), name), bytes);
  };
  FP8RL_RETURN_IF_ERROR(write_small("metadata.json", kMetadataJson));
  FP8RL_ASSIGN_OR_RETURN(const std::string common,
                         torch_save_value(common_state(trainer, args, iteration, padded_vocab)));
  FP8RL_RETURN_IF_ERROR(write_small("common.pt", common));

  std::vector<DcpTensor> tensors;
  FP8RL_ASSIGN_OR_RETURN(FileSink distcp, FileSink::create(join(dir.path(), kDistcp)));
  const ZipWriter::Sink sink = [&distcp](std::string_view b) { return distcp.write(b); };
  for (const Family& f : kFamilies) {
    FP8RL_ASSIGN_OR_RETURN(const std::vector<Tensor> hf,
                           state_tensors(trainer.optimizer(), config, f.state_suffix));
    for (const MegatronParam& p : params) {
      DcpTensor t{f.prefix + p.key, f.dtype, p.shape(), {}};
      for (auto& [offsets, sizes] : plan_chunks(p, args.max_chunk_bytes)) {
        std::vector<float> box(size_t(shape_numel(sizes)));
        FP8RL_RETURN_IF_ERROR(gather_box(p, offsets, sizes, const_ptrs(hf), box.data()));
        const uint64_t at = distcp.offset();
        FP8RL_ASSIGN_OR_RETURN(const uint64_t length,
                               write_torch_tensor(f.dtype, sizes, encode(box, f.dtype), sink));
        t.chunks.push_back({std::move(offsets), std::move(sizes), kDistcp, at, length});
      }
      tensors.push_back(std::move(t));
    }
  }
  info.bytes += distcp.offset();
  FP8RL_RETURN_IF_ERROR(distcp.close());
  FP8RL_RETURN_IF_ERROR(write_small(".metadata", dcp_metadata_dumps(tensors, new_uuid())));
  FP8RL_RETURN_IF_ERROR(dir.commit());
  // Only a complete folder is ever named by the tracker.
  FP8RL_RETURN_IF_ERROR(write_file_atomic(join(save_dir, kTracker), absl::StrCat(iteration)));
  return info;
}

absl::StatusOr<int64_t> load_checkpoint(Trainer* trainer, const std::string& load_dir,
                                        int64_t iteration) {
  FP8RL_REQUIRE(iteration >= 0, "iteration: ", iteration);
  // Which folder.
  std::string dir;
  int64_t expected_iteration = iteration;  // -1: a release checkpoint, any iteration
  if (iteration == 0) {
    const std::string tracker = join(load_dir, kTracker);
    auto text = read_file(tracker);
    if (absl::IsNotFound(text.status())) {
      return absl::NotFoundError(
          absl::StrCat("no checkpoint in ", load_dir, ": ", kTracker, " does not exist"));
    }
    FP8RL_RETURN_IF_ERROR(text.status());
    const std::string value(absl::StripAsciiWhitespace(*text));
    if (value == "release") {
      expected_iteration = -1;
      dir = join(load_dir, "release");
    } else if (!absl::SimpleAtoi(value, &expected_iteration) || expected_iteration < 0) {
      return absl::DataLossError(
          absl::StrCat(tracker, ": '", value, "' is neither an iteration nor 'release'"));
    } else {
      dir = checkpoint_iteration_dir(load_dir, expected_iteration);
    }
    if (!stdfs::is_directory(dir)) {
      return absl::DataLossError(absl::StrCat(tracker, " names ", dir, ", which does not exist"));
    }
  } else {
    dir = checkpoint_iteration_dir(load_dir, iteration);
    if (!stdfs::is_directory(dir)) return absl::NotFoundError(absl::StrCat(dir, " does not exist"));
  }
  auto read_part = [&](const char* name) -> absl::StatusOr<std::string> {
    const std::string path = join(dir, name);
    auto bytes = read_file(path);
    if (absl::IsNotFound(bytes.status()))
      return absl::DataLossError(absl::StrCat(path, " is missing"));
    return bytes;
  };

  // metadata.json: the backend.
  FP8RL_ASSIGN_OR_RETURN(const std::string metadata_json, read_part("metadata.json"));
  const nlohmann::json config_json = nlohmann::json::parse(metadata_json, nullptr, false);
  if (config_json.is_discarded() || !config_json.is_object()) {
    return absl::DataLossError(absl::StrCat(join(dir, "metadata.json"), " is not a JSON object"));
  }
  const auto backend_it = config_json.find("sharded_backend");
  const std::string backend = backend_it != config_json.end() && backend_it->is_string()
                                  ? backend_it->get<std::string>()
                                  : std::string("absent");
  FP8RL_REQUIRE(backend == "torch_dist", join(dir, "metadata.json"), ": sharded_backend is ",
                backend, "; fp8rl reads torch_dist checkpoints");

  // common.pt: the model's arguments, iteration and optimizer step.
  const ModelConfig& config = trainer->policy().config();
  const std::string common_path = join(dir, "common.pt");
  FP8RL_ASSIGN_OR_RETURN(const std::string common_bytes, read_part("common.pt"));
  FP8RL_ASSIGN_OR_RETURN(const PyValue common, torch_load_value(common_bytes, common_path));
  FP8RL_ASSIGN_OR_RETURN(const CommonState state, read_common(common, config, common_path));
  if (expected_iteration >= 0 && state.iteration != expected_iteration) {
    return absl::DataLossError(
        absl::StrCat(common_path, ": iteration ", state.iteration, " in folder ", dir));
  }

  // .metadata: every tensor the model needs, with the model's shape and dtype.
  const std::string metadata_path = join(dir, ".metadata");
  FP8RL_ASSIGN_OR_RETURN(const std::string metadata_bytes, read_part(".metadata"));
  FP8RL_ASSIGN_OR_RETURN(const DcpMetadata metadata,
                         dcp_metadata_loads(metadata_bytes, metadata_path));
  std::map<std::string, const DcpTensor*> by_key;
  for (const DcpTensor& t : metadata.tensors) by_key[t.fqn] = &t;
  FP8RL_ASSIGN_OR_RETURN(const std::vector<MegatronParam> params,
                         megatron_params(config, state.padded_vocab));

  // Read into temporaries: masters and moments first, then check the BF16 weights against them.
  const std::vector<TensorSpec> specs = decoder_parameter_specs(config);
  std::array<std::vector<Tensor>, kFamilies.size()> loaded;
  ItemReader reader(dir);
  for (size_t fi : {size_t(1), size_t(2), size_t(3), kWeights}) {
    const Family& f = kFamilies[fi];
    if (fi != kWeights) {
      for (const TensorSpec& s : specs) loaded[fi].push_back(Tensor::zeros(DType::kF32, s.shape));
    }
    std::vector<float*> dst;
    for (Tensor& t : loaded[fi]) dst.push_back(t.data<float>());
    const std::vector<const float*> masters = const_ptrs(loaded[1]);
    for (const MegatronParam& p : params) {
      const std::string key = f.prefix + p.key;
      auto it = by_key.find(key);
      FP8RL_REQUIRE(it != by_key.end(), metadata_path, " has no tensor ", key,
                    fi == kWeights ? "" : " (saved without optimizer state?)");
      const DcpTensor& t = *it->second;
      FP8RL_REQUIRE(t.dtype == f.dtype && t.size == p.shape(), metadata_path, ": ", key, " is ",
                    std::string(dtype_name(t.dtype)), shape_to_string(t.size),
                    " but the model needs ", std::string(dtype_name(f.dtype)),
                    shape_to_string(p.shape()), ": a checkpoint of another model");
      FP8RL_RETURN_IF_ERROR(check_tiling(t, absl::StrCat(metadata_path, ": ", key)));
      for (const DcpChunk& c : t.chunks) {
        const std::string what = absl::StrCat(join(dir, c.relative_path), " (", key, " chunk at ",
                                              shape_to_string(c.offsets), ")");
        FP8RL_ASSIGN_OR_RETURN(const std::string archive, reader.read(c, what));
        FP8RL_ASSIGN_OR_RETURN(const TorchTensorView view, read_torch_tensor(archive, what));
        if (view.dtype != f.dtype || view.shape != c.sizes) {
          return absl::DataLossError(absl::StrCat(
              what, ": holds ", std::string(dtype_name(view.dtype)), shape_to_string(view.shape),
              ", the metadata says ", std::string(dtype_name(f.dtype)), shape_to_string(c.sizes)));
        }
        const size_t n = size_t(shape_numel(c.sizes));
        std::vector<float> box(n);
        if (fi != kWeights) {
          std::memcpy(box.data(), view.data.data(), n * sizeof(float));
          FP8RL_RETURN_IF_ERROR(scatter_box(p, c.offsets, c.sizes, box.data(), dst));
          continue;
        }
        FP8RL_RETURN_IF_ERROR(gather_box(p, c.offsets, c.sizes, masters, box.data()));
        for (size_t i = 0; i < n; ++i) {
          uint16_t stored;
          std::memcpy(&stored, view.data.data() + 2 * i, 2);
          if (stored != f32_to_bf16(box[i])) {
            return absl::DataLossError(absl::StrCat(
                what, ": element ", i, " is bf16 0x", absl::Hex(stored), " but its fp32 master (",
                kFamilies[1].prefix, p.key, ") rounds to 0x", absl::Hex(f32_to_bf16(box[i]))));
          }
        }
      }
    }
  }

  // Everything checked out: swap the state in.
  AdamW& optimizer = trainer->optimizer();
  std::map<std::string, const Tensor*> by_name;
  for (size_t fi = 1; fi < kFamilies.size(); ++fi)
    for (size_t i = 0; i < specs.size(); ++i)
      by_name[specs[i].name + kFamilies[fi].state_suffix] = &loaded[fi][i];
  for (auto& [name, t] : optimizer.named_state()) {
    const Tensor* src = by_name.at(name);
    std::memcpy(t.raw(), src->raw(), t.nbytes());
  }
  optimizer.set_steps(state.steps);
  // The weights follow the masters (through the FP8 grid with --fp8-param-gather).
  FP8RL_RETURN_IF_ERROR(trainer->sync_params_from_optimizer());
  return expected_iteration >= 0 ? expected_iteration : state.iteration;
}

}  // namespace fp8rl
