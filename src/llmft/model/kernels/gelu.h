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

}  // namespace llmft::kernels
