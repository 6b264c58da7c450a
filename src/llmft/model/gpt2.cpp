// GPT-2's weights, the forward through the blocks and the loss; see gpt2.h. The backward is in
// gpt2_backward.cpp. Training, evaluation, test logits and generation all run trunk(): they
// differ only in the attention (packed sequences or a KV cache) and in whether every layer's
// activations are kept for a backward.
#include "llmft/model/gpt2.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include <sys/mman.h>
#include <unistd.h>

#include "llmft/core/error.h"
#include "llmft/model/kernels/attention.h"
#include "llmft/model/kernels/bf16.h"
#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/crossentropy.h"
#include "llmft/model/kernels/dropout.h"
#include "llmft/model/kernels/encoder.h"
#include "llmft/model/kernels/gelu.h"
#include "llmft/model/kernels/layernorm.h"
#include "llmft/model/profile.h"

namespace llmft {

using namespace kernels;

namespace {
constexpr int kDropEmb = 0, kDropAtt = 1, kDropAttProj = 2, kDropMlp = 3, kDropLora = 4;
// 16-float alignment for every block of an arena.
int64_t aligned(int64_t n) { return (n + 15) / 16 * 16; }
}  // namespace

// ---- Weights --------------------------------------------------------------------------------

Gpt2::Gpt2(const Gpt2Config& cfg) : cfg_(cfg), table_(cfg) {
  params_.assign(static_cast<size_t>(table_.total()), 0.0f);
  w_ = table_.bind(std::span<float>(params_));
  g_.h.resize(static_cast<size_t>(cfg_.L));  // no gradient buffers yet: every span empty
  bind_linears();
}

void Gpt2::bind_linears() {
  const int64_t C = cfg_.C;
  lin_.clear();
  lin_.resize(static_cast<size_t>(cfg_.L));
  for (int64_t l = 0; l < cfg_.L; ++l) {
    const BlockTensors<float>& b = w_.h[static_cast<size_t>(l)];
    BlockLinears& k = lin_[static_cast<size_t>(l)];
    k.c_attn = Linear(b.c_attn.w, C, 3 * C, WeightLayout::kInOut);
    k.attn_proj = Linear(b.attn_proj.w, C, C, WeightLayout::kInOut);
    k.c_fc = Linear(b.c_fc.w, C, 4 * C, WeightLayout::kInOut);
    k.mlp_proj = Linear(b.mlp_proj.w, 4 * C, C, WeightLayout::kInOut);
  }
  head_ = Linear(w_.lm_head, C, cfg_.V, WeightLayout::kOutIn);
}

std::span<float> Gpt2::grads() {
  LLMFT_CHECK(lora_ == nullptr, "the base model is frozen while LoRA adapters are attached");
  LLMFT_CHECK(!fused_update_, "no whole-model gradient is kept while a fused update is set");
  lay_out_grads();
  return grads_;
}

void Gpt2::lay_out_grads() {
  if (!grads_.empty()) return;
  if (fused_update_) {
    grads_.assign(static_cast<size_t>(fused_block0_ + 2 * fused_stride_ + table_.total() -
                                      fused_tail_),
                  0.0f);
    float* base = grads_.data();
    g_ = table_.bind([&](const ParamSpec& s) { return base + fused_slot(s.offset); });
  } else {
    grads_.assign(static_cast<size_t>(table_.total()), 0.0f);
    g_ = table_.bind(std::span<float>(grads_));
  }
  for (int64_t l = 0; l < cfg_.L; ++l) {
    const BlockTensors<float>& g = g_.h[static_cast<size_t>(l)];
    BlockLinears& k = lin_[static_cast<size_t>(l)];
    k.c_attn.set_grad(g.c_attn.w);
    k.attn_proj.set_grad(g.attn_proj.w);
    k.c_fc.set_grad(g.c_fc.w);
    k.mlp_proj.set_grad(g.mlp_proj.w);
  }
  head_.set_grad(g_.lm_head);
}

void Gpt2::set_fused_update(GradUpdate update) {
  LLMFT_CHECK(lora_ == nullptr || !update, "a fused update is for the whole model, not LoRA");
  std::vector<float>().swap(grads_);  // laid out again by the next training call
  g_ = Gpt2Tensors<float>{};
  g_.h.resize(static_cast<size_t>(cfg_.L));
  fused_update_ = std::move(update);
  fused_sumsq_ = 0.0;
  // Every block has the same layout (each tensor 16-float aligned from an aligned start), so
  // block l spans [block0 + l * stride, block0 + (l + 1) * stride) and ln_f starts the tail.
  auto offset = [&](const std::string& name) { return table_.find(name)->offset; };
  fused_block0_ = offset("h.0.ln_1.weight");
  fused_tail_ = offset("ln_f.weight");
  fused_stride_ = (fused_tail_ - fused_block0_) / cfg_.L;
}

int64_t Gpt2::fused_slot(int64_t offset) const {
  if (offset < fused_block0_) return offset;
  if (offset >= fused_tail_) return fused_block0_ + 2 * fused_stride_ + (offset - fused_tail_);
  const int64_t l = (offset - fused_block0_) / fused_stride_;
  return fused_block0_ + (l % 2) * fused_stride_ + (offset - fused_block0_ - l * fused_stride_);
}

Gpt2Tensors<float> Gpt2::grad_tensors() {
  grads();
  return g_;
}

void Gpt2::set_lora(Lora* lora) {
  LLMFT_CHECK(!fused_update_ || lora == nullptr, "LoRA adapters with a fused update set");
  lora_ = lora;
  if (lora) {
    std::vector<float>().swap(grads_);  // frozen: the base's gradient buffers go
    g_ = Gpt2Tensors<float>{};
    g_.h.resize(static_cast<size_t>(cfg_.L));
  }
  for (int64_t l = 0; l < cfg_.L; ++l) {
    BlockLinears& k = lin_[static_cast<size_t>(l)];
    auto attach = [&](Linear& lin, LoraTarget t) {
      if (lora) lin.set_grad({});
      lin.set_adapter(lora ? lora->layer(l, t) : nullptr);
    };
    attach(k.c_attn, LoraTarget::kCAttn);
    attach(k.attn_proj, LoraTarget::kAttnProj);
    attach(k.c_fc, LoraTarget::kCFc);
    attach(k.mlp_proj, LoraTarget::kMlpProj);
  }
  if (lora) head_.set_grad({});
  head_.set_adapter(lora ? lora->layer(-1, LoraTarget::kHead) : nullptr);
}

void Gpt2::check_fp32_base() const {
  LLMFT_CHECK(!base_bf16_, "the model's block weights are kept in bf16 only (keep_base_in_bf16)");
}

void Gpt2::keep_base_in_bf16() {
  if (base_bf16_) return;
  if (!lora_ || !lowp())
    throw Error("only a frozen base (LoRA) in bf16 can keep its weights in bf16 only");
  const long page = sysconf(_SC_PAGESIZE);
  for (BlockLinears& k : lin_) {
    for (Linear* lin : {&k.c_attn, &k.attn_proj, &k.c_fc, &k.mlp_proj}) {
      const std::span<const float> w = lin->weight();
      lin->keep_bf16_only();
      // The whole pages inside the fp32 matrix go back to the system now (they read as zero if
      // touched again; nothing does: params() and weights() are refused from here on).
      const auto begin = reinterpret_cast<uintptr_t>(w.data());
      const auto end = reinterpret_cast<uintptr_t>(w.data() + w.size());
      const uintptr_t a = (begin + page - 1) / page * page, b = end / page * page;
      if (b > a) madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);
    }
  }
  base_bf16_ = true;
  // The head (the embedding when tied) keeps its fp32 weight and its refreshed bf16 copy.
  head_.refresh_bf16(Pass::kTrain);
  bf16_version_ = version_;
  bf16_pass_ = Pass::kTrain;
}

