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
#include "llmft/model/profile.h"

namespace llmft {

using namespace kernels;

namespace {
constexpr int kDropEmb = 0, kDropAtt = 1, kDropAttProj = 2, kDropMlp = 3;
// The four matrix weights of a block, in the order of wbf()'s k.
constexpr const char* kMat[4] = {"attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                                 "mlp.c_proj.weight"};
}  // namespace

// One layer's saved activations. Per layer, in units of the capacity Nc tokens:
// ln1 (N,C, fp32 only) | ln1_mean (N) | ln1_rstd (N) | qkv (N,3C, biased) | atty (N,C) |
// att_lse (N,NH) | res2 (N,C) | ln2 (N,C, fp32 only) | ln2_mean | ln2_rstd | fch (N,4C, biased) |
// res3 (N,C). In bf16, ln1, atty and ln2 have bf16 copies in bacts_ (ln1_bf, atty_bf, ln2_bf)
// and the fp32 ln1 and ln2 are not kept.
struct Gpt2::LayerActs {
  std::span<float> ln1, ln1_mean, ln1_rstd, qkv, atty, att_lse, res2, ln2, ln2_mean, ln2_rstd,
      fch, res3;
  std::span<uint16_t> ln1_bf, atty_bf, ln2_bf;
};

Gpt2::LayerActs Gpt2::layer(int64_t l) {
  const int64_t Nc = cap_tokens_, C = cfg_.C;
  const bool lowp = bf16();
  int64_t o = off_layers_ + l * layer_stride_;
  auto take = [&](int64_t n) {
    auto s = acts(o, n);
    o += n;
    return s;
  };
  LayerActs a;
  a.ln1 = lowp ? std::span<float>{} : take(Nc * C);
  a.ln1_mean = take(Nc);
  a.ln1_rstd = take(Nc);
  a.qkv = take(Nc * 3 * C);
  a.atty = take(Nc * C);
  a.att_lse = take(Nc * cfg_.NH);
  a.res2 = take(Nc * C);
  a.ln2 = lowp ? std::span<float>{} : take(Nc * C);
  a.ln2_mean = take(Nc);
  a.ln2_rstd = take(Nc);
  a.fch = take(Nc * 4 * C);
  a.res3 = take(Nc * C);
  if (lowp) {
    const int64_t b = boff_layers_ + l * blayer_stride_;
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

void Gpt2::reserve(int64_t max_tokens) {
  LLMFT_CHECK(max_tokens >= 1, "reserve({})", max_tokens);
  if (max_tokens <= cap_tokens_) return;
  const int64_t Nc = max_tokens, C = cfg_.C, V = cfg_.V, R = std::min(Nc, head_rows_);
  const bool lowp = bf16();
  cap_tokens_ = Nc;
  layer_stride_ = Nc * ((lowp ? 10 : 12) * C + 4 + cfg_.NH);
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
  off_head_ = place(R * V);
  off_fc_ = place(lowp ? 0 : Nc * 4 * C);
  off_branch_ = place(Nc * C);
  off_ln0_ = place(lowp ? Nc * C : 0);
  off_dres_ = place(Nc * C);
  off_dc_ = place(Nc * C);
  off_dbranch_ = place(Nc * C);
  off_dqkv_ = place(Nc * 3 * C);
  off_dfc_ = place(Nc * 4 * C);
  off_dxg_ = place(Nc * C);
  acts_.assign(static_cast<size_t>(o), 0.0f);
  if (lowp) {
    blayer_stride_ = 3 * Nc * C;
    boff_layers_ = 0;
    boff_fc_ = cfg_.L * blayer_stride_;
    boff_dout_ = boff_fc_ + Nc * 4 * C;
    boff_xg_ = boff_dout_ + Nc * 4 * C;
    boff_dlogits_ = boff_xg_ + Nc * C;
    bacts_.assign(static_cast<size_t>(boff_dlogits_ + R * V), 0);
  } else {
    std::vector<uint16_t>().swap(bacts_);
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
  LLMFT_CHECK(cfg_.L >= 1, "a model needs at least one layer");
  reserve(N);
  refresh_bf16();
  const int64_t C = cfg_.C, NH = cfg_.NH, L = cfg_.L;
  const float p = dropout ? cfg_.dropout : 0.0f;
  const bool lowp = bf16();
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
    if (dropout_on_) dropout_forward(enc, enc, p, site_seed(-1, kDropEmb), N * C);
  }
  // ln1 of layer 0 = LN(enc); every later LayerNorm is fused with the residual add before it.
  {
    profile::Scope ps("fwd.layernorm");
    LayerActs a = layer(0);
    const auto ln = lowp ? acts(off_ln0_, N * C) : a.ln1.first(N * C);
    layernorm_forward(ln, a.ln1_mean, a.ln1_rstd, enc, layer_param(0, "ln_1.weight"),
                      layer_param(0, "ln_1.bias"), N, C, cfg_.ln_eps);
    if (lowp) to_bf16(a.ln1_bf.first(N * C), ln);
  }

  auto branch = acts(off_branch_, N * C);  // (N, C) attention / MLP branch output, no bias yet
  // gelu(fch) (N, 4C): fp32, or only its bf16 rounding
  auto fc_act = lowp ? std::span<float>{} : acts(off_fc_, N * 4 * C);
  auto fc_act_bf = lowp ? bacts(boff_fc_, N * 4 * C) : std::span<uint16_t>{};
  std::span<const float> res = enc;  // (N, C) the residual stream
  for (int64_t l = 0; l < L; ++l) {
    LayerActs a = layer(l);
    // qkv = ln1 @ c_attn.W (+ c_attn.b, added by the attention kernel)    (N, 3C)
    {
      profile::Scope ps("fwd.matmul_qkv");
      mm_forward(a.qkv.first(N * 3 * C), {a.ln1, a.ln1_bf}, l, 0, N, C, 3 * C);
    }
    // atty = attention(qkv + c_attn.b)                                    (N, C)
    {
      profile::Scope ps("fwd.attention");
      bias_attention_flash_forward(a.atty.first(N * C), lowp ? a.atty_bf.first(N * C) : a.atty_bf,
                                   a.att_lse.first(N * NH), a.qkv.first(N * 3 * C),
                                   layer_param(l, "attn.c_attn.bias"), off, N, C, NH, p,
                                   site_seed(l, kDropAtt));
    }
    // branch = atty @ c_proj.W                                            (N, C)
    {
      profile::Scope ps("fwd.matmul_attproj");
      mm_forward(branch, {a.atty, a.atty_bf}, l, 1, N, C, C);
    }
    // res2 = res + drop(branch + c_proj.b);  ln2 = LN(res2)
    {
      profile::Scope ps("fwd.residual_layernorm");
      residual_layernorm_forward(a.res2.first(N * C), lowp ? a.ln2 : a.ln2.first(N * C),
                                 lowp ? a.ln2_bf.first(N * C) : a.ln2_bf, a.ln2_mean.first(N),
                                 a.ln2_rstd.first(N), res, branch,
                                 layer_param(l, "attn.c_proj.bias"), layer_param(l, "ln_2.weight"),
                                 layer_param(l, "ln_2.bias"), N, C, cfg_.ln_eps, p,
                                 site_seed(l, kDropAttProj));
    }
    // fch = ln2 @ c_fc.W + c_fc.b;  fc_act = gelu(fch)                    (N, 4C)
    {
      profile::Scope ps("fwd.matmul_fc");
      mm_forward(a.fch.first(N * 4 * C), {a.ln2, a.ln2_bf}, l, 2, N, C, 4 * C);
    }
    {
      profile::Scope ps("fwd.gelu");
      bias_gelu_forward(fc_act, fc_act_bf, a.fch.first(N * 4 * C), layer_param(l, "mlp.c_fc.bias"),
                        N, 4 * C);
    }
    // branch = fc_act @ c_proj.W                                          (N, C)
    {
      profile::Scope ps("fwd.matmul_fcproj");
      mm_forward(branch, {fc_act, fc_act_bf}, l, 3, N, 4 * C, C);
    }
    // res3 = res2 + drop(branch + c_proj.b);  the next LayerNorm (ln1 of layer l+1, or ln_f)
    {
      profile::Scope ps("fwd.residual_layernorm");
      const bool last = l + 1 == L;
      LayerActs next = last ? LayerActs{} : layer(l + 1);
      auto stats = acts(off_lnf_stats_, 2 * N);
      auto y = last ? acts(off_lnf_, N * C) : (lowp ? next.ln1 : next.ln1.first(N * C));
      auto y_bf = last || !lowp ? std::span<uint16_t>{} : next.ln1_bf.first(N * C);
      residual_layernorm_forward(
          a.res3.first(N * C), y, y_bf, last ? stats.first(N) : next.ln1_mean.first(N),
          last ? stats.subspan(N, N) : next.ln1_rstd.first(N), a.res2.first(N * C), branch,
          layer_param(l, "mlp.c_proj.bias"),
          last ? cparam("ln_f.weight") : layer_param(l + 1, "ln_1.weight"),
          last ? cparam("ln_f.bias") : layer_param(l + 1, "ln_1.bias"), N, C, cfg_.ln_eps, p,
          site_seed(l, kDropMlp));
    }
    res = a.res3;
  }
}

int64_t Gpt2::gather_head_rows(std::span<const int32_t> targets) {
  const int64_t N = N_, C = cfg_.C;
  int64_t M = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (targets[i] == kIgnoreIndex) continue;
    rows_[M] = i;
    gtargets_[M] = targets[i];
    ++M;
  }
  M_ = M;
  auto lnf = acts(off_lnf_, N * C);
  auto xg = acts(off_xg_, M * C);
#pragma omp parallel for if (M * C >= kParallelMin)
  for (int64_t m = 0; m < M; ++m) std::copy_n(lnf.data() + rows_[m] * C, C, xg.data() + m * C);
  if (bf16()) to_bf16(bacts(boff_xg_, M * C), xg);
  return M;
}

namespace {
// The head's bf16 operands for M gathered rows (empty in fp32).
HeadBf16 head_operands(bool lowp, std::span<const uint16_t> xg, std::span<const uint16_t> w,
                       std::span<uint16_t> dlogits) {
  if (!lowp) return {};
  return {xg, w, dlogits};
}
}  // namespace

LossResult Gpt2::forward(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                         std::span<const int64_t> seq_offsets, bool training) {
  check_batch(inputs, &targets, seq_offsets);
  ready_for_backward_ = false;
  if (training) ++forward_count_;
  forward_trunk(inputs, seq_offsets, training);
  const int64_t C = cfg_.C, V = cfg_.V, R = head_rows_;
  const int64_t M = gather_head_rows(targets);
  LossResult r;
  r.n_targets = M;
  if (M > 0) {
    auto losses = acts(off_losses_, M);
    {
      profile::Scope ps("fwd.head_crossentropy");
      head_crossentropy_forward(
          losses, acts(off_lse_, M), acts(off_head_, std::min(M, R) * V), acts(off_xg_, M * C),
          head_weight(), std::span<const int32_t>(gtargets_.data(), M), M, C, V, R,
          head_operands(bf16(), bacts(boff_xg_, M * C), wbf(cfg_.L),
                        bf16() ? bacts(boff_dlogits_, std::min(M, R) * V) : std::span<uint16_t>{}));
    }
    double sum = 0.0;
    for (int64_t m = 0; m < M; ++m) sum += losses[m];
    r.loss_sum = sum;
  }
  head_has_logits_ = true;
  ready_for_backward_ = training;
  return r;
}

LossResult Gpt2::forward_backward(std::span<const int32_t> inputs,
                                  std::span<const int32_t> targets,
                                  std::span<const int64_t> seq_offsets, float dloss_scale) {
  check_batch(inputs, &targets, seq_offsets);
  ready_for_backward_ = false;
  ++forward_count_;
  forward_trunk(inputs, seq_offsets, /*dropout=*/true);
  const int64_t C = cfg_.C, V = cfg_.V, R = head_rows_;
  const int64_t M = gather_head_rows(targets);
  LossResult r;
  r.n_targets = M;
  if (M > 0) {
    auto losses = acts(off_losses_, M);
    auto dxg = acts(off_dxg_, M * C);
    std::fill(dxg.begin(), dxg.end(), 0.0f);
    {
      profile::Scope ps("head_crossentropy");
      head_crossentropy_forward_backward(
          losses, acts(off_lse_, M), dxg, grad(cfg_.tied ? "wte.weight" : "lm_head.weight"),
          acts(off_head_, std::min(M, R) * V), acts(off_xg_, M * C), head_weight(),
          std::span<const int32_t>(gtargets_.data(), M), dloss_scale, M, C, V, R,
          head_operands(bf16(), bacts(boff_xg_, M * C), wbf(cfg_.L),
                        bf16() ? bacts(boff_dlogits_, std::min(M, R) * V) : std::span<uint16_t>{}));
    }
    double sum = 0.0;
    for (int64_t m = 0; m < M; ++m) sum += losses[m];
    r.loss_sum = sum;
  }
  head_has_logits_ = false;
  backward_trunk();
  return r;
}

void Gpt2::backward(float dloss_scale) {
  LLMFT_CHECK(ready_for_backward_, "backward() needs a training forward() just before it");
  ready_for_backward_ = false;
  const int64_t M = M_, C = cfg_.C, V = cfg_.V, R = head_rows_;
  if (M > 0) {
    // losses = crossentropy(xg @ head^T, targets);  xg = lnf[rows]
    auto dxg = acts(off_dxg_, M * C);
    std::fill(dxg.begin(), dxg.end(), 0.0f);
    profile::Scope ps("bwd.head_crossentropy");
    head_crossentropy_backward(
        dxg, grad(cfg_.tied ? "wte.weight" : "lm_head.weight"),
        acts(off_head_, std::min(M, R) * V), acts(off_xg_, M * C), head_weight(),
        std::span<const int32_t>(gtargets_.data(), M), acts(off_lse_, M), dloss_scale, M, C, V, R,
        head_has_logits_,
        head_operands(bf16(), bacts(boff_xg_, M * C), wbf(cfg_.L),
                      bf16() ? bacts(boff_dlogits_, std::min(M, R) * V) : std::span<uint16_t>{}));
  }
  head_has_logits_ = false;
  backward_trunk();
}

void Gpt2::backward_trunk() {
  const int64_t N = N_, M = M_, C = cfg_.C, NH = cfg_.NH, L = cfg_.L;
  const float p = dropout_on_ ? cfg_.dropout : 0.0f;
  const bool lowp = bf16();
  const std::span<const int64_t> off(offsets_);
  const std::span<const int32_t> inp(inputs_.data(), N), pos(pos_.data(), N);

  auto dres = acts(off_dres_, N * C);        // (N, C) d(residual stream)
  auto dc = acts(off_dc_, N * C);            // (N, C) d(lnf / atty / ln1 / ln2)
  auto dqkv = acts(off_dqkv_, N * 3 * C);    // (N, 3C)
  auto dfc = acts(off_dfc_, N * 4 * C);      // (N, 4C) d(fc_act), then d(fch) in place
  auto fc_act = lowp ? std::span<float>{} : acts(off_fc_, N * 4 * C);  // gelu(fch) recomputed
  auto fc_act_bf = lowp ? bacts(boff_fc_, N * 4 * C) : std::span<uint16_t>{};
  // d(branch): its own buffer with dropout (the kernel writes drop'(dres) there), else dres.
  auto dbranch = dropout_on_ ? acts(off_dbranch_, N * C) : std::span<float>{};
  const std::span<const float> dbr = dropout_on_ ? std::span<const float>(dbranch) : dres;
  auto scratch_for = [&](int64_t n) {
    if (static_cast<int64_t>(bwd_scratch_.size()) < n) bwd_scratch_.resize(static_cast<size_t>(n));
    return std::span<float>(bwd_scratch_).first(static_cast<size_t>(n));
  };
  auto zero = [](std::span<float> x) {
    profile::Scope ps("bwd.fill");
    std::fill(x.begin(), x.end(), 0.0f);
  };

  // d(lnf): the head rows' gradients, zero elsewhere.
  zero(dc);
  for (int64_t m = 0; m < M; ++m)
    std::copy_n(acts(off_dxg_, M * C).data() + m * C, C, dc.data() + rows_[m] * C);
  zero(dres);
  {
    // lnf = LN(res3_{L-1}), res3_{L-1} = res2 + drop(fcproj branch + mlp.c_proj.b)
    profile::Scope ps("bwd.layernorm_residual");
    auto stats = acts(off_lnf_stats_, 2 * N);
    layernorm_residual_backward(
        dres, dbranch, layer_grad(L - 1, "mlp.c_proj.bias"), grad("ln_f.weight"),
        grad("ln_f.bias"), scratch_for(layernorm_residual_backward_scratch_size(N, C)), dc,
        layer(L - 1).res3.first(N * C), cparam("ln_f.weight"), stats.first(N), stats.subspan(N, N),
        N, C, p, site_seed(L - 1, kDropMlp));
  }

  for (int64_t l = L - 1; l >= 0; --l) {
    LayerActs a = layer(l);
    // branch = fc_act @ c_proj.W: first d(fc_act), then (once gelu is recomputed) dW
    const Act dbr_act = round(dbr, lowp ? bacts(boff_dout_, N * C) : std::span<uint16_t>{});
    zero(dfc);
    {
      profile::Scope ps("bwd.matmul_fcproj");
      mm_backward(dfc, false, dbr_act, {}, l, 3, N, 4 * C, C);
    }
    // fc_act = gelu(fch), fch = ln2 @ c_fc.W + c_fc.b: d(fch) in place, fc_act recomputed
    {
      profile::Scope ps("bwd.gelu");
      gelu_bias_backward(dfc, fc_act, fc_act_bf, layer_grad(l, "mlp.c_fc.bias"),
                         scratch_for(gelu_bias_backward_scratch_size(N, 4 * C)), dfc,
                         a.fch.first(N * 4 * C), N, 4 * C);
    }
    {
      profile::Scope ps("bwd.matmul_fcproj");
      mm_backward({}, true, dbr_act, {fc_act, fc_act_bf}, l, 3, N, 4 * C, C);
    }
    zero(dc);
    {
      profile::Scope ps("bwd.matmul_fc");
      const Act dfch = round(dfc, lowp ? bacts(boff_dout_, N * 4 * C) : std::span<uint16_t>{});
      mm_backward(dc, true, dfch, {a.ln2, a.ln2_bf}, l, 2, N, C, 4 * C);
    }
    // ln2 = LN(res2), res2 = res + drop(attproj branch + attn.c_proj.b); dres holds d(res2)
    // through the residual path and becomes d(res)
    {
      profile::Scope ps("bwd.layernorm_residual");
      layernorm_residual_backward(
          dres, dbranch, layer_grad(l, "attn.c_proj.bias"), layer_grad(l, "ln_2.weight"),
          layer_grad(l, "ln_2.bias"), scratch_for(layernorm_residual_backward_scratch_size(N, C)),
          dc, a.res2.first(N * C), layer_param(l, "ln_2.weight"), a.ln2_mean.first(N),
          a.ln2_rstd.first(N), N, C, p, site_seed(l, kDropAttProj));
    }
    // branch = atty @ attn.c_proj.W
    zero(dc);
    {
      profile::Scope ps("bwd.matmul_attproj");
      const Act d = round(dbr, lowp ? bacts(boff_dout_, N * C) : std::span<uint16_t>{});
      mm_backward(dc, true, d, {a.atty, a.atty_bf}, l, 1, N, C, C);
    }
    // atty = attention(qkv + c_attn.b)
    zero(dqkv);
    {
      profile::Scope ps("bwd.attention");
      attention_flash_backward(dqkv, layer_grad(l, "attn.c_attn.bias"),
                               scratch_for(attention_flash_backward_scratch_size(off, C)), dc,
                               a.qkv.first(N * 3 * C), a.atty.first(N * C),
                               a.att_lse.first(N * NH), off, N, C, NH, p, site_seed(l, kDropAtt));
    }
    // qkv = ln1 @ c_attn.W
    zero(dc);
    {
      profile::Scope ps("bwd.matmul_qkv");
      const Act d = round(dqkv, lowp ? bacts(boff_dout_, N * 3 * C) : std::span<uint16_t>{});
      mm_backward(dc, true, d, {a.ln1, a.ln1_bf}, l, 0, N, C, 3 * C);
    }
    // ln1 = LN(res); dres becomes d(res)
    profile::Scope ps("bwd.layernorm_residual");
    if (l > 0) {
      // res = res3_{l-1} = res2_{l-1} + drop(fcproj branch_{l-1} + mlp.c_proj.b_{l-1})
      layernorm_residual_backward(
          dres, dbranch, layer_grad(l - 1, "mlp.c_proj.bias"), layer_grad(l, "ln_1.weight"),
          layer_grad(l, "ln_1.bias"), scratch_for(layernorm_residual_backward_scratch_size(N, C)),
          dc, layer(l - 1).res3.first(N * C), layer_param(l, "ln_1.weight"), a.ln1_mean.first(N),
          a.ln1_rstd.first(N), N, C, p, site_seed(l - 1, kDropMlp));
    } else {
      layernorm_backward(dres, layer_grad(0, "ln_1.weight"), layer_grad(0, "ln_1.bias"), dc,
                         acts(off_enc_, N * C), layer_param(0, "ln_1.weight"), a.ln1_mean.first(N),
                         a.ln1_rstd.first(N), N, C);
    }
  }
  // enc = drop(wte[inp] + wpe[pos])
  std::span<const float> denc = dres;
  profile::Scope ps("bwd.encoder");
  if (dropout_on_) {
    auto d = acts(off_dbranch_, N * C);
    std::fill(d.begin(), d.end(), 0.0f);
    dropout_backward(d, dres, p, site_seed(-1, kDropEmb), N * C);
    denc = d;
  }
  encoder_backward(grad("wte.weight"), grad("wpe.weight"), denc, inp, pos, N, C);
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
    auto out = logits.subspan(p0 * V, rows * V);
    if (bf16()) {
      auto xb = bacts(boff_xg_, rows * C);
      to_bf16(xb, xg);
      matmul_forward(out, std::span<const uint16_t>(xb), wbf(cfg_.L), {}, rows, C, V,
                     WeightLayout::kOutIn);
    } else {
      matmul_forward(out, xg, head_weight(), {}, rows, C, V, WeightLayout::kOutIn);
    }
  }
}

std::span<const uint16_t> Gpt2::wbf(int64_t l, int k) const {
  if (wbf_.empty()) return {};
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
  auto dst = [&](int64_t l, int k) {
    auto w = wbf(l, k);
    return std::span<uint16_t>(const_cast<uint16_t*>(w.data()), w.size());
  };
  for (int64_t l = 0; l < cfg_.L; ++l)
    for (int k = 0; k < 4; ++k) to_bf16(dst(l, k), layer_param(l, kMat[k]));
  to_bf16(dst(cfg_.L, 0), head_weight());
  weights_stale_ = false;
  ++bf16_refreshes_;
}

Gpt2::Act Gpt2::round(std::span<const float> x, std::span<uint16_t> buf) {
  if (!bf16()) return {x, {}};
  to_bf16(buf.first(x.size()), x);
  return {x, buf.first(x.size())};
}

void Gpt2::mm_forward(std::span<float> out, Act in, int64_t l, int k, int64_t N, int64_t IC,
                      int64_t OC) {
  if (bf16()) {
    matmul_forward(out.first(N * OC), in.b.first(N * IC), wbf(l, k), {}, N, IC, OC);
  } else {
    matmul_forward(out.first(N * OC), in.f.first(N * IC), layer_param(l, kMat[k]), {}, N, IC, OC);
  }
}

void Gpt2::mm_backward(std::span<float> dinp, bool want_dw, Act dout, Act in, int64_t l, int k,
                       int64_t N, int64_t IC, int64_t OC) {
  const auto dw = want_dw ? layer_grad(l, kMat[k]) : std::span<float>{};
  const auto dx = dinp.empty() ? dinp : dinp.first(N * IC);
  if (bf16()) {
    matmul_backward(dx, dw, {}, {}, dout.b.first(N * OC),
                    want_dw ? in.b.first(N * IC) : std::span<const uint16_t>{}, wbf(l, k), N, IC,
                    OC);
  } else {
    matmul_backward(dx, dw, {}, dout.f.first(N * OC),
                    want_dw ? in.f.first(N * IC) : std::span<const float>{},
                    layer_param(l, kMat[k]), N, IC, OC);
  }
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
  if (!bf16()) free_bf16_weights();
  cap_tokens_ = 0;  // the next reserve/forward re-lays the arena
}

void Gpt2::set_num_threads(int n) {
  LLMFT_CHECK(n >= 1, "threads {}", n);
  omp_set_num_threads(n);
  set_blas_threads(n);
}

}  // namespace llmft
