// GELU (tanh) forward/backward; see gelu.h.
#include "llmft/model/kernels/gelu.h"

#include <cmath>

#include "llmft/model/kernels/common.h"

namespace llmft::kernels {

namespace {
constexpr float kS = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kA = 0.044715f;
}  // namespace

void gelu_forward(std::span<float> y, std::span<const float> x, int64_t N) {
  check_size(y, N, "gelu y");
  check_size(x, N, "gelu x");
#pragma omp parallel for if (N >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) {
    const float v = x[i];
    y[i] = 0.5f * v * (1.0f + std::tanh(kS * (v + kA * v * v * v)));
  }
}

void gelu_backward(std::span<float> dx, std::span<const float> dy, std::span<const float> x,
                   int64_t N) {
  check_size(dx, N, "gelu dx");
  check_size(dy, N, "gelu dy");
  check_size(x, N, "gelu x");
#pragma omp parallel for if (N >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) {
    const float v = x[i];
    const float u = kS * (v + kA * v * v * v);
    const float th = std::tanh(u);
    const float sech2 = 1.0f - th * th;
    // d/dv [0.5 v (1 + tanh(u))] = 0.5 (1 + tanh u) + 0.5 v sech^2(u) du/dv
    const float grad = 0.5f * (1.0f + th) + 0.5f * v * sech2 * kS * (1.0f + 3.0f * kA * v * v);
    dx[i] += grad * dy[i];
  }
}

}  // namespace llmft::kernels