int64_t Gpt2::release_training_memory() {
  const auto bytes = acts_.bytes() + static_cast<int64_t>((work_.capacity() + scratch_.capacity()) *
                                                          sizeof(float)) +
                     static_cast<int64_t>(bwork_.capacity() * sizeof(bf16));
  acts_ = Activations{};
  std::vector<float>().swap(work_);
  std::vector<float>().swap(scratch_);
  std::vector<bf16>().swap(bwork_);
  cap_tokens_ = 0;
  ready_for_backward_ = false;
  head_has_logits_ = false;
  return bytes;
}

std::span<float> Gpt2::trainable_grads() { return lora_ ? lora_->grads() : grads(); }

Gpt2::Trainable Gpt2::trainable() {
  if (lora_) return {lora_->table(), lora_->params(), lora_->grads()};
  return {table_, params(), fused_update_ ? std::span<float>{} : std::span<float>(grads_)};
}

void Gpt2::init_random(uint64_t seed) {
  ++version_;
  const double proj_std = 0.02 / std::sqrt(2.0 * static_cast<double>(cfg_.L));
  std::fill(params_.begin(), params_.end(), 0.0f);  // biases and LayerNorm shifts
  auto normal = [&](std::span<float> t, double stddev) {
    // Each chunk has its own generator (keyed by the tensor's place in the flat buffer), so the
    // result does not depend on the thread count.
    const auto id = static_cast<uint64_t>(t.data() - params_.data());
    const int64_t n = static_cast<int64_t>(t.size()), kChunk = 1 << 16;
    const int64_t nchunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for
    for (int64_t c = 0; c < nchunks; ++c) {
      std::mt19937_64 rng(mix64(seed ^ mix64((id << 20) + static_cast<uint64_t>(c))));
      std::normal_distribution<float> dist(0.0f, static_cast<float>(stddev));
      const int64_t end = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; ++i) t[static_cast<size_t>(i)] = dist(rng);
    }
  };
  auto ones = [](std::span<float> t) { std::fill(t.begin(), t.end(), 1.0f); };
  normal(w_.wte, 0.02);
  normal(w_.wpe, 0.02);
  for (const BlockTensors<float>& b : w_.h) {
    ones(b.ln_1.w);
    normal(b.c_attn.w, 0.02);
    normal(b.attn_proj.w, proj_std);
    ones(b.ln_2.w);
    normal(b.c_fc.w, 0.02);
    normal(b.mlp_proj.w, proj_std);
  }
  ones(w_.ln_f.w);
  if (!cfg_.tied) normal(w_.lm_head, 0.02);
}

