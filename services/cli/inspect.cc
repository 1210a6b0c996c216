// `fp8rl inspect`: list a checkpoint's weights and, against a reference checkpoint, the error of
// each dequantized weight.
#include <cmath>
#include <cstdio>
#include <optional>

#include "absl/strings/str_format.h"
#include "core/logging.h"
#include "core/status.h"
#include "model/hf_weights.h"
#include "services/cli/commands.h"

namespace fp8rl {
namespace {

struct InspectFlags {
  std::string model_dir, against;
  bool all = false;
};

const char* storage_name(WeightStorage s) {
  switch (s) {
    case WeightStorage::kPlain:
      return "plain";
    case WeightStorage::kFp8Blockwise:
      return "fp8-128x128";
    case WeightStorage::kInt4Packed:
      return "int4-packed";
  }
  return "?";
}

// ||a - b|| / ||b|| over all elements.
double rel_error(const Tensor& a, const Tensor& b) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = double(a.data<float>()[i]) - double(b.data<float>()[i]);
    num += d * d;
    den += double(b.data<float>()[i]) * b.data<float>()[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

absl::Status run_inspect(const InspectFlags& f) {
  FP8RL_ASSIGN_OR_RETURN(CheckpointReader ckpt, CheckpointReader::open(f.model_dir));
  std::optional<CheckpointReader> ref;
  if (!f.against.empty()) {
    FP8RL_ASSIGN_OR_RETURN(ref, CheckpointReader::open(f.against));
  }
  std::printf("%-48s %-12s %-16s %s\n", "weight", "storage", "shape",
              ref ? "rel. error vs reference" : "");
  double worst[3] = {0, 0, 0};
  int64_t count[3] = {0, 0, 0};
  for (const WeightEntry& w : list_logical_weights(ckpt)) {
    std::string err;
    if (ref) {
      FP8RL_ASSIGN_OR_RETURN(Tensor got, load_weight_f32(ckpt, w.name));
      FP8RL_ASSIGN_OR_RETURN(Tensor want, load_weight_f32(*ref, w.name));
      if (got.shape() != want.shape())
        return absl::InvalidArgumentError(
            absl::StrCat(w.name, ": shape ", shape_to_string(got.shape()), " vs reference ",
                         shape_to_string(want.shape())));
      const double e = rel_error(got, want);
      worst[int(w.storage)] = std::max(worst[int(w.storage)], e);
      ++count[int(w.storage)];
      err = absl::StrCat(e);
    }
    if (f.all || w.storage != WeightStorage::kPlain || !ref)
      std::printf("%-48s %-12s %-16s %s\n", w.name.c_str(), storage_name(w.storage),
                  shape_to_string(w.shape).c_str(), err.c_str());
  }
  if (ref) {
    std::string summary;
    for (WeightStorage s :
         {WeightStorage::kPlain, WeightStorage::kFp8Blockwise, WeightStorage::kInt4Packed}) {
      if (count[int(s)])
        absl::StrAppend(&summary, summary.empty() ? "" : ", ", storage_name(s), " ",
                        absl::StrFormat("%.3g", worst[int(s)]), " (", count[int(s)], ")");
    }
    std::printf("max rel. error: %s\n", summary.c_str());
  }
  return absl::OkStatus();
}

}  // namespace

void register_inspect(CLI::App& app, int& rc) {
  auto f = std::make_shared<InspectFlags>();
  CLI::App* sub = app.add_subcommand(
      "inspect", "List a checkpoint's weights; with --against, each weight's dequantization error");
  sub->add_option("--model-dir", f->model_dir, "HF checkpoint folder")->required();
  sub->add_option("--against", f->against, "Reference checkpoint (e.g. the BF16 original)");
  sub->add_flag("--all", f->all, "With --against, also list weights stored unquantized");
  sub->callback([f, &rc] {
    absl::Status st = run_inspect(*f);
    if (!st.ok()) {
      FP8RL_LOG_ERROR("inspect failed: {}", st.ToString());
      rc = 1;
    }
  });
}

}  // namespace fp8rl
