// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as
// torch.nn.functional.gelu(x, approximate="tanh") and GPT-2's "gelu_new".
#pragma once

#include <cstdint>
#include <span>

namespace llmft::kernels {

// y, x: (N)
void gelu_forward(std::span<float> y, std::span<const float> x, int64_t N);
// Accumulates into dx (N).
void gelu_backward(std::span<float> dx, std::span<const float> dy, std::span<const float> x,
                   int64_t N);

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
// floats as gelu_forward), sharing the exp with the derivative, in the same pass;
// y_bf: the same rounded to bf16 when not empty;
// dbias += column sums of dx when dbias is not empty (the bias fused by bias_gelu_forward).
// dx, y, y_bf, dy, x: (N, OC)   dbias: (OC)   scratch: (gelu_bias_backward_scratch_size) or
// empty without dbias.
void gelu_bias_backward(std::span<float> dx, std::span<float> y, std::span<uint16_t> y_bf,
                        std::span<float> dbias,
                        std::span<float> scratch, std::span<const float> dy,
                        std::span<const float> x, int64_t N, int64_t OC);

}  // namespace llmft::kernels