template <typename Self, typename F>
void Gpt2::each_linear(Self& self, F&& f) {
  for (auto& k : self.lin_) {
    f(k.c_attn);
    f(k.attn_proj);
    f(k.c_fc);
    f(k.mlp_proj);
  }
  f(self.head_);
}

void Gpt2::prepare_bf16(Pass pass) {
  if (bf16_version_ == version_ && bf16_pass_ == pass) return;
  profile::Scope ps("bf16_weights");
  each_linear(*this, [&](Linear& k) { k.refresh_bf16(pass); });
  bf16_version_ = version_;
  bf16_pass_ = pass;
  ++bf16_refreshes_;
}

int64_t Gpt2::bf16_bytes() const {
  int64_t n = 0;
  each_linear(*this, [&](const Linear& k) { n += k.bf16_bytes(); });
  return n;
}

void Gpt2::set_precision(Precision p) {
  if (p == precision_) return;
  if (base_bf16_) throw Error("this model keeps its frozen weights in bf16 only", "use bf16");
  precision_ = p;
  if (!lowp()) {
    each_linear(*this, [](Linear& k) { k.free_bf16(); });
    bf16_version_ = 0;  // stale: the next bf16 forward rebuilds the copies
  }
  cap_tokens_ = 0;  // the next reserve/forward re-lays the arena
}

// ---- Arena ----------------------------------------------------------------------------------

void Gpt2::set_head_chunk_rows(int64_t rows) {
  LLMFT_CHECK(rows >= 1, "head chunk rows {}", rows);
  head_rows_ = rows;
  cap_tokens_ = 0;
}

