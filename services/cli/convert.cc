// `fp8rl convert`: HF BF16 checkpoint -> blockwise FP8 or INT4 pack-quantized.
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "core/logging.h"
#include "model/hf_convert.h"
#include "quant/int4.h"
#include "services/cli/commands.h"

namespace fp8rl {
namespace {

struct ConvertFlags {
  std::string model_dir, save_dir, format = "fp8";
  int64_t group_size = int4_group_size_from_env();  // OPEN_TRAINING_INT4_GROUP_SIZE, default 128
  std::vector<std::string> ignore_rules;
  std::string scale_mode = "env";
};

// One progress line redrawn in place on a terminal; one log line per 10% otherwise.
void print_progress(const ConvertProgress& p, bool tty, int& last_decile) {
  const double pct = p.bytes_total ? 100.0 * double(p.bytes_done) / double(p.bytes_total) : 100.0;
  if (tty) {
    std::fprintf(stderr, "\r\033[K[%lld/%lld] %5.1f%% %s", (long long)p.done, (long long)p.total,
                 pct, p.name->c_str());
    if (p.done == p.total) std::fputc('\n', stderr);
    return;
  }
  const int decile = int(pct / 10);
  if (decile != last_decile || p.done == p.total) {
    last_decile = decile;
    FP8RL_LOG_INFO("convert: {}/{} tensors ({:.0f}%)", p.done, p.total, pct);
  }
}

int run_convert(const ConvertFlags& f) {
  ConvertOptions o;
  o.model_dir = f.model_dir;
  o.save_dir = f.save_dir;
  o.format = f.format == "fp8" ? ConvertFormat::kFp8 : ConvertFormat::kInt4;
  o.group_size = f.group_size;
  o.int4_ignore = f.ignore_rules;
  if (f.scale_mode != "env") o.fp8_scale.power_2 = f.scale_mode == "pow2";
  const bool tty = ::isatty(STDERR_FILENO);
  int last_decile = -1;
  o.on_progress = [&](const ConvertProgress& p) { print_progress(p, tty, last_decile); };

  const auto t0 = std::chrono::steady_clock::now();
  auto report = convert_hf_checkpoint(o);
  if (!report.ok()) {
    if (tty) std::fputc('\n', stderr);
    FP8RL_LOG_ERROR("convert failed: {}", report.status().ToString());
    return 1;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "wrote %s (%s): %lld tensors quantized, %lld copied, %lld other files; %.1f MiB -> "
      "%.1f MiB in %.2f s\n",
      o.save_dir.c_str(), f.format.c_str(), (long long)report->tensors_quantized,
      (long long)report->tensors_copied, (long long)report->files_copied,
      double(report->bytes_in) / (1 << 20), double(report->bytes_out) / (1 << 20), secs);
  return 0;
}

}  // namespace

void register_convert(CLI::App& app, int& rc) {
  auto flags = std::make_shared<ConvertFlags>();
  CLI::App* sub = app.add_subcommand(
      "convert",
      "Convert an HF BF16 checkpoint to blockwise FP8 (DeepSeek-V3 layout) or INT4 "
      "(compressed-tensors pack-quantized)");
  sub->add_option("--model-dir", flags->model_dir, "Input HF checkpoint folder")->required();
  sub->add_option("--save-dir", flags->save_dir, "Output folder (must not exist)")->required();
  sub->add_option("--format", flags->format, "fp8 or int4")->check(CLI::IsMember({"fp8", "int4"}));
  sub->add_option("--group-size", flags->group_size, "INT4 group size along the input dimension")
      ->check(CLI::PositiveNumber);
  sub->add_option("--ignore-rules", flags->ignore_rules,
                  "INT4: modules kept in BF16 (\"re:<regex>\", exact name or prefix); default: "
                  "lm_head, norms, embeddings, MoE router");
  sub->add_option("--scale-mode", flags->scale_mode,
                  "FP8 weight scales: env (NVTE_FP8_BLOCK_SCALING_* knobs; power-of-2 unless "
                  "NVTE_FP8_BLOCK_SCALING_FP32_SCALES=1), pow2, or fp32")
      ->check(CLI::IsMember({"env", "pow2", "fp32"}));
  sub->callback([flags, &rc] { rc = run_convert(*flags); });
}

}  // namespace fp8rl
