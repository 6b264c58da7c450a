// Causal multi-head self-attention over packed sequences, FlashAttention-2 style
// (attention_flash.cpp): sequence s covers rows [offsets[s], offsets[s+1]) and attends only
// inside itself; softmax(q k^T / sqrt(HS) + causal mask) v as GPT-2, dropout on the weights.
// A sequence may fork (SeqFork): two continuations of one shared prefix in one pass.
#pragma once

#include <cstdint>
#include <span>

namespace llmft::kernels {

// Prefix sharing: rows [0, prefix) of a sequence (relative to its first row) are a shared prefix,
// rows [prefix, second) its first continuation and rows [second, T) its second, which sees the
// prefix and itself but not the first continuation: row t >= second attends to keys
// [0, prefix) and [second, t]. The second continuation stands at positions prefix, prefix + 1, ...
// as if it followed the prefix directly, so each continuation gets exactly what a sequence of
// its own (prefix + continuation) would. second == T: no fork. 1 <= prefix <= second <= T.
// DPO packs a pair's chosen and rejected answers after their one prompt so.
struct SeqFork {
  int64_t prefix = 0, second = 0;
};

// Keys in blocks of 64 with an online softmax: the (NH, T, T) weights are never stored; only
// the output and each row's logsumexp are kept, and the backward recomputes the weights block
// by block.
// out: (N, C)   lse: (N, NH) logsumexp of row t's scaled scores q.k/sqrt(HS) for head h at
// t * NH + h   qkv: (N, 3C) as [q | k | v], head h at columns h*HS..(h+1)*HS of each part
// offsets: (S+1) with offsets[0] = 0, offsets[S] = N. dropout_p > 0 drops attention weights
// (after the softmax) with the counter mask of `seed` (common.h); the counter of weight
// (h, t, t2) of sequence s is NH * sum_{s'<s} T_s'^2 + h T^2 + t T + t2 (the layout of the
// unfused kernel's weights, tests/support/kernels/attention_unfused.h).
// HS = C / NH must be at most 128. forks: (S), or empty when no sequence forks.
void attention_flash_forward(std::span<float> out, std::span<float> lse,
                             std::span<const float> qkv, std::span<const int64_t> offsets,
                             int64_t N, int64_t C, int64_t NH, float dropout_p = 0.0f,
                             uint64_t seed = 0, std::span<const SeqFork> forks = {});
// The same with the c_attn bias fused: qkv += bias first (in place; each task adds it to its own
// rows and head columns), so the matmul before runs without a bias (no fill pass) and qkv
// keeps the biased values the backward reads. qkv: (N, 3C) in/out   bias: (3C)
// out_bf: (N, C) out rounded to bf16 (as to_bf16) for a bf16 projection matmul, or empty.
void bias_attention_flash_forward(std::span<float> out, std::span<uint16_t> out_bf,
                                  std::span<float> lse, std::span<float> qkv,
                                  std::span<const float> bias,
                                  std::span<const int64_t> offsets, int64_t N, int64_t C,
                                  int64_t NH, float dropout_p = 0.0f, uint64_t seed = 0,
                                  std::span<const SeqFork> forks = {});

// Floats of scratch attention_flash_backward needs for dbias: (S, 3C) for S sequences.
int64_t attention_flash_backward_scratch_size(std::span<const int64_t> offsets, int64_t C);

// Accumulates into dqkv (N, 3C). out, lse: what attention_flash_forward wrote for this qkv.
// dbias: (3C) or empty; when given, dbias += column sums of this call's contributions to dqkv
// (the c_attn bias gradient when dqkv started at zero), and scratch (its size above) is
// overwritten; the c_attn matmul backward then needs no bias sum.
void attention_flash_backward(std::span<float> dqkv, std::span<float> dbias,
                              std::span<float> scratch, std::span<const float> dout,
                              std::span<const float> qkv, std::span<const float> out,
                              std::span<const float> lse, std::span<const int64_t> offsets,
                              int64_t N, int64_t C, int64_t NH, float dropout_p = 0.0f,
                              uint64_t seed = 0, std::span<const SeqFork> forks = {});

}  // namespace llmft::kernels