void Gpt2::reserve(int64_t max_tokens) {
  LLMFT_CHECK(max_tokens >= 1, "reserve({})", max_tokens);
  if (max_tokens <= cap_tokens_) return;
  const int64_t Nc = max_tokens, C = cfg_.C, V = cfg_.V, R = std::min(Nc, head_rows_);
  cap_tokens_ = Nc;
  acts_.reserve(cfg_, Nc, /*keep_layers=*/true, lowp());
  int64_t o = 0;
  auto place = [&](int64_t n) {
    const int64_t at = o;
    o += aligned(n);
    return at;
  };
  off_xg_ = place(Nc * C);
  off_losses_ = place(Nc);
  off_lse_ = place(Nc);
  off_head_ = place(R * V);
  off_dres_ = place(Nc * C);
  off_dc_ = place(Nc * C);
  off_dbranch_ = place(Nc * C);
  off_dqkv_ = place(Nc * 3 * C);
  off_dfc_ = place(Nc * 4 * C);
  off_dxg_ = place(Nc * C);
  work_.assign(static_cast<size_t>(o), 0.0f);
  if (lowp()) {
    boff_xg_ = 0;
    boff_dout_ = Nc * C;
    boff_dlogits_ = boff_dout_ + Nc * 4 * C;
    bwork_.assign(static_cast<size_t>(boff_dlogits_ + R * V), 0);
  } else {
    std::vector<bf16>().swap(bwork_);
  }
  pos_.assign(static_cast<size_t>(Nc), 0);
  inputs_.assign(static_cast<size_t>(Nc), 0);
  gtargets_.assign(static_cast<size_t>(Nc), 0);
  rows_.assign(static_cast<size_t>(Nc), 0);
  offsets_.reserve(static_cast<size_t>(Nc + 1));
  ready_for_backward_ = false;
  head_has_logits_ = false;
}

std::span<float> Gpt2::scratch(int64_t n) {
  if (static_cast<int64_t>(scratch_.size()) < n) scratch_.resize(static_cast<size_t>(n));
  return std::span<float>(scratch_).first(static_cast<size_t>(n));
}

