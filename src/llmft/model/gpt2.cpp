// GPT-2 forward/backward over packed sequences; see gpt2.h. The backward is the forward read
// bottom-up; each step quotes the forward line it differentiates.
#include "llmft/model/gpt2.h"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "llmft/core/error.h"
#include "llmft/model/kernels/attention.h"
#include "llmft/model/kernels/bf16.h"
#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/crossentropy.h"
#include "llmft/model/kernels/dropout.h"
#include "llmft/model/kernels/encoder.h"
#include "llmft/model/kernels/gelu.h"
#include "llmft/model/kernels/layernorm.h"
#include "llmft/model/kernels/matmul.h"
#include "llmft/model/kernels/residual.h"
#include "llmft/model/profile.h"

namespace llmft {

using namespace kernels;

namespace {
// Per-layer activation offsets inside the layer's block, in units of the capacity Nc tokens.
// ln1 (N,C) | ln1_mean (N) | ln1_rstd (N) | qkv (N,3C) | atty (N,C) | att (A) | res2 (N,C) |
// ln2 (N,C) | ln2_mean (N) | ln2_rstd (N) | fch (N,4C) | res3 (N,C)
constexpr int kDropEmb = 0, kDropAtt = 1, kDropAttProj = 2, kDropMlp = 3;
}  // namespace

// In bf16 precision ln1 and ln2 are fp32 scratch shared by all layers (backward reads their
// bf16 copies ln1_bf, ln2_bf); atty_bf is atty rounded for the projection's backward.
struct Gpt2::LayerActs {
  std::span<float> ln1, ln1_mean, ln1_rstd, qkv, atty, att, res2, ln2, ln2_mean, ln2_rstd, fch,
      res3;
  std::span<uint16_t> ln1_bf, atty_bf, ln2_bf;
};

Gpt2::LayerActs Gpt2::layer(int64_t l) {
  const int64_t Nc = cap_tokens_, C = cfg_.C;
  int64_t o = off_layers_ + l * layer_stride_;
  auto take = [&](int64_t n) {
    auto s = acts(o, n);
    o += n;
    return s;
  };
  const bool lowp = bf16();
  LayerActs a;
  a.ln1 = lowp ? acts(off_ln_scratch_, Nc * C) : take(Nc * C);
  a.ln1_mean = take(Nc);
  a.ln1_rstd = take(Nc);
  a.qkv = take(Nc * 3 * C);
  a.atty = take(Nc * C);
  a.att = take(cap_att_);
  a.res2 = take(Nc * C);
  a.ln2 = lowp ? acts(off_ln_scratch_, Nc * C) : take(Nc * C);
  a.ln2_mean = take(Nc);
  a.ln2_rstd = take(Nc);
  a.fch = take(Nc * 4 * C);
  a.res3 = take(Nc * C);
  if (lowp) {
    int64_t b = boff_layers_ + l * blayer_stride_;
    a.ln1_bf = bacts(b, Nc * C);
    a.atty_bf = bacts(b + Nc * C, Nc * C);
    a.ln2_bf = bacts(b + 2 * Nc * C, Nc * C);
  }
  return a;
}

Gpt2::Gpt2(const Gpt2Config& cfg) : cfg_(cfg), table_(cfg) {
  params_.assign(static_cast<size_t>(table_.total()), 0.0f);
  grads_.assign(static_cast<size_t>(table_.total()), 0.0f);
}

std::span<float> Gpt2::param(const std::string& name) {
  const ParamSpec* s = table_.find(name);
  LLMFT_CHECK(s != nullptr, "no parameter named '{}'", name);
  weights_stale_ = true;
  return table_.view(std::span<float>(params_), *s);
}
std::span<const float> Gpt2::param(const std::string& name) const {
  const ParamSpec* s = table_.find(name);
  LLMFT_CHECK(s != nullptr, "no parameter named '{}'", name);
  return table_.view(std::span<const float>(params_), *s);
}
std::span<float> Gpt2::grad(const std::string& name) {
  const ParamSpec* s = table_.find(name);
  LLMFT_CHECK(s != nullptr, "no parameter named '{}'", name);
  return table_.view(std::span<float>(grads_), *s);
}
std::span<const float> Gpt2::layer_param(int64_t l, std::string_view suffix) const {
  return table_.view(std::span<const float>(params_), table_.layer(l, suffix));
}
std::span<float> Gpt2::layer_grad(int64_t l, std::string_view suffix) {
  return table_.view(std::span<float>(grads_), table_.layer(l, suffix));
}
std::span<const float> Gpt2::head_weight() const {
  return param(cfg_.tied ? "wte.weight" : "lm_head.weight");
}

void Gpt2::init_random(uint64_t seed) {
  const auto& specs = table_.specs();
  const double proj_std = 0.02 / std::sqrt(2.0 * static_cast<double>(cfg_.L));
  std::fill(params_.begin(), params_.end(), 0.0f);
  const int64_t kChunk = 1 << 16;
  for (size_t t = 0; t < specs.size(); ++t) {
    const ParamSpec& s = specs[t];
    auto view = table_.view(std::span<float>(params_), s);
    const bool is_ln = s.name.find("ln_") != std::string::npos;
    const bool is_bias = s.name.ends_with(".bias");
    if (is_bias) continue;  // zero
    if (is_ln) {
      std::fill(view.begin(), view.end(), 1.0f);
      continue;
    }
    const bool is_proj = s.name.ends_with("c_proj.weight");
    const float stddev = static_cast<float>(is_proj ? proj_std : 0.02);
    const int64_t nchunks = (s.numel + kChunk - 1) / kChunk;
    // Each chunk has its own generator so the result does not depend on the thread count.
#pragma omp parallel for
    for (int64_t c = 0; c < nchunks; ++c) {
      std::mt19937_64 rng(mix64(seed ^ mix64((t << 32) + static_cast<uint64_t>(c))));
      std::normal_distribution<float> dist(0.0f, stddev);
      const int64_t end = std::min(s.numel, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; ++i) view[static_cast<size_t>(i)] = dist(rng);
    }
  }
}

void Gpt2::set_head_chunk_rows(int64_t rows) {
  LLMFT_CHECK(rows >= 1, "head chunk rows {}", rows);
  head_rows_ = rows;
  cap_tokens_ = 0;  // the next reserve/forward re-lays the arena
}

void Gpt2::reserve(int64_t max_tokens, int64_t max_seq_len) {
  LLMFT_CHECK(max_tokens >= 1, "reserve({})", max_tokens);
  if (max_seq_len <= 0) max_seq_len = std::min(cfg_.maxT, max_tokens);
  max_seq_len = std::min({max_seq_len, max_tokens, cfg_.maxT});
  if (max_tokens <= cap_tokens_ && max_seq_len <= cap_seq_) return;
  max_tokens = std::max(max_tokens, cap_tokens_);
  max_seq_len = std::max(max_seq_len, cap_seq_);
  const int64_t Nc = max_tokens, C = cfg_.C, V = cfg_.V;
  cap_tokens_ = Nc;
  cap_seq_ = max_seq_len;
  // sum_s T_s^2 <= (sum_s T_s) * max_s T_s
  cap_att_ = cfg_.NH * Nc * max_seq_len;
  // bf16 keeps ln1 and ln2 as bf16 only (in bacts_).
  layer_stride_ = Nc * (bf16() ? 10 : 12) * C + 4 * Nc + cap_att_;
  int64_t o = 0;
  auto place = [&](int64_t n) {
    const int64_t at = o;
    o += (n + 15) / 16 * 16;
    return at;
  };
  off_enc_ = place(Nc * C);
  off_layers_ = place(cfg_.L * layer_stride_);
  off_lnf_ = place(Nc * C);
  off_lnf_stats_ = place(2 * Nc);
  off_xg_ = place(Nc * C);
  off_losses_ = place(Nc);
  off_lse_ = place(Nc);
  off_head_ = place(std::min(Nc, head_rows_) * V);
  off_fc_scratch_ = place(Nc * 4 * C);
  off_c_scratch_ = place(Nc * C);
  off_ln_scratch_ = place(bf16() ? Nc * C : 0);
  off_dres_ = place(Nc * C);
  off_dc_ = place(Nc * C);
  off_dbranch_ = place(Nc * C);
  off_dqkv_ = place(Nc * 3 * C);
  off_dfc_ = place(Nc * 4 * C);
  off_datt_ = place(cap_att_);
  off_dxg_ = place(Nc * C);
  acts_.assign(static_cast<size_t>(o), 0.0f);
  if (bf16()) {
    blayer_stride_ = 3 * Nc * C;
    boff_layers_ = 0;
    boff_in_ = cfg_.L * blayer_stride_;
    boff_dout_ = boff_in_ + Nc * 4 * C;
    boff_xg_ = boff_dout_ + Nc * 4 * C;
    bacts_.assign(static_cast<size_t>(boff_xg_ + Nc * C), 0);
  } else {
    bacts_ = {};
  }
  pos_.assign(static_cast<size_t>(Nc), 0);
  inputs_.assign(static_cast<size_t>(Nc), 0);
  gtargets_.assign(static_cast<size_t>(Nc), 0);
  rows_.assign(static_cast<size_t>(Nc), 0);
  offsets_.reserve(static_cast<size_t>(Nc + 1));
  ready_for_backward_ = false;
  head_has_logits_ = false;
}

void Gpt2::check_batch(std::span<const int32_t> inputs, std::span<const int32_t>* targets,
                       std::span<const int64_t> off) const {
  const int64_t N = static_cast<int64_t>(inputs.size());
  if (N == 0) throw Error("empty batch: no input tokens", "pass at least one token");
  if (targets && static_cast<int64_t>(targets->size()) != N)
    throw Error(fmt::format("batch has {} inputs but {} targets", N, targets->size()),
                "inputs and targets must have the same length");
  if (off.size() < 2 || off.front() != 0 || off.back() != N)
    throw Error(fmt::format("sequence offsets must run from 0 to {} (got {} entries, last {})", N,
                            off.size(), off.empty() ? -1 : off.back()),
                "pass S+1 offsets: 0, end of sequence 1, ..., N");
  for (size_t s = 1; s < off.size(); ++s) {
    const int64_t T = off[s] - off[s - 1];
    if (T <= 0 || T > cfg_.maxT)
      throw Error(fmt::format("sequence {} has length {}", s - 1, T),
                  fmt::format("each sequence needs 1 to {} tokens (the context length); "
                              "truncate longer ones",
                              cfg_.maxT));
  }
  for (int64_t i = 0; i < N; ++i) {
    if (inputs[i] < 0 || inputs[i] >= cfg_.V)
      throw Error(fmt::format("input token {} at position {} is outside the vocabulary [0, {})",
                              inputs[i], i, cfg_.V),
                  "the tokenizer and the model must share a vocabulary");
    if (targets) {
      const int32_t t = (*targets)[i];
      if (t != kIgnoreIndex && (t < 0 || t >= cfg_.V))
        throw Error(fmt::format("target {} at position {} is outside [0, {}) and not -100", t, i,
                                cfg_.V),
                    "use -100 for positions that carry no loss");
    }
  }
}

uint64_t Gpt2::site_seed(int64_t l, int site) const {
  return mix64(dropout_seed_ ^ mix64(forward_count_ * 0x10001ull +
                                     static_cast<uint64_t>(l + 1) * 8 + static_cast<uint64_t>(site)));
}

void Gpt2::forward_trunk(std::span<const int32_t> inputs, std::span<const int64_t> off,
                         bool dropout) {
  const int64_t N = static_cast<int64_t>(inputs.size());
  int64_t max_T = 0;
  for (size_t s = 1; s < off.size(); ++s) max_T = std::max(max_T, off[s] - off[s - 1]);
  reserve(N, max_T);
  refresh_bf16();
  const int64_t C = cfg_.C, NH = cfg_.NH;
  const float p = dropout ? cfg_.dropout : 0.0f;
  dropout_on_ = p > 0.0f;
  N_ = N;
  offsets_.assign(off.begin(), off.end());
  std::copy(inputs.begin(), inputs.end(), inputs_.begin());
  for (size_t s = 0; s + 1 < off.size(); ++s)
    for (int64_t i = off[s]; i < off[s + 1]; ++i) pos_[i] = static_cast<int32_t>(i - off[s]);

  const std::span<const int32_t> inp(inputs_.data(), N), pos(pos_.data(), N);
  auto enc = acts(off_enc_, N * C);  // (N, C)
  {
    profile::Scope ps("fwd.encoder");
    encoder_forward(enc, inp, pos, cparam("wte.weight"), cparam("wpe.weight"), N, C);
  }
  {
    profile::Scope ps("fwd.dropout");
    if (dropout_on_) dropout_forward(enc, enc, p, site_seed(-1, kDropEmb), N * C);
  }

  auto branch = acts(off_c_scratch_, N * C);       // (N, C) attention / MLP branch output
  auto fc_act = acts(off_fc_scratch_, N * 4 * C);  // (N, 4C) gelu(fch)
  // bf16: gelu(fch) rounded for the projection (backward recomputes it)
  const auto fc_act_bf = bf16() ? bacts(boff_in_, N * 4 * C) : std::span<uint16_t>{};
  std::span<const float> res = enc;                // (N, C) the residual stream
  for (int64_t l = 0; l < cfg_.L; ++l) {
    LayerActs a = layer(l);
    // ln1 = LN(res)
    {
      profile::Scope ps("fwd.layernorm");
      layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, res, layer_param(l, "ln_1.weight"),
                        layer_param(l, "ln_1.bias"), N, C, cfg_.ln_eps);
    }
    // qkv = ln1 @ c_attn.W + c_attn.b            (N, 3C)
    {
      profile::Scope ps("fwd.matmul_qkv");
      mm_forward(a.qkv, a.ln1, a.ln1_bf, l, 0, "attn.c_attn.weight", "attn.c_attn.bias", N, C,
                 3 * C);
    }
    // atty = attention(qkv)                       (N, C)
    {
      profile::Scope ps("fwd.attention");
      attention_forward(a.atty, a.att, a.qkv, off, N, C, NH, p, site_seed(l, kDropAtt));
    }
    // branch = drop(atty @ c_proj.W + c_proj.b)   (N, C)
    {
      profile::Scope ps("fwd.matmul_attproj");
      mm_forward(branch, a.atty, a.atty_bf, l, 1, "attn.c_proj.weight", "attn.c_proj.bias", N, C,
                 C);
    }
    {
      profile::Scope ps("fwd.dropout");
      if (dropout_on_) dropout_forward(branch, branch, p, site_seed(l, kDropAttProj), N * C);
    }
    // res2 = res + branch
    {
      profile::Scope ps("fwd.residual");
      residual_forward(a.res2, res, branch, N * C);
    }
    // ln2 = LN(res2)
    {
      profile::Scope ps("fwd.layernorm");
      layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.res2, layer_param(l, "ln_2.weight"),
                        layer_param(l, "ln_2.bias"), N, C, cfg_.ln_eps);
    }
    // fch = ln2 @ c_fc.W + c_fc.b                 (N, 4C)
    {
      profile::Scope ps("fwd.matmul_fc");
      mm_forward(a.fch, a.ln2, a.ln2_bf, l, 2, "mlp.c_fc.weight", "mlp.c_fc.bias", N, C, 4 * C);
    }
    // fc_act = gelu(fch)                          (N, 4C), recomputed in backward
    {
      profile::Scope ps("fwd.gelu");
      gelu_forward(fc_act, a.fch, N * 4 * C);
    }
    // branch = drop(fc_act @ c_proj.W + c_proj.b) (N, C)
    {
      profile::Scope ps("fwd.matmul_fcproj");
      mm_forward(branch, fc_act, fc_act_bf, l, 3, "mlp.c_proj.weight", "mlp.c_proj.bias", N,
                 4 * C, C);
    }
    {
      profile::Scope ps("fwd.dropout");
      if (dropout_on_) dropout_forward(branch, branch, p, site_seed(l, kDropMlp), N * C);
    }
    // res3 = res2 + branch
    {
      profile::Scope ps("fwd.residual");
      residual_forward(a.res3, a.res2, branch, N * C);
    }
    res = a.res3;
  }
  // lnf = LN(res)
  auto stats = acts(off_lnf_stats_, 2 * N);
  {
    profile::Scope ps("fwd.layernorm");
    layernorm_forward(acts(off_lnf_, N * C), stats.first(N), stats.subspan(N, N), res,
                      cparam("ln_f.weight"), cparam("ln_f.bias"), N, C, cfg_.ln_eps);
  }
}

