// Token + position embedding (GPT-2's wte/wpe lookup), for packed sequences: each token carries
// its own position. Matches PyTorch's tok_emb(ids) + pos_emb(pos).
#pragma once

#include <cstdint>
#include <span>

namespace llmft::kernels {

// out: (N, C)   inp, pos: (N)   wte: (V, C)   wpe: (maxT, C). Ids and positions must be in range
// (the model checks them).
void encoder_forward(std::span<float> out, std::span<const int32_t> inp,
                     std::span<const int32_t> pos, std::span<const float> wte,
                     std::span<const float> wpe, int64_t N, int64_t C);
// Accumulates into dwte (V, C) and dwpe (maxT, C); either may be empty (frozen).
void encoder_backward(std::span<float> dwte, std::span<float> dwpe, std::span<const float> dout,
                      std::span<const int32_t> inp, std::span<const int32_t> pos, int64_t N,
                      int64_t C);

}  // namespace llmft::kernels
