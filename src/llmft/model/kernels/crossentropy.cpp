// Fused head + cross-entropy forward/backward; see crossentropy.h.
#include "llmft/model/kernels/crossentropy.h"

#include <algorithm>
#include <cmath>

#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/matmul.h"
#include "llmft/model/kernels/vmath.h"

namespace llmft::kernels {

namespace {
void check_targets(std::span<const int32_t> targets, int64_t M, int64_t V) {
  check_size(targets, M, "crossentropy targets");
  for (int64_t i = 0; i < M; ++i)
    LLMFT_CHECK(targets[i] >= 0 && targets[i] < V, "target {} at row {} outside [0, {})",
                targets[i], i, V);
}

// logits (rows, V) = x[r0:r0+rows] @ W^T (+ u[r0:r0+rows] @ B^T), in the precision `lowp` asks
// for.
void head_logits(std::span<float> logits, std::span<const float> x, std::span<const float> w,
                 const HeadBf16& lowp, const HeadLowRank& lr, int64_t r0, int64_t rows,
                 int64_t C, int64_t V) {
  if (lowp.on()) {
    matmul_forward(logits.first(rows * V), lowp.x.subspan(r0 * C, rows * C), lowp.w, {}, rows, C,
                   V, WeightLayout::kOutIn);
  } else {
    matmul_forward(logits.first(rows * V), x.subspan(r0 * C, rows * C), w, {}, rows, C, V,
                   WeightLayout::kOutIn);
  }
  // += u @ B^T: the input-gradient product of a (V, r) Conv1D weight, which accumulates
  if (lr.on())
    matmul_backward(logits.first(rows * V), {}, {}, lr.u.subspan(r0 * lr.r, rows * lr.r), {},
                    lr.B, rows, V, lr.r, WeightLayout::kInOut);
}

// dx[r0:r0+rows] += dlogits @ W;  dW += dlogits^T @ x[r0:r0+rows]  (and the low-rank term's)
void head_grads(std::span<float> dx, std::span<float> dw, std::span<const float> dlogits,
                std::span<const float> x, std::span<const float> w, const HeadBf16& lowp,
                const HeadLowRank& lr, int64_t r0, int64_t rows, int64_t C, int64_t V) {
  if (lr.on()) {
    // dB += dlogits^T @ u;  du = dlogits @ B
    const auto u = lr.u.subspan(r0 * lr.r, rows * lr.r);
    matmul_backward({}, lr.dB, {}, u, dlogits.first(rows * V), {}, rows, V, lr.r,
                    WeightLayout::kInOut);
    matmul_forward(lr.du.subspan(r0 * lr.r, rows * lr.r), dlogits.first(rows * V), lr.B, {},
                   rows, V, lr.r, WeightLayout::kInOut);
  }
  if (lowp.on()) {
    auto dl = lowp.dlogits.first(rows * V);
    to_bf16(dl, dlogits.first(rows * V));
    matmul_backward(dx.subspan(r0 * C, rows * C), dw, {}, {}, dl,
                    lowp.x.subspan(r0 * C, rows * C), lowp.w, rows, C, V, WeightLayout::kOutIn);
  } else {
    matmul_backward(dx.subspan(r0 * C, rows * C), dw, {}, dlogits.first(rows * V),
                    x.subspan(r0 * C, rows * C), w, rows, C, V, WeightLayout::kOutIn);
  }
}

void check_lowp(const HeadBf16& lowp, int64_t M, int64_t C, int64_t V, int64_t R,
                bool backward) {
  if (!lowp.on()) return;
  check_size(lowp.x, M * C, "crossentropy x (bf16)");
  check_size(lowp.w, V * C, "crossentropy w (bf16)");
  if (backward) check_size(lowp.dlogits, std::min(M, R) * V, "crossentropy dlogits (bf16)");
}
}  // namespace

void head_crossentropy_forward(std::span<float> losses, std::span<float> lse,
                               std::span<float> scratch, std::span<const float> x,
                               std::span<const float> w, std::span<const int32_t> targets,
                               int64_t M, int64_t C, int64_t V, int64_t R,
                               const HeadBf16& lowp, const HeadLowRank& lr) {
  LLMFT_CHECK(R >= 1, "chunk rows R={}", R);
  check_size(losses, M, "crossentropy losses");
  check_size(lse, M, "crossentropy lse");
  check_size(scratch, std::min(M, R) * V, "crossentropy scratch");
  if (!lowp.on()) {
    check_size(x, M * C, "crossentropy x");
    check_size(w, V * C, "crossentropy w");
  }
  check_targets(targets, M, V);
  check_lowp(lowp, M, C, V, R, false);
  for (int64_t r0 = 0; r0 < M; r0 += R) {
    const int64_t rows = std::min(R, M - r0);
    head_logits(scratch, x, w, lowp, lr, r0, rows, C, V);
#pragma omp parallel for if (rows * V >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      const float* l = scratch.data() + r * V;  // (V)
      float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
      for (int64_t j = 0; j < V; ++j) maxv = std::max(maxv, l[j]);
      // Terms in float, their sum in double (V = 50257 terms).
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < V; ++j) sum += static_cast<double>(vexp(l[j] - maxv));
      const float s = maxv + static_cast<float>(std::log(sum));
      lse[r0 + r] = s;
      losses[r0 + r] = s - l[targets[r0 + r]];
    }
  }
}