LossResult Gpt2::forward(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                         std::span<const int64_t> seq_offsets, bool training) {
  check_batch(inputs, &targets, seq_offsets);
  ready_for_backward_ = false;
  if (training) ++forward_count_;
  forward_trunk(inputs, seq_offsets, training);
  const int64_t N = N_, C = cfg_.C, V = cfg_.V;
  // Gather the rows whose target counts: xg = lnf[rows]   (M, C)
  int64_t M = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (targets[i] == kIgnoreIndex) continue;
    rows_[M] = i;
    gtargets_[M] = targets[i];
    ++M;
  }
  M_ = M;
  LossResult r;
  r.n_targets = M;
  if (M > 0) {
    auto lnf = acts(off_lnf_, N * C);
    auto xg = acts(off_xg_, M * C);
#pragma omp parallel for if (M * C >= kParallelMin)
    for (int64_t m = 0; m < M; ++m)
      std::copy_n(lnf.data() + rows_[m] * C, C, xg.data() + m * C);
    auto losses = acts(off_losses_, M);
    {
      profile::Scope ps("fwd.head_crossentropy");
      head_crossentropy_forward(losses, acts(off_lse_, M), acts(off_head_, std::min(M, head_rows_) * V),
                                xg, head_weight(), std::span<const int32_t>(gtargets_.data(), M), M,
                                C, V, head_rows_);
    }
    double sum = 0.0;
    for (int64_t m = 0; m < M; ++m) sum += losses[m];
    r.loss_sum = sum;
  }
  head_has_logits_ = true;
  ready_for_backward_ = training;
  return r;
}

