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

// The same loss with the vocabulary in column blocks of Vb entries and an online logsumexp, so
// the scratch is (min(M, R), Vb) instead of (min(M, R), V): with Vb = 8192 and R = 1024 that
// is 34 MB instead of 206 MB for GPT-2's V = 50257.
// losses, lse, x, w, targets: as head_crossentropy_forward.   scratch: (min(M, R) * min(V, Vb))
// overwritten; after the call it holds the raw logits of the LAST block of the LAST row chunk,
// (rows, vb) row-major with vb = that block's width.
void head_crossentropy_forward_blocked(std::span<float> losses, std::span<float> lse,
                                       std::span<float> scratch, std::span<const float> x,
                                       std::span<const float> w,
                                       std::span<const int32_t> targets, int64_t M, int64_t C,
                                       int64_t V, int64_t R, int64_t Vb);
// As head_crossentropy_backward. Row chunks and blocks run in reverse order, so the first block
// is the one the forward left in scratch: when `scratch_has_logits` (the forward with the same
// M, R, Vb just ran) it is reused; every other block's logits are recomputed. With
// Vb >= V and M <= R that is all of them (no recompute), as the unblocked kernel.
void head_crossentropy_backward_blocked(std::span<float> dx, std::span<float> dw,
                                        std::span<float> scratch, std::span<const float> x,
                                        std::span<const float> w,
                                        std::span<const int32_t> targets,
                                        std::span<const float> lse, float dloss, int64_t M,
                                        int64_t C, int64_t V, int64_t R, int64_t Vb,
                                        bool scratch_has_logits);

// Training forward and backward in one pass, for when dloss is known before the forward (the
// trainer's 1 / target count is): each chunk of R rows gets its (R, V) logits, its losses, and
// at once its gradients, so nothing is recomputed and nothing is kept for a later backward.
// With R = 128 the scratch is 26 MB for GPT-2's V = 50257.
// losses, lse: (M)   dx: (M, C) accumulated   dw: (V, C) accumulated, may be empty (frozen head)
// scratch: (min(M, R) * V) overwritten   x, w, targets, dloss: as the functions above.
void head_crossentropy_forward_backward(std::span<float> losses, std::span<float> lse,
                                        std::span<float> dx, std::span<float> dw,
                                        std::span<float> scratch, std::span<const float> x,
                                        std::span<const float> w,
                                        std::span<const int32_t> targets, float dloss, int64_t M,
                                        int64_t C, int64_t V, int64_t R);

}  // namespace llmft::kernels
