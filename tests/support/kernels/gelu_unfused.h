// GELU (tanh) on its own, before bias_gelu_forward/gelu_bias_backward
// (llmft/model/kernels/gelu.h) fused the bias add into it. Test and benchmark baseline only; the
// scalar formula is the library's gelu()/gelu_grad().
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