void Gpt2::backward(float dloss_scale) {
  LLMFT_CHECK(ready_for_backward_, "backward() needs a training forward() just before it");
  ready_for_backward_ = false;
  const int64_t N = N_, M = M_, C = cfg_.C, V = cfg_.V, NH = cfg_.NH;
  const float p = dropout_on_ ? cfg_.dropout : 0.0f;
  const std::span<const int64_t> off(offsets_);
  const std::span<const int32_t> inp(inputs_.data(), N), pos(pos_.data(), N);

  auto dres = acts(off_dres_, N * C);       // (N, C) d(residual stream)
  auto dc = acts(off_dc_, N * C);           // (N, C) d(lnf / atty / ln1 / ln2)
  auto dbranch = acts(off_dbranch_, N * C); // (N, C) d(branch before dropout)
  auto dqkv = acts(off_dqkv_, N * 3 * C);   // (N, 3C)
  auto dfc = acts(off_dfc_, N * 4 * C);     // (N, 4C) d(fc_act)
  auto fc_act = acts(off_fc_scratch_, N * 4 * C);  // (N, 4C) gelu(fch), then d(fch)
  auto datt = acts(off_datt_, cap_att_);
  {
    profile::Scope ps("bwd.fill");
    std::fill(dc.begin(), dc.end(), 0.0f);
  }
  if (M > 0) {
    // losses = crossentropy(xg @ head^T, targets);  xg = lnf[rows]
    auto dxg = acts(off_dxg_, M * C);
    {
      profile::Scope ps("bwd.fill");
      std::fill(dxg.begin(), dxg.end(), 0.0f);
    }
    const std::string head = cfg_.tied ? "wte.weight" : "lm_head.weight";
    {
      profile::Scope ps("bwd.head_crossentropy");
      head_crossentropy_backward(dxg, grad(head), acts(off_head_, std::min(M, head_rows_) * V),
                                 acts(off_xg_, M * C), head_weight(),
                                 std::span<const int32_t>(gtargets_.data(), M), acts(off_lse_, M),
                                 dloss_scale, M, C, V, head_rows_, head_has_logits_);
    }
    for (int64_t m = 0; m < M; ++m)
      std::copy_n(dxg.data() + m * C, C, dc.data() + rows_[m] * C);
  }
  head_has_logits_ = false;
  // lnf = LN(res_L)
  {
    profile::Scope ps("bwd.fill");
    std::fill(dres.begin(), dres.end(), 0.0f);
  }
  auto stats = acts(off_lnf_stats_, 2 * N);
  std::span<const float> res_last = cfg_.L > 0 ? layer(cfg_.L - 1).res3 : acts(off_enc_, N * C);
  {
    profile::Scope ps("bwd.layernorm");
    layernorm_backward(dres, grad("ln_f.weight"), grad("ln_f.bias"), dc, res_last.first(N * C),
                       cparam("ln_f.weight"), stats.first(N), stats.subspan(N, N), N, C);
  }

  for (int64_t l = cfg_.L - 1; l >= 0; --l) {
    LayerActs a = layer(l);
    std::span<const float> res = l == 0 ? acts(off_enc_, N * C) : layer(l - 1).res3;
    // res3 = res2 + drop(fc_act @ c_proj.W + c_proj.b)
    std::span<const float> dbr = dres;
    if (dropout_on_) {
      {
        profile::Scope ps("bwd.fill");
        std::fill(dbranch.begin(), dbranch.end(), 0.0f);
      }
      {
        profile::Scope ps("bwd.dropout");
        dropout_backward(dbranch, dres, p, site_seed(l, kDropMlp), N * C);
      }
      dbr = dbranch;
    }
    {
      profile::Scope ps("bwd.gelu_recompute");
      gelu_forward(fc_act, a.fch, N * 4 * C);
    }
    {
      profile::Scope ps("bwd.fill");
      std::fill(dfc.begin(), dfc.end(), 0.0f);
    }
    {
      profile::Scope ps("bwd.matmul_fcproj");
      std::span<uint16_t> fc_act_bf;
      if (bf16()) {
        fc_act_bf = bacts(boff_in_, N * 4 * C);
        to_bf16(fc_act_bf, fc_act);
      }
      mm_backward(dfc, dbr, fc_act, fc_act_bf, l, 3, "mlp.c_proj.weight", "mlp.c_proj.bias", N,
                  4 * C, C);
    }
    // fc_act = gelu(fch): fc_act's buffer now holds d(fch)
    {
      profile::Scope ps("bwd.fill");
      std::fill(fc_act.begin(), fc_act.end(), 0.0f);
    }
    {
      profile::Scope ps("bwd.gelu");
      gelu_backward(fc_act, dfc, a.fch, N * 4 * C);
    }
    // fch = ln2 @ c_fc.W + c_fc.b
    {
      profile::Scope ps("bwd.fill");
      std::fill(dc.begin(), dc.end(), 0.0f);
    }
    {
      profile::Scope ps("bwd.matmul_fc");
      mm_backward(dc, fc_act, a.ln2, a.ln2_bf, l, 2, "mlp.c_fc.weight", "mlp.c_fc.bias", N, C,
                  4 * C);
    }
    // ln2 = LN(res2); dres already holds d(res2) through the residual path
    {
      profile::Scope ps("bwd.layernorm");
      layernorm_backward(dres, layer_grad(l, "ln_2.weight"), layer_grad(l, "ln_2.bias"), dc, a.res2,
                         layer_param(l, "ln_2.weight"), a.ln2_mean, a.ln2_rstd, N, C);
    }
    // res2 = res + drop(atty @ c_proj.W + c_proj.b)
    dbr = dres;
    if (dropout_on_) {
      {
        profile::Scope ps("bwd.fill");
        std::fill(dbranch.begin(), dbranch.end(), 0.0f);
      }
      {
        profile::Scope ps("bwd.dropout");
        dropout_backward(dbranch, dres, p, site_seed(l, kDropAttProj), N * C);
      }
      dbr = dbranch;
    }
    {
      profile::Scope ps("bwd.fill");
      std::fill(dc.begin(), dc.end(), 0.0f);
    }
    {
      profile::Scope ps("bwd.matmul_attproj");
      mm_backward(dc, dbr, a.atty, a.atty_bf, l, 1, "attn.c_proj.weight", "attn.c_proj.bias", N,
                  C, C);
    }
    // atty = attention(qkv)
    {
      profile::Scope ps("bwd.fill");
      std::fill(dqkv.begin(), dqkv.end(), 0.0f);
    }
    {
      profile::Scope ps("bwd.attention");
      attention_backward(dqkv, datt, dc, a.qkv, a.att, off, N, C, NH, p, site_seed(l, kDropAtt));
    }
    // qkv = ln1 @ c_attn.W + c_attn.b
    {
      profile::Scope ps("bwd.fill");
      std::fill(dc.begin(), dc.end(), 0.0f);
    }
    {
      profile::Scope ps("bwd.matmul_qkv");
      mm_backward(dc, dqkv, a.ln1, a.ln1_bf, l, 0, "attn.c_attn.weight", "attn.c_attn.bias", N, C,
                  3 * C);
    }
    // ln1 = LN(res); dres holds d(res) after this
    {
      profile::Scope ps("bwd.layernorm");
      layernorm_backward(dres, layer_grad(l, "ln_1.weight"), layer_grad(l, "ln_1.bias"), dc, res,
                         layer_param(l, "ln_1.weight"), a.ln1_mean, a.ln1_rstd, N, C);
    }
  }
  // enc = drop(wte[inp] + wpe[pos])
  std::span<const float> denc = dres;
  if (dropout_on_) {
    {
      profile::Scope ps("bwd.fill");
      std::fill(dbranch.begin(), dbranch.end(), 0.0f);
    }
    {
      profile::Scope ps("bwd.dropout");
      dropout_backward(dbranch, dres, p, site_seed(-1, kDropEmb), N * C);
    }
    denc = dbranch;
  }
  {
    profile::Scope ps("bwd.encoder");
    encoder_backward(grad("wte.weight"), grad("wpe.weight"), denc, inp, pos, N, C);
  }
}

