// Plain double-precision versions of every kernel: obviously correct, slow, used by the tests
// (and as documentation of what each fast kernel computes). Same argument order and shapes as
// the fast kernels; backward ones accumulate too. Dropout only where a fused kernel applies it
// (attention weights, the residual branch), with the same counter mask (common.h).
#pragma once

#include <cstdint>
#include <span>

namespace llmft::kernels::ref {

using DSpan = std::span<double>;
using CDSpan = std::span<const double>;

void encoder_forward(DSpan out, std::span<const int32_t> inp, std::span<const int32_t> pos,
                     CDSpan wte, CDSpan wpe, int64_t N, int64_t C);
void encoder_backward(DSpan dwte, DSpan dwpe, CDSpan dout, std::span<const int32_t> inp,
                      std::span<const int32_t> pos, int64_t N, int64_t C);

void layernorm_forward(DSpan y, DSpan mean, DSpan rstd, CDSpan x, CDSpan w, CDSpan b, int64_t N,
                       int64_t C, double eps);
void layernorm_backward(DSpan dx, DSpan dw, DSpan db, CDSpan dy, CDSpan x, CDSpan w, CDSpan mean,
                        CDSpan rstd, int64_t N, int64_t C);

// W: (IC, OC) when out_in is false, (OC, IC) when true. bias may be empty.
void matmul_forward(DSpan out, CDSpan inp, CDSpan w, CDSpan bias, int64_t N, int64_t IC,
                    int64_t OC, bool out_in = false);
void matmul_backward(DSpan dinp, DSpan dw, DSpan dbias, CDSpan dout, CDSpan inp, CDSpan w,
                     int64_t N, int64_t IC, int64_t OC, bool out_in = false);

// att: (attention_att_size(offsets, NH)) same layout as the fast kernel: softmax weights before
// dropout; the output uses drop(att).
void attention_forward(DSpan out, DSpan att, CDSpan qkv, std::span<const int64_t> offsets,
                       int64_t N, int64_t C, int64_t NH, float dropout_p = 0.0f,
                       uint64_t seed = 0);
void attention_backward(DSpan dqkv, CDSpan dout, CDSpan qkv, CDSpan att,
                        std::span<const int64_t> offsets, int64_t N, int64_t C, int64_t NH,
                        float dropout_p = 0.0f, uint64_t seed = 0);

// res_out = res_in + drop(branch + bias); y = LN(res_out). bias may be empty.
void residual_layernorm_forward(DSpan res_out, DSpan y, DSpan mean, DSpan rstd, CDSpan res_in,
                                CDSpan branch, CDSpan bias, CDSpan w, CDSpan b, int64_t N,
                                int64_t C, double eps, float dropout_p = 0.0f, uint64_t seed = 0);
// dx += LN'(dy); dbranch = drop'(dx) (overwritten); dbias += column sums of dbranch.
void layernorm_residual_backward(DSpan dx, DSpan dbranch, DSpan dbias, DSpan dw, DSpan db,
                                 CDSpan dy, CDSpan x, CDSpan w, CDSpan mean, CDSpan rstd,
                                 int64_t N, int64_t C, float dropout_p = 0.0f, uint64_t seed = 0);

void gelu_forward(DSpan y, CDSpan x, int64_t N);
void gelu_backward(DSpan dx, CDSpan dy, CDSpan x, int64_t N);

// x += bias; y = gelu(x).   x, y: (N, OC)
void bias_gelu_forward(DSpan y, DSpan x, CDSpan bias, int64_t N, int64_t OC);
// dx = gelu'(x) dy (overwritten); dbias += column sums of dx.
void gelu_bias_backward(DSpan dx, DSpan dbias, CDSpan dy, CDSpan x, int64_t N, int64_t OC);

void residual_forward(DSpan out, CDSpan a, CDSpan b, int64_t N);
void residual_backward(DSpan da, DSpan db, CDSpan dout, int64_t N);

// losses: (M)   x: (M, C)   w: (V, C)
void head_crossentropy_forward(DSpan losses, CDSpan x, CDSpan w, std::span<const int32_t> targets,
                               int64_t M, int64_t C, int64_t V);
void head_crossentropy_backward(DSpan dx, DSpan dw, CDSpan x, CDSpan w,
                                std::span<const int32_t> targets, double dloss, int64_t M,
                                int64_t C, int64_t V);

}  // namespace llmft::kernels::ref
