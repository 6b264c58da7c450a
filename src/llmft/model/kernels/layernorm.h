// LayerNorm over the last dimension, as torch.nn.LayerNorm(C, eps) (biased variance).
#pragma once

#include <cstdint>
#include <span>

namespace llmft::kernels {

// y, x: (N, C)   w, b: (C)   mean, rstd: (N) saved for backward.
void layernorm_forward(std::span<float> y, std::span<float> mean, std::span<float> rstd,
                       std::span<const float> x, std::span<const float> w,
                       std::span<const float> b, int64_t N, int64_t C, float eps);
// Accumulates into dx (N, C), dw, db (C); dw/db may be empty (frozen).
void layernorm_backward(std::span<float> dx, std::span<float> dw, std::span<float> db,
                        std::span<const float> dy, std::span<const float> x,
                        std::span<const float> w, std::span<const float> mean,
                        std::span<const float> rstd, int64_t N, int64_t C);

}  // namespace llmft::kernels
