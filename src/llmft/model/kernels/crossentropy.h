// Output head fused with softmax cross-entropy, as F.cross_entropy(x @ W^T, targets,
// reduction="none"). Rows are processed R at a time so at most (R, V) logits exist at once.
#pragma once

#include <cstdint>
#include <span>

#include "llmft/model/kernels/bf16.h"

namespace llmft::kernels {

// bf16 operands of the head's matrix products (Precision::kBf16); all empty: fp32 products.
// x: (M, C) the hidden rows rounded   w: (V, C) the head weight rounded
// dlogits: (min(M, R) * V) scratch for the rounded logit gradients (backward only)
struct HeadBf16 {
  std::span<const bf16> x, w;
  std::span<bf16> dlogits;
  bool on() const { return !w.empty(); }
};

// A low-rank term of the head (a LoRA adapter, lora.h), all fp32: logits += u @ B^T with u (M, r)
// and B (V, r); a backward accumulates dB (V, r) += dlogits^T @ u (dB may be empty) and writes
// du (M, r) = dlogits @ B. r = 0: none.
struct HeadLowRank {
  std::span<const float> u, B;
  std::span<float> dB, du;
  int64_t r = 0;
  bool on() const { return r > 0; }
};

// losses: (M) per-row -log softmax(logits)[target]   lse: (M) saved logsumexp of each row
// scratch: (R, V) overwritten; after the call it holds the raw logits of the LAST chunk
//          (rows from ((M-1)/R)*R), so when M <= R it holds all M rows.
// x: (M, C) hidden rows   w: (V, C) head weight (Linear layout: lm_head or wte)
// targets: (M) in [0, V)
void head_crossentropy_forward(std::span<float> losses, std::span<float> lse,
                               std::span<float> scratch, std::span<const float> x,
                               std::span<const float> w, std::span<const int32_t> targets,
                               int64_t M, int64_t C, int64_t V, int64_t R,
                               const HeadBf16& lowp = {}, const HeadLowRank& lr = {});
// dloss: d(total)/d(losses[i]), the same for every row, or, with `row_dloss` (M) non-empty,
// dloss * row_dloss[i] for row i (DPO weights each token by its sequence's share of the loss).
// Accumulates into dx (M, C) and dw (V, C) (dw may be empty: frozen head). scratch: (R, V); when
// `scratch_has_logits` (M <= R and the forward just ran) the logits are reused, not recomputed.
void head_crossentropy_backward(std::span<float> dx, std::span<float> dw, std::span<float> scratch,
                                std::span<const float> x, std::span<const float> w,
                                std::span<const int32_t> targets, std::span<const float> lse,
                                float dloss, int64_t M, int64_t C, int64_t V, int64_t R,
                                bool scratch_has_logits, const HeadBf16& lowp = {},
                                const HeadLowRank& lr = {}, std::span<const float> row_dloss = {});

// Training forward and backward in one pass, for when dloss is known before the forward (the
// trainer's 1 / target count is): each chunk of R rows gets its (R, V) logits, its losses, and
// at once its gradients, so nothing is recomputed and nothing is kept for a later backward.
// With R = 256 the scratch is 51 MB for GPT-2's V = 50257 (R = 1024: 206 MB), at the same speed
// as forward + backward with all rows in one chunk (bench/bench_kernels.cpp); R = 128 (26 MB)
// costs ~15% of the head's time (sgemm with few rows).
// losses, lse: (M)   dx: (M, C) accumulated   dw: (V, C) accumulated, may be empty (frozen head)
// scratch: (min(M, R) * V) overwritten   x, w, targets, dloss: as the functions above.
void head_crossentropy_forward_backward(std::span<float> losses, std::span<float> lse,
                                        std::span<float> dx, std::span<float> dw,
                                        std::span<float> scratch, std::span<const float> x,
                                        std::span<const float> w,
                                        std::span<const int32_t> targets, float dloss, int64_t M,
                                        int64_t C, int64_t V, int64_t R,
                                        const HeadBf16& lowp = {}, const HeadLowRank& lr = {});

}  // namespace llmft::kernels
