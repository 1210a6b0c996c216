// Rotary position embeddings as HF's Llama/Qwen rotate_half: element i of a head pairs with
// element i + head_dim/2; angle = position * theta^(-2i/head_dim).
#pragma once

#include <cstdint>
#include <vector>

namespace fp8rl {

// cos/sin of every (position, i) for positions [0, max_positions) and i < head_dim/2, computed as
// HF does (inv_freq in float32, angle = float(inv_freq * position)).
struct RopeTable {
  int64_t head_dim = 0;
  std::vector<float> cos;  // [max_positions, head_dim/2]
  std::vector<float> sin;

  static RopeTable build(int64_t max_positions, int64_t head_dim, double theta);
};

// x [tokens, heads, head_dim] rotated in place by the angle of positions[t]. `inverse` applies
// the transposed rotation, which is the backward of the forward rotation.
void rope_apply(const RopeTable& table, int64_t tokens, int64_t heads, const int32_t* positions,
                bool inverse, float* x);

}  // namespace fp8rl
