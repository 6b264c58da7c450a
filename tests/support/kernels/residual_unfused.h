// The residual connection out = a + b as a kernel of its own, before residual_layernorm_forward
// (llmft/model/kernels/layernorm.h) fused it into the next LayerNorm. Test and benchmark
// baseline only.
#pragma once

#include <cstdint>
#include <span>

namespace llmft::kernels {

// out, a, b: (N)
void residual_forward(std::span<float> out, std::span<const float> a, std::span<const float> b,
                      int64_t N);
// Accumulates dout into da and db (N).
void residual_backward(std::span<float> da, std::span<float> db, std::span<const float> dout,
                       int64_t N);

}  // namespace llmft::kernels
