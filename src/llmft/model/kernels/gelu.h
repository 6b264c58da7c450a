// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as
// torch.nn.functional.gelu(x, approximate="tanh") and GPT-2's "gelu_new".
#pragma once

#include <cstdint>
#include <span>

#include "llmft/model/kernels/vmath.h"

namespace llmft::kernels {

// The scalar formula, the one definition every GELU loop calls (inline, so `omp simd` loops
// vectorise it). Written with 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + exp(-2u)), which
// avoids the cancellation of 1 + tanh(u) for negative u and vectorises through vexp (glibc's
// tanhf does not). A loop that needs both the value and the derivative computes e once.
inline constexpr float kGeluS = 0.7978845608028654f;  // sqrt(2/pi)
inline constexpr float kGeluA = 0.044715f;

// e = exp(-2u),  u = kGeluS (x + kGeluA x^3)
inline float gelu_exp(float x) {
  const float u = kGeluS * (x + kGeluA * x * x * x);
  return vexp(-2.0f * u);
}
// gelu(x) = 0.5 x (1 + tanh(u)) = x sigmoid(2u) = x / (1 + e)
inline float gelu_from_exp(float x, float e) { return x / (1.0f + e); }
// d/dx [0.5 x (1 + tanh u)] = 0.5 (1 + tanh u) + 0.5 x sech^2(u) du/dx, with
// s = sigmoid(2u) = 0.5 (1 + tanh u),  1 - s = e s,  sech^2(u) = 4 s (1 - s)
inline float gelu_grad_from_exp(float x, float e) {
  const float s = 1.0f / (1.0f + e);
  return s + 2.0f * x * s * (e * s) * kGeluS * (1.0f + 3.0f * kGeluA * x * x);
}
inline float gelu(float x) { return gelu_from_exp(x, gelu_exp(x)); }
inline float gelu_grad(float x) { return gelu_grad_from_exp(x, gelu_exp(x)); }

// The bias add of the matmul before GELU, fused with it (the matmul then runs without a bias):
//   x += bias (in place: x is what the backward reads);  y = gelu(x)
// y, x: (N, OC)   y_bf: (N, OC) y rounded to bf16 (as to_bf16) or empty; y may be empty when
// y_bf is not   bias: (OC)
void bias_gelu_forward(std::span<float> y, std::span<uint16_t> y_bf, std::span<float> x,
                       std::span<const float> bias, int64_t N, int64_t OC);

// Floats of scratch that gelu_bias_backward needs.
int64_t gelu_bias_backward_scratch_size(int64_t N, int64_t OC);

// dx = gelu'(x) * dy, OVERWRITTEN (it replaces the caller's zero fill; dx may alias dy);
// y = gelu(x) when y is not empty: the backward's recompute of the forward output (the same
// floats as bias_gelu_forward's y), sharing the exp with the derivative, in the same pass;
// y_bf: the same rounded to bf16 when not empty;
// dbias += column sums of dx when dbias is not empty (the bias fused by bias_gelu_forward).
// dx, y, y_bf, dy, x: (N, OC)   dbias: (OC)   scratch: (gelu_bias_backward_scratch_size) or
// empty without dbias.
void gelu_bias_backward(std::span<float> dx, std::span<float> y, std::span<uint16_t> y_bf,
                        std::span<float> dbias,
                        std::span<float> scratch, std::span<const float> dy,
                        std::span<const float> x, int64_t N, int64_t OC);

}  // namespace llmft::kernels
