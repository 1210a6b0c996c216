// Process-wide launch policy of the quant/cuda tile kernels, so that a benchmark can compare
// policies in one process. Defaults are the measured best (bench/bench_fp8, see its JSON).
#pragma once

#include <atomic>

namespace fp8rl {

// kPersistent: as many CTAs as fit at once, each looping over tiles with the next tile's loads in
// flight while it works; kPerTile: one CTA per 128x128 tile; kAuto: the measured better one for
// each kernel (tile_quant.cuh).
enum class TilePolicy { kAuto, kPersistent, kPerTile };

struct QuantTuning {
  std::atomic<TilePolicy> tile_policy{TilePolicy::kAuto};
};

// The one instance. Changing it affects launches made afterwards; thread-safe.
QuantTuning& quant_tuning();

}  // namespace fp8rl
