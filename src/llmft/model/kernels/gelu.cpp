// GELU (tanh) forward/backward; see gelu.h. Written with the identity
// 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + exp(-2u)), which avoids the cancellation of
// 1 + tanh(u) for negative u and vectorises through vexp (glibc's tanhf does not).
#include "llmft/model/kernels/gelu.h"

#include <cmath>

#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/vmath.h"

namespace llmft::kernels {

namespace {
constexpr float kS = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kA = 0.044715f;
}  // namespace

void gelu_forward(std::span<float> y, std::span<const float> x, int64_t N) {
  check_size(y, N, "gelu y");
  check_size(x, N, "gelu x");
  float* yp = y.data();
  const float* xp = x.data();
  // y = 0.5 x (1 + tanh(u)) = x * sigmoid(2u),  u = kS (x + kA x^3)
#pragma omp parallel for simd schedule(static) if (N >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) {
    const float v = xp[i];
    const float u = kS * (v + kA * v * v * v);
    yp[i] = v / (1.0f + vexp(-2.0f * u));
  }
}

void gelu_backward(std::span<float> dx, std::span<const float> dy, std::span<const float> x,
                   int64_t N) {
  check_size(dx, N, "gelu dx");
  check_size(dy, N, "gelu dy");
  check_size(x, N, "gelu x");
  float* dxp = dx.data();
  const float* dyp = dy.data();
  const float* xp = x.data();
#pragma omp parallel for simd schedule(static) if (N >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) {
    const float v = xp[i];
    const float u = kS * (v + kA * v * v * v);
    // s = sigmoid(2u) = 0.5 (1 + tanh u);  1 - s = e s;  sech^2(u) = 4 s (1 - s)
    const float e = vexp(-2.0f * u);
    const float s = 1.0f / (1.0f + e);
    // d/dv [0.5 v (1 + tanh(u))] = 0.5 (1 + tanh u) + 0.5 v sech^2(u) du/dv
    const float grad = s + 2.0f * v * s * (e * s) * kS * (1.0f + 3.0f * kA * v * v);
    dxp[i] += grad * dyp[i];
  }
}

}  // namespace llmft::kernels
