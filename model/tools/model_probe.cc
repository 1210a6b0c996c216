// fp8rl_model_probe: runs the decoder's forward and backward (CPU, or with --device cuda the CUDA
// decoder) on a token file and writes the logits, per-token log-probabilities and entropies and
// every parameter gradient to safetensors, for tests/interop/test_hf_parity.py to compare with
// transformers. A test tool, not a user one.
//
// Input: a safetensors file with "tokens" int32 [T] and optionally "cu_seqlens" int32 [S+1]
// (default: one sequence). Loss: the sum over positions of log p(next token of the same
// sequence). Output: "logits" f32 [T, V], "logprobs" and "entropy" f32 [T], and "grad.<HF name>"
// f32 for every parameter.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <span>
#include <vector>

#include "core/safetensors.h"
#include "core/status.h"
#include "model/decoder.h"
#if FP8RL_WITH_CUDA
#include "model/cuda/cuda_decoder.h"
#endif

namespace fp8rl {
namespace {

absl::StatusOr<std::vector<int32_t>> read_i32(const SafetensorsFile& f, const std::string& name) {
  FP8RL_ASSIGN_OR_RETURN(Tensor t, f.tensor(name));
  FP8RL_REQUIRE(t.dtype() == DType::kI32 && t.ndim() == 1, name,
                " must be a 1-D int32 tensor, got ", t.to_string());
  const int32_t* p = t.data<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

// What one backend computed on the batch.
struct ProbeResult {
  std::vector<float> logits, logprob, entropy;
  DecoderParams grads;
};

absl::Status run_cpu(Decoder& model, const PackedBatch& batch, std::span<const int32_t> targets,
                     ProbeResult* r) {
  FP8RL_ASSIGN_OR_RETURN(DecoderForward fwd, model.forward(batch, targets));
  const std::vector<float> ones(size_t(batch.num_tokens()), 1.f), zeros(ones.size(), 0.f);
  r->grads = DecoderParams::zeros(model.config());
  FP8RL_RETURN_IF_ERROR(model.backward(fwd, ones, zeros, &r->grads));
  r->logits = model.logits(fwd);
  r->logprob = fwd.logprob;
  r->entropy = fwd.entropy;
  return absl::OkStatus();
}

absl::Status run_cuda(const Decoder& model, const PackedBatch& batch,
                      std::span<const int32_t> targets, ProbeResult* r) {
#if FP8RL_WITH_CUDA
  CudaDecoderOptions options;
  options.linear = model.options().linear;
  FP8RL_ASSIGN_OR_RETURN(CudaDecoder gpu,
                         CudaDecoder::create(model.config(), model.params(), options));
  FP8RL_ASSIGN_OR_RETURN(CudaDecoderForward fwd, gpu.forward(batch, targets));
  const std::vector<float> ones(size_t(batch.num_tokens()), 1.f), zeros(ones.size(), 0.f);
  FP8RL_RETURN_IF_ERROR(gpu.backward(fwd, ones, zeros));
  r->grads = DecoderParams::zeros(model.config());
  FP8RL_RETURN_IF_ERROR(gpu.grads_to_host(&r->grads));
  FP8RL_ASSIGN_OR_RETURN(r->logits, gpu.logits(fwd));
  r->logprob = fwd.logprob;
  r->entropy = fwd.entropy;
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError("fp8rl_model_probe: built without CUDA");
#endif
}

absl::Status probe(const std::string& model_dir, const std::string& tokens_path,
                   const std::string& out_path, LinearPrecision precision, bool cuda) {
  DecoderOptions options;
  options.linear.precision = precision;
  FP8RL_ASSIGN_OR_RETURN(Decoder model, Decoder::load(model_dir, options));
  FP8RL_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(tokens_path));
  PackedBatch batch;
  FP8RL_ASSIGN_OR_RETURN(batch.tokens, read_i32(*file, "tokens"));
  batch.cu_seqlens = {0, int32_t(batch.tokens.size())};
  if (file->find("cu_seqlens")) {
    FP8RL_ASSIGN_OR_RETURN(batch.cu_seqlens, read_i32(*file, "cu_seqlens"));
  }
  std::vector<int32_t> targets(batch.tokens.size(), -1);
  for (int64_t s = 0; s < batch.num_seqs(); ++s) {
    for (int32_t i = batch.cu_seqlens[s]; i + 1 < batch.cu_seqlens[s + 1]; ++i)
      targets[i] = batch.tokens[i + 1];
  }
  ProbeResult r;
  FP8RL_RETURN_IF_ERROR(cuda ? run_cuda(model, batch, targets, &r)
                             : run_cpu(model, batch, targets, &r));
  const int64_t t = batch.num_tokens(), v = model.config().vocab_size;

  auto f32_tensor = [](const std::vector<float>& data, Shape shape) {
    Tensor out = Tensor::empty(DType::kF32, std::move(shape));
    std::memcpy(out.raw(), data.data(), data.size() * sizeof(float));
    return out;
  };
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back("logits", f32_tensor(r.logits, {t, v}));
  out.emplace_back("logprobs", f32_tensor(r.logprob, {t}));
  out.emplace_back("entropy", f32_tensor(r.entropy, {t}));
  for (auto& [name, g] : r.grads.named(model.config())) out.emplace_back("grad." + name, *g);
  return save_safetensors(out_path, out);
}

}  // namespace
}  // namespace fp8rl

int main(int argc, char** argv) {
  CLI::App app{"fp8rl_model_probe: decoder forward+backward on a token file (interop tests)"};
  std::string model_dir, tokens, out, precision = "f32", device = "cpu";
  app.add_option("model_dir", model_dir, "HF checkpoint folder")->required();
  app.add_option("tokens", tokens, "safetensors with int32 tokens [and cu_seqlens]")->required();
  app.add_option("out", out, "safetensors file to write")->required();
  app.add_option("--precision", precision, "linear precision")
      ->check(CLI::IsMember({"f32", "bf16", "fp8"}));
  app.add_option("--device", device, "cpu, or cuda (the CUDA decoder: bf16 or fp8 precision)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  CLI11_PARSE(app, argc, argv);
  const fp8rl::LinearPrecision p = precision == "fp8"    ? fp8rl::LinearPrecision::kFP8
                                   : precision == "bf16" ? fp8rl::LinearPrecision::kBF16
                                                         : fp8rl::LinearPrecision::kF32;
  const absl::Status s = fp8rl::probe(model_dir, tokens, out, p, device == "cuda");
  if (!s.ok()) {
    std::fprintf(stderr, "fp8rl_model_probe: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