void Gpt2::check_batch(std::span<const int32_t> inputs, std::span<const int32_t>* targets,
                       std::span<const int64_t> off,
                       std::span<const kernels::SeqFork> forks) const {
  const int64_t N = static_cast<int64_t>(inputs.size());
  if (N == 0) throw Error("empty batch: no input tokens", "pass at least one token");
  if (targets && static_cast<int64_t>(targets->size()) != N)
    throw Error(fmt::format("batch has {} inputs but {} targets", N, targets->size()),
                "inputs and targets must have the same length");
  if (off.size() < 2 || off.front() != 0 || off.back() != N)
    throw Error(fmt::format("sequence offsets must run from 0 to {} (got {} entries, last {})", N,
                            off.size(), off.empty() ? -1 : off.back()),
                "pass S+1 offsets: 0, end of sequence 1, ..., N");
  if (!forks.empty() && forks.size() + 1 != off.size())
    throw Error(fmt::format("{} forks for {} sequences", forks.size(), off.size() - 1),
                "pass one fork per sequence, or none");
  for (size_t s = 1; s < off.size(); ++s) {
    const int64_t T = off[s] - off[s - 1];
    if (!forks.empty()) {
      const kernels::SeqFork f = forks[s - 1];
      if (f.prefix < 0 || f.prefix > f.second || f.second > T ||
          (f.second < T && f.prefix < 1))
        throw Error(fmt::format("sequence {} of length {} has fork (prefix {}, second {})", s - 1,
                                T, f.prefix, f.second),
                    "a fork needs 1 <= prefix <= second <= length");
      // Positions: the first continuation ends at second - 1, the second at prefix + T - second - 1.
      const int64_t span = std::max(f.second, f.prefix + T - f.second);
      if (span > cfg_.maxT)
        throw Error(fmt::format("sequence {} spans {} positions", s - 1, span),
                    fmt::format("each continuation needs at most {} tokens with its prefix "
                                "(the context length)",
                                cfg_.maxT));
      continue;
    }
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

// ---- The forward ----------------------------------------------------------------------------

void Gpt2::embed(Activations& A, std::span<const int32_t> ids, std::span<const int32_t> pos,
                 int64_t N, float p) {
  profile::Scope ps("fwd.encoder");
  const int64_t C = cfg_.C;
  // enc = drop(wte[ids] + wpe[pos])                                         (N, C)
  const auto enc = A.enc.first(N * C);
  encoder_forward(enc, ids, pos, w_.wte, w_.wpe, N, C);
  if (p > 0.0f) dropout_forward(enc, enc, p, site_seed(-1, kDropEmb), N * C);
}

void Gpt2::trunk(Activations& A, int64_t N, Precision prec, Pass pass, float p,
                 const Attend& attend) {
  const int64_t C = cfg_.C, L = cfg_.L;
  const bool bf = prec == Precision::kBf16;
  if (bf) prepare_bf16(pass);
  // ln1 of layer 0 = LN(enc); every later LayerNorm is fused with the residual add before it.
  {
    profile::Scope ps("fwd.layernorm");
    Activations::Layer a = A.layer(0);
    const auto ln = bf ? A.ln0.first(N * C) : a.ln1.first(N * C);
    layernorm_forward(ln, a.ln1_mean, a.ln1_rstd, A.enc.first(N * C), w_.h[0].ln_1.w,
                      w_.h[0].ln_1.b, N, C, cfg_.ln_eps);
    if (bf) to_bf16(a.ln1_bf.first(N * C), ln);
  }
  const auto branch = A.branch.first(N * C);  // attention / MLP branch output, no bias yet
  // gelu(fch) (N, 4C): fp32, or only its bf16 rounding
  const auto fc_act = bf ? std::span<float>{} : A.fc_act.first(N * 4 * C);
  const auto fc_act_bf = bf ? A.fc_act_bf.first(N * 4 * C) : std::span<bf16>{};
  auto part = [](auto s, int64_t n) { return s.empty() ? s : s.first(static_cast<size_t>(n)); };
  std::span<const float> res = A.enc.first(N * C);  // (N, C) the residual stream
  for (int64_t l = 0; l < L; ++l) {
    Activations::Layer a = A.layer(l);
    const BlockTensors<float>& w = w_.h[static_cast<size_t>(l)];
    const BlockLinears& k = lin_[static_cast<size_t>(l)];
    // qkv = ln1 @ c_attn.W (+ c_attn.b, added by the attention kernel)    (N, 3C)
    {
      profile::Scope ps("fwd.matmul_qkv");
      k.c_attn.forward(a.qkv, {a.ln1, a.ln1_bf}, N, prec, pass);
    }
    // atty = attention(qkv + c_attn.b)                                    (N, C)
    {
      profile::Scope ps("fwd.attention");
      attend(l, a, N);
    }
    // branch = atty @ attn.c_proj.W                                       (N, C)
    {
      profile::Scope ps("fwd.matmul_attproj");
      k.attn_proj.forward(branch, {a.atty, a.atty_bf}, N, prec, pass);
    }
    // res2 = res + drop(branch + attn.c_proj.b);  ln2 = LN(res2)
    {
      profile::Scope ps("fwd.residual_layernorm");
      residual_layernorm_forward(a.res2.first(N * C), part(a.ln2, N * C), part(a.ln2_bf, N * C),
                                 a.ln2_mean.first(N), a.ln2_rstd.first(N), res, branch,
                                 w.attn_proj.b, w.ln_2.w, w.ln_2.b, N, C, cfg_.ln_eps, p,
                                 site_seed(l, kDropAttProj));
    }
    // fch = ln2 @ c_fc.W + c_fc.b;  fc_act = gelu(fch)                    (N, 4C)
    {
      profile::Scope ps("fwd.matmul_fc");
      k.c_fc.forward(a.fch, {a.ln2, a.ln2_bf}, N, prec, pass);
    }
    {
      profile::Scope ps("fwd.gelu");
      bias_gelu_forward(fc_act, fc_act_bf, a.fch.first(N * 4 * C), w.c_fc.b, N, 4 * C);
    }
    // branch = fc_act @ mlp.c_proj.W                                      (N, C)
    {
      profile::Scope ps("fwd.matmul_fcproj");
      k.mlp_proj.forward(branch, {fc_act, fc_act_bf}, N, prec, pass);
    }
    // res3 = res2 + drop(branch + mlp.c_proj.b);  the next LayerNorm (ln1 of layer l+1, or ln_f)
    {
      profile::Scope ps("fwd.residual_layernorm");
      const bool last = l + 1 == L;
      // With one layer's worth kept, layer l + 1's spans are layer l's: ln1 and its stats are
      // free again here (the attention and the products that read them are done).
      Activations::Layer next = last ? Activations::Layer{} : A.layer(l + 1);
      const LayerNormTensors<float>& ln = last ? w_.ln_f : w_.h[static_cast<size_t>(l + 1)].ln_1;
      residual_layernorm_forward(
          a.res3.first(N * C), last ? A.lnf.first(N * C) : part(next.ln1, N * C),
          last ? std::span<bf16>{} : part(next.ln1_bf, N * C),
          last ? A.lnf_stats.first(N) : next.ln1_mean.first(N),
          last ? A.lnf_stats.subspan(static_cast<size_t>(N), static_cast<size_t>(N))
               : next.ln1_rstd.first(N),
          a.res2.first(N * C), branch, w.mlp_proj.b, ln.w, ln.b, N, C, cfg_.ln_eps, p,
          site_seed(l, kDropMlp));
    }
    res = a.res3.first(N * C);
  }
}

void Gpt2::forward_packed(std::span<const int32_t> inputs, std::span<const int64_t> off,
                          std::span<const kernels::SeqFork> forks, bool dropout) {
  const int64_t N = static_cast<int64_t>(inputs.size()), C = cfg_.C, NH = cfg_.NH;
  reserve(N);
  const float p = dropout ? cfg_.dropout : 0.0f;
  dropout_on_ = p > 0.0f;
  N_ = N;
  offsets_.assign(off.begin(), off.end());
  forks_.assign(forks.begin(), forks.end());
  std::copy(inputs.begin(), inputs.end(), inputs_.begin());
  for (size_t s = 0; s + 1 < off.size(); ++s) {
    const int64_t T = off[s + 1] - off[s];
    const kernels::SeqFork f = forks.empty() ? kernels::SeqFork{T, T} : forks[s];
    // The second continuation of a fork stands right after the prefix.
    for (int64_t t = 0; t < T; ++t)
      pos_[off[s] + t] = static_cast<int32_t>(t < f.second ? t : f.prefix + (t - f.second));
  }
  embed(acts_, {inputs_.data(), static_cast<size_t>(N)}, {pos_.data(), static_cast<size_t>(N)},
        N, p);
  if (lora_) lora_->set_dropout_seed(dropout, site_seed(-1, kDropLora));
  const std::span<const int64_t> offs(offsets_);
  trunk(acts_, N, precision_, Pass::kTrain, p, [&](int64_t l, Activations::Layer& a, int64_t n) {
    bias_attention_flash_forward(a.atty.first(n * C),
                                 a.atty_bf.empty() ? a.atty_bf : a.atty_bf.first(n * C),
                                 a.att_lse.first(n * NH), a.qkv.first(n * 3 * C),
                                 w_.h[static_cast<size_t>(l)].c_attn.b, offs, n, C, NH, p,
                                 site_seed(l, kDropAtt), forks_);
  });
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
  const auto lnf = acts_.lnf.first(N * C);
  const auto xg = work(off_xg_, M * C);
#pragma omp parallel for if (M * C >= kParallelMin)
  for (int64_t m = 0; m < M; ++m) std::copy_n(lnf.data() + rows_[m] * C, C, xg.data() + m * C);
  if (lowp()) to_bf16(bwork(boff_xg_, M * C), xg);
  return M;
}

namespace {
// The head's bf16 operands for M gathered rows (empty in fp32).
HeadBf16 head_operands(bool lowp, std::span<const bf16> xg, std::span<const bf16> w,
                       std::span<bf16> dlogits) {
  if (!lowp) return {};
  return {xg, w, dlogits};
}
}  // namespace

// losses = crossentropy(xg @ head^T, targets), xg = lnf[rows]; with_backward: the head's
// gradients at once (forward_backward), into dxg and the head's weight gradient.
LossResult Gpt2::head_loss(bool with_backward, float dloss_scale) {
  const int64_t M = M_, C = cfg_.C, V = cfg_.V, R = head_rows_;
  LossResult r;
  r.n_targets = M;
  if (M == 0) return r;
  const auto losses = work(off_losses_, M);
  const HeadBf16 ops =
      head_operands(lowp(), bwork(boff_xg_, M * C), head_.plain_bf16(),
                    lowp() ? bwork(boff_dlogits_, std::min(M, R) * V) : std::span<bf16>{});
  const HeadLowRank lr = head_low_rank(with_backward);
  if (with_backward) {
    profile::Scope ps("head_crossentropy");
    const auto dxg = work(off_dxg_, M * C);
    kernels::fill(dxg, 0.0f);
    head_crossentropy_forward_backward(losses, work(off_lse_, M), dxg, g_.lm_head,
                                       work(off_head_, std::min(M, R) * V), work(off_xg_, M * C),
                                       w_.lm_head, {gtargets_.data(), static_cast<size_t>(M)},
                                       dloss_scale, M, C, V, R, ops, lr);
    finish_head_adapter();
  } else {
    profile::Scope ps("fwd.head_crossentropy");
    head_crossentropy_forward(losses, work(off_lse_, M), work(off_head_, std::min(M, R) * V),
                              work(off_xg_, M * C), w_.lm_head,
                              {gtargets_.data(), static_cast<size_t>(M)}, M, C, V, R, ops, lr);
  }
  double sum = 0.0;
  for (int64_t m = 0; m < M; ++m) sum += losses[m];
  r.loss_sum = sum;
  return r;
}

// The head adapter's low-rank operands for the loss kernel (none without one): its projection of
// the gathered rows (computed now, or the one the forward kept); with_backward: also where dB and
// du go.
HeadLowRank Gpt2::head_low_rank(bool with_backward, bool project) {
  LoraLayer* a = head_.adapter();
  if (!a) return {};
  const int64_t M = M_, C = cfg_.C;
  HeadLowRank lr;
  lr.r = a->rank();
  lr.B = a->B();
  lr.u = project ? a->project({work(off_xg_, M * C),
                               lowp() ? bwork(boff_xg_, M * C) : std::span<bf16>{}},
                              M)
                 : a->projection(M);
  if (with_backward) {
    lr.dB = a->dB();
    lr.du = a->du(M);
  }
  return lr;
}

// After the loss kernel's backward: the head adapter's du becomes dA and its share of dxg.
void Gpt2::finish_head_adapter() {
  LoraLayer* a = head_.adapter();
  if (!a) return;
  const int64_t M = M_, C = cfg_.C;
  a->finish_head(work(off_dxg_, M * C),
                 {work(off_xg_, M * C), lowp() ? bwork(boff_xg_, M * C) : std::span<bf16>{}}, M);
}

LossResult Gpt2::forward(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                         std::span<const int64_t> seq_offsets, bool training,
                         std::span<const kernels::SeqFork> forks) {
  check_batch(inputs, &targets, seq_offsets, forks);
  ready_for_backward_ = false;
  if (training) ++forward_count_;
  forward_packed(inputs, seq_offsets, forks, training);
  gather_head_rows(targets);
  const LossResult r = head_loss(/*with_backward=*/false, 0.0f);
  head_has_logits_ = true;
  ready_for_backward_ = training;
  return r;
}

std::span<const float> Gpt2::token_losses() const {
  return std::span<const float>(work_).subspan(static_cast<size_t>(off_losses_),
                                               static_cast<size_t>(M_));
}

LossResult Gpt2::forward_backward(std::span<const int32_t> inputs,
                                  std::span<const int32_t> targets,
                                  std::span<const int64_t> seq_offsets, float dloss_scale) {
  check_batch(inputs, &targets, seq_offsets);
  if (!lora_) lay_out_grads();
  ready_for_backward_ = false;
  ++forward_count_;
  forward_packed(inputs, seq_offsets, {}, /*dropout=*/true);
  gather_head_rows(targets);
  const LossResult r = head_loss(/*with_backward=*/true, dloss_scale);
  head_has_logits_ = false;
  backward_trunk();
  return r;
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
  M_ = 0;  // no token losses
  forward_packed(inputs, seq_offsets, {}, /*dropout=*/false);
  // The gather buffer holds cap_tokens_ rows; more positions than tokens go in rounds.
  const auto lnf = acts_.lnf.first(N * C);
  for (int64_t p0 = 0; p0 < P; p0 += cap_tokens_) {
    const int64_t rows = std::min(cap_tokens_, P - p0);
    const auto xg = work(off_xg_, rows * C);
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(lnf.data() + positions[p0 + r] * C, C, xg.data() + r * C);
    head_logits(logits.subspan(p0 * V, rows * V),
                round(xg, lowp() ? bwork(boff_xg_, rows * C) : std::span<bf16>{}), rows,
                precision_, Pass::kTrain);
  }
}

void Gpt2::forward_cached(Activations& A, const KvCache& cache, std::span<const int32_t> ids,
                          std::span<const int32_t> pos, std::span<const int64_t> stream, std::span<float> scratch,
                          Precision prec) {
  const int64_t N = static_cast<int64_t>(ids.size()), C = cfg_.C, NH = cfg_.NH;
  LLMFT_CHECK(A.rows() >= N, "activations for {} rows, need {}", A.rows(), N);
  if (lora_) lora_->set_dropout_seed(false, 0);
  embed(A, ids, pos, N, /*dropout_p=*/0.0f);
  trunk(A, N, prec, Pass::kDecode, 0.0f, [&](int64_t l, Activations::Layer& a, int64_t n) {
    bias_attention_cached_forward(a.atty.first(n * C),
                                  a.atty_bf.empty() ? a.atty_bf : a.atty_bf.first(n * C),
                                  a.qkv.first(n * 3 * C), w_.h[static_cast<size_t>(l)].c_attn.b,
                                  cache, l, stream, pos, scratch, n, C, NH);
  });
}

void Gpt2::head_logits(std::span<float> logits, Act x, int64_t R, Precision p, Pass pass) {
  if (p == Precision::kBf16) prepare_bf16(pass);
  head_.forward(logits.first(R * cfg_.V), x, R, p, pass);
}

Act Gpt2::round(std::span<const float> x, std::span<bf16> buf) const {
  if (!lowp()) return {x, {}};
  to_bf16(buf.first(x.size()), x);
  return {x, buf.first(x.size())};
}

// ---- Gradients ------------------------------------------------------------------------------

void Gpt2::zero_grad() {
  profile::Scope ps("zero_grad");
  if (lora_) {
    kernels::fill(lora_->grads(), 0.0f);
  } else {
    lay_out_grads();
    kernels::fill(std::span<float>(grads_), 0.0f);
  }
}

namespace {
double sum_squares(std::span<const float> x) {
  const float* g = x.data();
  const int64_t n = static_cast<int64_t>(x.size());
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(g[i]) * g[i];
  return s;
}
}  // namespace

double Gpt2::grad_norm() {
  return std::sqrt(fused_update_ ? fused_sumsq_ : sum_squares(trainable_grads()));
}

void Gpt2::hand_over(int64_t offset, std::span<float> g) {
  if (!fused_update_) return;
  profile::Scope ps("bwd.fused_update");
  const bool finite_before = std::isfinite(fused_sumsq_);
  fused_sumsq_ += sum_squares(g);
  if (!finite_before || !std::isfinite(fused_sumsq_)) return;  // kept back, and all after it
  fused_update_(offset, g);
  kernels::fill(g, 0.0f);
}

void Gpt2::hand_over_block(int64_t l) {
  hand_over(fused_block0_ + l * fused_stride_,
            std::span<float>(grads_).subspan(static_cast<size_t>(fused_block0_ + (l % 2) * fused_stride_),
                                             static_cast<size_t>(fused_stride_)));
}

void Gpt2::hand_over_rest() {
  const std::span<float> g(grads_);
  hand_over(0, g.first(static_cast<size_t>(fused_block0_)));
  hand_over(fused_tail_, g.subspan(static_cast<size_t>(fused_block0_ + 2 * fused_stride_)));
}

double Gpt2::clip_grad_norm(double max_norm) {
  LLMFT_CHECK(max_norm > 0.0, "max_norm {}", max_norm);
  LLMFT_CHECK(!fused_update_, "no clipping with a fused update (it needs the whole gradient)");
  const double norm = grad_norm();
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    const float c = static_cast<float>(coef);
    const std::span<float> grads = trainable_grads();
    float* g = grads.data();
    const int64_t n = static_cast<int64_t>(grads.size());
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) g[i] *= c;
  }
  return norm;
}

}  // namespace llmft
