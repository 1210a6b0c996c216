// SwiGLU activation of the MLP: act = silu(gate) * up, elementwise.
#pragma once

#include <cstdint>

namespace fp8rl {

// act[i] = gate[i] * sigmoid(gate[i]) * up[i] for i < n. Threads over chunks.
void swiglu_forward(int64_t n, const float* gate, const float* up, float* act);
// dgate, dup (overwritten) from dact and the forward's inputs. Outputs may alias dact.
void swiglu_backward(int64_t n, const float* gate, const float* up, const float* dact, float* dgate,
                     float* dup);

}  // namespace fp8rl
