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

// Residual add fused with the LayerNorm that reads it (one pass over each row):
//   res_out = res_in + drop(branch + bias);  y = LN(res_out)
// res_out, res_in, branch, y: (N, C); res_out may alias res_in.   y_bf: (N, C) y rounded to bf16
// (as to_bf16) for a bf16 matmul, or empty; y may be empty when y_bf is not.
// bias: (C) or empty (the bias of the matmul that made `branch`, which can then run without one)
// w, b: (C)   mean, rstd: (N) saved for backward. dropout_p > 0 drops branch + bias with the
// counter mask of `seed` over its N * C elements, exactly as dropout_forward.
void residual_layernorm_forward(std::span<float> res_out, std::span<float> y,
                                std::span<uint16_t> y_bf, std::span<float> mean,
                                std::span<float> rstd,
                                std::span<const float> res_in, std::span<const float> branch,
                                std::span<const float> bias, std::span<const float> w,
                                std::span<const float> b, int64_t N, int64_t C, float eps,
                                float dropout_p = 0.0f, uint64_t seed = 0);

// Floats of scratch that layernorm_residual_backward needs.
int64_t layernorm_residual_backward_scratch_size(int64_t N, int64_t C);

// Backward of y = LN(x) for x a residual stream made by res_out = res_in + drop(branch + bias),
// in one pass over each row:
//   dx += LN'(dy)                     dx: (N, C) holds d(x) through the residual path already;
//                                     after the call it is the whole d(x), i.e. d(res_in)
//   dbranch = drop'(dx)               (N, C) OVERWRITTEN: d(branch), for the matmul that made it;
//                                     may be empty when dropout_p = 0 (then d(branch) is dx)
//   dbias += column sums of d(branch) (C) or empty
//   dw, db += as layernorm_backward   (C) or empty (frozen)
// scratch: (layernorm_residual_backward_scratch_size(N, C)) overwritten.
void layernorm_residual_backward(std::span<float> dx, std::span<float> dbranch,
                                 std::span<float> dbias, std::span<float> dw,
                                 std::span<float> db, std::span<float> scratch,
                                 std::span<const float> dy, std::span<const float> x,
                                 std::span<const float> w, std::span<const float> mean,
                                 std::span<const float> rstd, int64_t N, int64_t C,
                                 float dropout_p = 0.0f, uint64_t seed = 0);

}  // namespace llmft::kernels
