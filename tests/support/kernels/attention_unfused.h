// The unfused causal attention that bias_attention_flash_forward/attention_flash_backward
// replaced: it keeps the (NH, T, T) softmax weights. Test reference and benchmark baseline only;
// its weight layout defines the dropout counters the flash kernels share.
#pragma once

#include <cstdint>
#include <span>

namespace llmft::kernels {

// Floats of `att` needed for these sequences: NH * sum_s T_s^2.
int64_t attention_att_size(std::span<const int64_t> offsets, int64_t NH);

// Packed sequences as the flash kernels (llmft/model/kernels/attention.h): sequence s covers
// rows [offsets[s], offsets[s+1]) and attends only inside itself.
// out: (N, C)   qkv: (N, 3C) as [q | k | v], head h at columns h*HS..(h+1)*HS of each part
// att: (attention_att_size) saved softmax weights (before dropout), per sequence s at
//      NH * sum_{s'<s} T_s'^2, laid out (NH, T_s, T_s); entries above the diagonal are 0.
// offsets: (S+1) with offsets[0] = 0, offsets[S] = N. dropout_p > 0 drops attention weights
// with the counter mask of `seed` (common.h): weight (h, t, t2) of sequence s has counter
// NH * sum_{s'<s} T_s'^2 + h T^2 + t T + t2, its index in att.
void attention_forward(std::span<float> out, std::span<float> att, std::span<const float> qkv,
                       std::span<const int64_t> offsets, int64_t N, int64_t C, int64_t NH,
                       float dropout_p = 0.0f, uint64_t seed = 0);
// Accumulates into dqkv (N, 3C). scratch: (attention_att_size) overwritten.
void attention_backward(std::span<float> dqkv, std::span<float> scratch,
                        std::span<const float> dout, std::span<const float> qkv,
                        std::span<const float> att, std::span<const int64_t> offsets, int64_t N,
                        int64_t C, int64_t NH, float dropout_p = 0.0f, uint64_t seed = 0);

}  // namespace llmft::kernels
