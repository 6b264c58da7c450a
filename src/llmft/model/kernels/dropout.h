// Inverted dropout (torch.nn.Dropout in training mode): y = x * keep / (1 - p). The mask is a
// hash of (seed, index) (common.h), so backward recomputes it and nothing is stored.
#pragma once

#include <cstdint>
#include <span>

namespace llmft::kernels {

// y, x: (N); y may alias x. p in [0, 1).
void dropout_forward(std::span<float> y, std::span<const float> x, float p, uint64_t seed,
                     int64_t N);
// Accumulates into dx (N).
void dropout_backward(std::span<float> dx, std::span<const float> dy, float p, uint64_t seed,
                      int64_t N);

}  // namespace llmft::kernels