void Gpt2::forward_logits(std::span<float> logits, std::span<const int32_t> inputs,
                          std::span<const int64_t> seq_offsets,
                          std::span<const int64_t> positions) {
  check_batch(inputs, nullptr, seq_offsets);
  const int64_t N = static_cast<int64_t>(inputs.size()), P = static_cast<int64_t>(positions.size());
  const int64_t C = cfg_.C, V = cfg_.V;
  if (static_cast<int64_t>(logits.size()) < P * V)
    throw Error(fmt::format("logits buffer has {} floats, need {} x {}", logits.size(), P, V));
  for (int64_t i = 0; i < P; ++i)
    if (positions[i] < 0 || positions[i] >= N)
      throw Error(fmt::format("logit position {} outside [0, {})", positions[i], N));
  ready_for_backward_ = false;
  head_has_logits_ = false;
  forward_trunk(inputs, seq_offsets, /*dropout=*/false);
  if (P == 0) return;
  // The gather buffer holds cap_tokens_ rows; more positions than tokens go in rounds.
  auto lnf = acts(off_lnf_, N * C);
  for (int64_t p0 = 0; p0 < P; p0 += cap_tokens_) {
    const int64_t rows = std::min(cap_tokens_, P - p0);
    auto xg = acts(off_xg_, rows * C);
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(lnf.data() + positions[p0 + r] * C, C, xg.data() + r * C);
    matmul_forward(logits.subspan(p0 * V, rows * V), xg, head_weight(), {}, rows, C, V,
                   WeightLayout::kOutIn);
  }
}

