// Output head fused with softmax cross-entropy, as F.cross_entropy(x @ W^T, targets,
// reduction="none"). Rows are processed R at a time so at most (R, V) logits exist at once.
#pragma once

#include <cstdint>
#include <span>

namespace llmft::kernels {

// losses: (M) per-row -log softmax(logits)[target]   lse: (M) saved logsumexp of each row
// scratch: (R, V) overwritten; after the call it holds the raw logits of the LAST chunk
//          (rows from ((M-1)/R)*R), so when M <= R it holds all M rows.
// x: (M, C) hidden rows   w: (V, C) head weight (Linear layout: lm_head or wte)
// targets: (M) in [0, V)
void head_crossentropy_forward(std::span<float> losses, std::span<float> lse,
                               std::span<float> scratch, std::span<const float> x,
                               std::span<const float> w, std::span<const int32_t> targets,
                               int64_t M, int64_t C, int64_t V, int64_t R);
// dloss: d(total)/d(losses[i]), the same for every row. Accumulates into dx (M, C) and dw (V, C)
// (dw may be empty: frozen head). scratch: (R, V); when `scratch_has_logits` (M <= R and the
// forward just ran) the logits are reused instead of recomputed.
void head_crossentropy_backward(std::span<float> dx, std::span<float> dw, std::span<float> scratch,
                                std::span<const float> x, std::span<const float> w,
                                std::span<const int32_t> targets, std::span<const float> lse,
                                float dloss, int64_t M, int64_t C, int64_t V, int64_t R,
                                bool scratch_has_logits);

}  // namespace llmft::kernels
