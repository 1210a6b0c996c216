// CUDA twin of model/ops/swiglu.h on bf16 tensors with float32 math: act = silu(gate) * up and
// its backward.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace fp8rl {

// act [n] = gate * sigmoid(gate) * up, bf16; n even. Enqueued on `stream`, not synchronised.
absl::Status swiglu_forward_cuda(int64_t n, const uint16_t* gate, const uint16_t* up, uint16_t* act,
                                 cudaStream_t stream);
// dgate, dup [n] from dact [n] and the forward's inputs; dgate and dup may alias dact.
absl::Status swiglu_backward_cuda(int64_t n, const uint16_t* gate, const uint16_t* up,
                                  const uint16_t* dact, uint16_t* dgate, uint16_t* dup,
                                  cudaStream_t stream);

}  // namespace fp8rl