std::span<const uint16_t> Gpt2::wbf(int64_t l, int k) const {
  const int64_t C = cfg_.C, per_layer = 12 * C * C;
  if (l == cfg_.L) return std::span<const uint16_t>(wbf_).subspan(cfg_.L * per_layer, cfg_.V * C);
  static constexpr int64_t kStart[4] = {0, 3, 4, 8}, kSize[4] = {3, 1, 4, 4};  // in C * C
  return std::span<const uint16_t>(wbf_).subspan(l * per_layer + kStart[k] * C * C,
                                                 kSize[k] * C * C);
}

void Gpt2::refresh_bf16() {
  if (!bf16() || !weights_stale_) return;
  profile::Scope ps("bf16_weights");
  const int64_t C = cfg_.C;
  wbf_.resize(static_cast<size_t>(cfg_.L * 12 * C * C + cfg_.V * C));
  static constexpr const char* kNames[4] = {"attn.c_attn.weight", "attn.c_proj.weight",
                                            "mlp.c_fc.weight", "mlp.c_proj.weight"};
  auto dst = [&](int64_t l, int k) {
    auto w = wbf(l, k);
    return std::span<uint16_t>(const_cast<uint16_t*>(w.data()), w.size());
  };
  for (int64_t l = 0; l < cfg_.L; ++l)
    for (int k = 0; k < 4; ++k) to_bf16(dst(l, k), layer_param(l, kNames[k]));
  to_bf16(dst(cfg_.L, 0), head_weight());
  weights_stale_ = false;
  ++bf16_refreshes_;
}

