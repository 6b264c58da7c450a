// GPT-2's backward: the forward of gpt2.cpp read bottom-up; each step quotes the forward line it
// differentiates. Accumulates into the gradients (the caller zeroes them).
#include <algorithm>

#include "llmft/core/error.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/kernels/attention.h"
#include "llmft/model/kernels/crossentropy.h"
#include "llmft/model/kernels/dropout.h"
#include "llmft/model/kernels/encoder.h"
#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/gelu.h"
#include "llmft/model/kernels/layernorm.h"
#include "llmft/model/profile.h"

namespace llmft {

using namespace kernels;

namespace {
constexpr int kDropEmb = 0, kDropAtt = 1, kDropAttProj = 2, kDropMlp = 3;
}  // namespace

void Gpt2::backward(float dloss_scale) {
  LLMFT_CHECK(ready_for_backward_, "backward() needs a training forward() just before it");
  ready_for_backward_ = false;
  if (!lora_) lay_out_grads();
  backward_head(dloss_scale, {});
  head_has_logits_ = false;
  backward_trunk();
}

void Gpt2::backward(std::span<const float> dlosses) {
  LLMFT_CHECK(ready_for_backward_, "backward() needs a training forward() just before it");
  LLMFT_CHECK(static_cast<int64_t>(dlosses.size()) == M_, "{} token weights for {} targets",
              dlosses.size(), M_);
  ready_for_backward_ = false;
  if (!lora_) lay_out_grads();
  backward_head(1.0f, dlosses);
  head_has_logits_ = false;
  backward_trunk();
}

void Gpt2::backward_head(float dloss_scale, std::span<const float> row_dloss) {
  const int64_t M = M_, C = cfg_.C, V = cfg_.V, R = head_rows_;
  if (M == 0) return;
  // losses = crossentropy(xg @ head^T, targets);  xg = lnf[rows]
  const auto dxg = work(off_dxg_, M * C);
  kernels::fill(dxg, 0.0f);
  profile::Scope ps("bwd.head_crossentropy");
  HeadBf16 ops;
  if (lowp())
    ops = {bwork(boff_xg_, M * C), head_.plain_bf16(), bwork(boff_dlogits_, std::min(M, R) * V)};
  head_crossentropy_backward(dxg, g_.lm_head, work(off_head_, std::min(M, R) * V),
                             work(off_xg_, M * C), w_.lm_head,
                             {gtargets_.data(), static_cast<size_t>(M)}, work(off_lse_, M),
                             dloss_scale, M, C, V, R, head_has_logits_, ops,
                             head_low_rank(/*with_backward=*/true, /*project=*/false), row_dloss);
  finish_head_adapter();
}

void Gpt2::backward_trunk() {
  const int64_t N = N_, M = M_, C = cfg_.C, L = cfg_.L;
  const float p = dropout_on_ ? cfg_.dropout : 0.0f;
  const auto dres = work(off_dres_, N * C);  // (N, C) d(residual stream)
  const auto dc = work(off_dc_, N * C);      // (N, C) d(lnf / atty / ln1 / ln2)
  // d(lnf): the head rows' gradients, zero elsewhere.
  kernels::fill(dc, 0.0f);
  for (int64_t m = 0; m < M; ++m)
    std::copy_n(work(off_dxg_, M * C).data() + m * C, C, dc.data() + rows_[m] * C);
  kernels::fill(dres, 0.0f);
  {
    // lnf = LN(res3_{L-1}), res3_{L-1} = res2 + drop(fcproj branch + mlp.c_proj.b)
    profile::Scope ps("bwd.layernorm_residual");
    const auto stats = acts_.lnf_stats;
    layernorm_residual_backward(
        dres, dropout_on_ ? work(off_dbranch_, N * C) : std::span<float>{},
        g_.h[static_cast<size_t>(L - 1)].mlp_proj.b, g_.ln_f.w, g_.ln_f.b,
        scratch(layernorm_residual_backward_scratch_size(N, C)), dc,
        acts_.layer(L - 1).res3.first(N * C), w_.ln_f.w, stats.first(N),
        stats.subspan(static_cast<size_t>(N), static_cast<size_t>(N)), N, C, p,
        site_seed(L - 1, kDropMlp));
  }
  fused_sumsq_ = 0.0;
  for (int64_t l = L - 1; l >= 0; --l) {
    backward_block(l, p);
    if (fused_update_) hand_over_block(l);  // block l's gradient is complete
  }
  if (lora_) return;  // frozen embeddings
  {
    // enc = drop(wte[inp] + wpe[pos])
    std::span<const float> denc = dres;
    profile::Scope ps("bwd.encoder");
    if (dropout_on_) {
      const auto d = work(off_dbranch_, N * C);
      kernels::fill(d, 0.0f);
      dropout_backward(d, dres, p, site_seed(-1, kDropEmb), N * C);
      denc = d;
    }
    encoder_backward(g_.wte, g_.wpe, denc, {inputs_.data(), static_cast<size_t>(N)},
                     {pos_.data(), static_cast<size_t>(N)}, N, C);
  }
  if (fused_update_) hand_over_rest();
}

// Block l's backward; dres holds d(res3_l) on entry and d(res3_{l-1}) (or d(enc)) on exit.
void Gpt2::backward_block(int64_t l, float p) {
  const int64_t N = N_, C = cfg_.C, NH = cfg_.NH;
  const bool bf = lowp();
  const Precision prec = precision_;
  const std::span<const int64_t> off(offsets_);
  Activations::Layer a = acts_.layer(l);
  const BlockTensors<float>& w = w_.h[static_cast<size_t>(l)];
  const BlockTensors<float>& g = g_.h[static_cast<size_t>(l)];
  const BlockLinears& k = lin_[static_cast<size_t>(l)];
  const auto dres = work(off_dres_, N * C);
  const auto dc = work(off_dc_, N * C);
  const auto dqkv = work(off_dqkv_, N * 3 * C);
  const auto dfc = work(off_dfc_, N * 4 * C);  // d(fc_act), then d(fch) in place
  const auto fc_act = bf ? std::span<float>{} : acts_.fc_act.first(N * 4 * C);  // recomputed
  const auto fc_act_bf = bf ? acts_.fc_act_bf.first(N * 4 * C) : std::span<bf16>{};
  // d(branch): its own buffer with dropout (the kernel writes drop'(dres) there), else dres.
  const auto dbranch = dropout_on_ ? work(off_dbranch_, N * C) : std::span<float>{};
  const std::span<const float> dbr = dropout_on_ ? std::span<const float>(dbranch) : dres;
  auto zero = [](std::span<float> x) {
    profile::Scope ps("bwd.fill");
    kernels::fill(x, 0.0f);
  };
  auto rounded = [&](std::span<const float> x) {
    return round(x, bf ? bwork(boff_dout_, static_cast<int64_t>(x.size())) : std::span<bf16>{});
  };
  // y = x @ W for a product whose input gradient starts here: dc = d(x), dW += x^T d(y).
  auto linear_backward = [&](const char* scope, const Linear& lin, std::span<const float> dy,
                             Act x) {
    zero(dc);
    profile::Scope ps(scope);
    const Act d = rounded(dy);
    lin.backward_input(dc, d, N, prec);
    lin.backward_weights(d, x, N, prec);
  };

  // branch = fc_act @ mlp.c_proj.W: first d(fc_act), then (once gelu is recomputed) dW
  const Act dbr_act = rounded(dbr);
  zero(dfc);
  {
    profile::Scope ps("bwd.matmul_fcproj");
    k.mlp_proj.backward_input(dfc, dbr_act, N, prec);
  }
  // fc_act = gelu(fch), fch = ln2 @ c_fc.W + c_fc.b: d(fch) in place, fc_act recomputed
  {
    profile::Scope ps("bwd.gelu");
    gelu_bias_backward(dfc, fc_act, fc_act_bf, g.c_fc.b,
                       scratch(gelu_bias_backward_scratch_size(N, 4 * C)), dfc,
                       a.fch.first(N * 4 * C), N, 4 * C);
  }
  {
    profile::Scope ps("bwd.matmul_fcproj");
    k.mlp_proj.backward_weights(dbr_act, {fc_act, fc_act_bf}, N, prec);
  }
  linear_backward("bwd.matmul_fc", k.c_fc, dfc, {a.ln2, a.ln2_bf});
  // ln2 = LN(res2), res2 = res + drop(attproj branch + attn.c_proj.b); dres holds d(res2)
  // through the residual path and becomes d(res)
  {
    profile::Scope ps("bwd.layernorm_residual");
    layernorm_residual_backward(dres, dbranch, g.attn_proj.b, g.ln_2.w, g.ln_2.b,
                                scratch(layernorm_residual_backward_scratch_size(N, C)), dc,
                                a.res2.first(N * C), w.ln_2.w, a.ln2_mean.first(N),
                                a.ln2_rstd.first(N), N, C, p, site_seed(l, kDropAttProj));
  }
  // branch = atty @ attn.c_proj.W
  linear_backward("bwd.matmul_attproj", k.attn_proj, dbr, {a.atty, a.atty_bf});
  // atty = attention(qkv + c_attn.b)
  zero(dqkv);
  {
    profile::Scope ps("bwd.attention");
    attention_flash_backward(dqkv, g.c_attn.b,
                             scratch(attention_flash_backward_scratch_size(off, C)), dc,
                             a.qkv.first(N * 3 * C), a.atty.first(N * C), a.att_lse.first(N * NH),
                             off, N, C, NH, p, site_seed(l, kDropAtt), forks_);
  }
  // qkv = ln1 @ c_attn.W
  linear_backward("bwd.matmul_qkv", k.c_attn, dqkv, {a.ln1, a.ln1_bf});
  // ln1 = LN(res); dres becomes d(res)
  profile::Scope ps("bwd.layernorm_residual");
  if (l > 0) {
    // res = res3_{l-1} = res2_{l-1} + drop(fcproj branch_{l-1} + mlp.c_proj.b_{l-1})
    layernorm_residual_backward(
        dres, dbranch, g_.h[static_cast<size_t>(l - 1)].mlp_proj.b, g.ln_1.w, g.ln_1.b,
        scratch(layernorm_residual_backward_scratch_size(N, C)), dc,
        acts_.layer(l - 1).res3.first(N * C), w.ln_1.w, a.ln1_mean.first(N), a.ln1_rstd.first(N),
        N, C, p, site_seed(l - 1, kDropMlp));
  } else {
    layernorm_backward(dres, g.ln_1.w, g.ln_1.b, dc, acts_.enc.first(N * C), w.ln_1.w,
                       a.ln1_mean.first(N), a.ln1_rstd.first(N), N, C);
  }
}

}  // namespace llmft