void head_crossentropy_backward(std::span<float> dx, std::span<float> dw, std::span<float> scratch,
                                std::span<const float> x, std::span<const float> w,
                                std::span<const int32_t> targets, std::span<const float> lse,
                                float dloss, int64_t M, int64_t C, int64_t V, int64_t R,
                                bool scratch_has_logits, const HeadBf16& lowp,
                                const HeadLowRank& lr, std::span<const float> row_dloss) {
  LLMFT_CHECK(R >= 1, "chunk rows R={}", R);
  if (!row_dloss.empty()) check_size(row_dloss, M, "crossentropy row_dloss");
  check_size(dx, M * C, "crossentropy dx");
  if (!dw.empty()) check_size(dw, V * C, "crossentropy dw");
  check_size(scratch, std::min(M, R) * V, "crossentropy scratch");
  if (!lowp.on()) {
    check_size(x, M * C, "crossentropy x");
    check_size(w, V * C, "crossentropy w");
  }
  check_size(lse, M, "crossentropy lse");
  check_targets(targets, M, V);
  check_lowp(lowp, M, C, V, R, true);
  const bool reuse = scratch_has_logits && M <= R;
  for (int64_t r0 = 0; r0 < M; r0 += R) {
    const int64_t rows = std::min(R, M - r0);
    if (!reuse) head_logits(scratch, x, w, lowp, lr, r0, rows, C, V);
    // loss = lse - logit[target]:  dlogits = (softmax - onehot(target)) * dloss, in place.
#pragma omp parallel for if (rows * V >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      float* l = scratch.data() + r * V;
      const float s = lse[r0 + r];
      const float d = row_dloss.empty() ? dloss : dloss * row_dloss[r0 + r];
#pragma omp simd
      for (int64_t j = 0; j < V; ++j) l[j] = vexp(l[j] - s) * d;
      l[targets[r0 + r]] -= d;
    }
    // logits = x @ W^T
    head_grads(dx, dw, scratch, x, w, lowp, lr, r0, rows, C, V);
  }
}

void head_crossentropy_forward_backward(std::span<float> losses, std::span<float> lse,
                                        std::span<float> dx, std::span<float> dw,
                                        std::span<float> scratch, std::span<const float> x,
                                        std::span<const float> w,
                                        std::span<const int32_t> targets, float dloss, int64_t M,
                                        int64_t C, int64_t V, int64_t R,
                                        const HeadBf16& lowp, const HeadLowRank& lr) {
  LLMFT_CHECK(R >= 1, "chunk rows R={}", R);
  check_size(losses, M, "crossentropy losses");
  check_size(lse, M, "crossentropy lse");
  check_size(dx, M * C, "crossentropy dx");
  if (!dw.empty()) check_size(dw, V * C, "crossentropy dw");
  check_size(scratch, std::min(M, R) * V, "crossentropy scratch");
  if (!lowp.on()) {
    check_size(x, M * C, "crossentropy x");
    check_size(w, V * C, "crossentropy w");
  }
  check_targets(targets, M, V);
  check_lowp(lowp, M, C, V, R, true);
  for (int64_t r0 = 0; r0 < M; r0 += R) {
    const int64_t rows = std::min(R, M - r0);
    auto logits = scratch.first(rows * V);  // (rows, V)
    head_logits(logits, x, w, lowp, lr, r0, rows, C, V);
#pragma omp parallel for if (rows * V >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      float* l = logits.data() + r * V;  // (V), L2-resident across the three passes
      float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
      for (int64_t j = 0; j < V; ++j) maxv = std::max(maxv, l[j]);
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < V; ++j) sum += static_cast<double>(vexp(l[j] - maxv));
      const float s = maxv + static_cast<float>(std::log(sum));
      const int32_t t = targets[r0 + r];
      lse[r0 + r] = s;
      losses[r0 + r] = s - l[t];
      // loss = lse - logit[target]:  dlogits = (softmax - onehot(target)) * dloss, in place.
#pragma omp simd
      for (int64_t j = 0; j < V; ++j) l[j] = vexp(l[j] - s) * dloss;
      l[t] -= dloss;
    }
    // logits = x @ W^T
    head_grads(dx, dw, logits, x, w, lowp, lr, r0, rows, C, V);
  }
}

}  // namespace llmft::kernels