void Gpt2::mm_forward(std::span<float> out, std::span<const float> inp,
                      std::span<uint16_t> inp_bf, int64_t l, int k, std::string_view w_suffix,
                      std::string_view b_suffix, int64_t N, int64_t IC, int64_t OC) {
  const auto bias = layer_param(l, b_suffix);
  if (!bf16()) {
    matmul_forward(out, inp, layer_param(l, w_suffix), bias, N, IC, OC);
    return;
  }
  to_bf16(inp_bf.first(N * IC), inp.first(N * IC));
  matmul_forward(out, std::span<const uint16_t>(inp_bf.first(N * IC)), wbf(l, k), bias, N, IC,
                 OC);
}

void Gpt2::mm_backward(std::span<float> dinp, std::span<const float> dout,
                       std::span<const float> inp, std::span<const uint16_t> inp_bf, int64_t l,
                       int k, std::string_view w_suffix, std::string_view b_suffix, int64_t N,
                       int64_t IC, int64_t OC) {
  auto dw = layer_grad(l, w_suffix);
  auto db = layer_grad(l, b_suffix);
  if (!bf16()) {
    matmul_backward(dinp, dw, db, dout, inp, layer_param(l, w_suffix), N, IC, OC);
    return;
  }
  auto dout_bf = bacts(boff_dout_, N * OC);
  to_bf16(dout_bf, dout.first(N * OC));
  matmul_backward(dinp, dw, db, dout.first(N * OC), dout_bf, inp_bf.first(N * IC), wbf(l, k), N,
                  IC, OC);
}

void Gpt2::zero_grad() {
  profile::Scope ps("zero_grad");
  std::fill(grads_.begin(), grads_.end(), 0.0f);
}

double Gpt2::grad_norm() const {
  const float* g = grads_.data();
  const int64_t n = static_cast<int64_t>(grads_.size());
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(g[i]) * g[i];
  return std::sqrt(s);
}

double Gpt2::clip_grad_norm(double max_norm) {
  LLMFT_CHECK(max_norm > 0.0, "max_norm {}", max_norm);
  const double norm = grad_norm();
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    const float c = static_cast<float>(coef);
    for (float& g : grads_) g *= c;
  }
  return norm;
}

void Gpt2::set_precision(Precision p) {
  if (p == precision_) return;
  precision_ = p;
  weights_stale_ = true;
  if (!bf16()) wbf_ = {};
  cap_tokens_ = 0;  // the next reserve/forward re-lays the arena
}

void Gpt2::set_num_threads(int n) {
  LLMFT_CHECK(n >= 1, "threads {}", n);
  omp_set_num_threads(n);
  set_blas_threads(n);
}

}  // namespace llmft
