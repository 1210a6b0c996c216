// Token embedding lookup and its scatter-add backward.
#pragma once

#include <cstdint>

namespace fp8rl {

// out [tokens, dim] = table[ids[t]]. Ids must already be checked against the vocabulary.
void embedding_forward(int64_t tokens, int64_t dim, const int32_t* ids, const float* table,
                       float* out);
// dtable [vocab, dim] += dout rows scattered to their ids. Threads split the vocabulary, so no two
// threads write one row; the order of additions into a row is ascending token order.
void embedding_backward(int64_t tokens, int64_t dim, int64_t vocab, const int32_t* ids,
                        const float* dout, float* dtable);

}  // namespace fp8rl
