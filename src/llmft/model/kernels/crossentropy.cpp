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
}  // namespace

void head_crossentropy_forward(std::span<float> losses, std::span<float> lse,
                               std::span<float> scratch, std::span<const float> x,
                               std::span<const float> w, std::span<const int32_t> targets,
                               int64_t M, int64_t C, int64_t V, int64_t R) {
  LLMFT_CHECK(R >= 1, "chunk rows R={}", R);
  check_size(losses, M, "crossentropy losses");
  check_size(lse, M, "crossentropy lse");
  check_size(scratch, std::min(M, R) * V, "crossentropy scratch");
  check_size(x, M * C, "crossentropy x");
  check_size(w, V * C, "crossentropy w");
  check_targets(targets, M, V);
  for (int64_t r0 = 0; r0 < M; r0 += R) {
    const int64_t rows = std::min(R, M - r0);
    // logits (rows, V) = x[r0:r0+rows] (rows, C) @ W^T
    matmul_forward(scratch, x.subspan(r0 * C), w, {}, rows, C, V, WeightLayout::kOutIn);
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
                                bool scratch_has_logits) {
  LLMFT_CHECK(R >= 1, "chunk rows R={}", R);
  check_size(dx, M * C, "crossentropy dx");
  if (!dw.empty()) check_size(dw, V * C, "crossentropy dw");
  check_size(scratch, std::min(M, R) * V, "crossentropy scratch");
  check_size(x, M * C, "crossentropy x");
  check_size(w, V * C, "crossentropy w");
  check_size(lse, M, "crossentropy lse");
  check_targets(targets, M, V);
  const bool reuse = scratch_has_logits && M <= R;
  for (int64_t r0 = 0; r0 < M; r0 += R) {
    const int64_t rows = std::min(R, M - r0);
    if (!reuse)
      matmul_forward(scratch, x.subspan(r0 * C), w, {}, rows, C, V, WeightLayout::kOutIn);
    // loss = lse - logit[target]:  dlogits = (softmax - onehot(target)) * dloss, in place.
#pragma omp parallel for if (rows * V >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      float* l = scratch.data() + r * V;
      const float s = lse[r0 + r];
#pragma omp simd
      for (int64_t j = 0; j < V; ++j) l[j] = vexp(l[j] - s) * dloss;
      l[targets[r0 + r]] -= dloss;
    }
    // logits = x @ W^T
    matmul_backward(dx.subspan(r0 * C), dw, {}, scratch, x.subspan(r0 * C), w, rows, C, V,
                    WeightLayout::kOutIn);
  }
}

void head_crossentropy_forward_backward(std::span<float> losses, std::span<float> lse,
                                        std::span<float> dx, std::span<float> dw,
                                        std::span<float> scratch, std::span<const float> x,
                                        std::span<const float> w,
                                        std::span<const int32_t> targets, float dloss, int64_t M,
                                        int64_t C, int64_t V, int64_t R) {
  LLMFT_CHECK(R >= 1, "chunk rows R={}", R);
  check_size(losses, M, "crossentropy losses");
  check_size(lse, M, "crossentropy lse");
  check_size(dx, M * C, "crossentropy dx");
  if (!dw.empty()) check_size(dw, V * C, "crossentropy dw");
  check_size(scratch, std::min(M, R) * V, "crossentropy scratch");
  check_size(x, M * C, "crossentropy x");
  check_size(w, V * C, "crossentropy w");
  check_targets(targets, M, V);
  for (int64_t r0 = 0; r0 < M; r0 += R) {
    const int64_t rows = std::min(R, M - r0);
    const auto xc = x.subspan(r0 * C, rows * C);
    auto logits = scratch.first(rows * V);  // (rows, V)
    matmul_forward(logits, xc, w, {}, rows, C, V, WeightLayout::kOutIn);
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
    matmul_backward(dx.subspan(r0 * C, rows * C), dw, {}, logits, xc, w, rows, C, V,
                    WeightLayout::kOutIn);
  }
}

}  // namespace llmft::kernels
