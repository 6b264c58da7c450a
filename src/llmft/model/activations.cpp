// The activation arena; see activations.h.
#include "llmft/model/activations.h"

#include "llmft/core/error.h"

namespace llmft {

using kernels::bf16;

namespace {
// 16-float alignment for every block of the arena.
int64_t aligned(int64_t n) { return (n + 15) / 16 * 16; }
}  // namespace

template <typename Take>
Activations::Layer Activations::carve(Take take) const {
  const int64_t Nc = rows_, C = cfg_.C;
  Layer a;
  a.ln1 = bf16_ ? std::span<float>{} : take(Nc * C);
  a.ln1_mean = take(Nc);
  a.ln1_rstd = take(Nc);
  a.qkv = take(Nc * 3 * C);
  a.atty = take(Nc * C);
  a.att_lse = take(Nc * cfg_.NH);
  a.res2 = take(Nc * C);
  a.ln2 = bf16_ ? std::span<float>{} : take(Nc * C);
  a.ln2_mean = take(Nc);
  a.ln2_rstd = take(Nc);
  a.fch = take(Nc * 4 * C);
  a.res3 = take(Nc * C);
  return a;
}

void Activations::reserve(const Gpt2Config& cfg, int64_t rows, bool keep_layers, bool use_bf16) {
  LLMFT_CHECK(rows >= 1, "activations for {} rows", rows);
  if (rows <= rows_ && keep_layers == keep_ && use_bf16 == bf16_ && cfg.C == cfg_.C &&
      cfg.L == cfg_.L && cfg.NH == cfg_.NH)
    return;
  cfg_ = cfg;
  rows_ = rows;
  keep_ = keep_layers;
  bf16_ = use_bf16;
  const int64_t Nc = rows, C = cfg.C;
  int64_t per_layer = 0;  // the floats layer() takes, counted by the same walk
  carve([&](int64_t n) {
    per_layer += n;
    return std::span<float>{};
  });
  layer_stride_ = keep_layers ? per_layer : 0;
  int64_t o = 0;
  auto place = [&](int64_t n) {
    const int64_t at = o;
    o += aligned(n);
    return at;
  };
  const int64_t o_enc = place(Nc * C), o_ln0 = place(use_bf16 ? Nc * C : 0);
  const int64_t o_branch = place(Nc * C), o_fc = place(use_bf16 ? 0 : Nc * 4 * C);
  const int64_t o_lnf = place(Nc * C), o_stats = place(2 * Nc);
  off_layers_ = place(keep_layers ? cfg.L * per_layer : per_layer);
  f_.assign(static_cast<size_t>(o), 0.0f);
  auto fs = [&](int64_t at, int64_t n) {
    return std::span<float>(f_).subspan(static_cast<size_t>(at), static_cast<size_t>(n));
  };
  enc = fs(o_enc, Nc * C);
  ln0 = fs(o_ln0, use_bf16 ? Nc * C : 0);
  branch = fs(o_branch, Nc * C);
  fc_act = fs(o_fc, use_bf16 ? 0 : Nc * 4 * C);
  lnf = fs(o_lnf, Nc * C);
  lnf_stats = fs(o_stats, 2 * Nc);
  // bf16: per layer ln1 | atty | ln2 (each Nc x C), then gelu(fch) (Nc x 4C).
  const int64_t blayers = (keep_layers ? cfg.L : 1) * 3 * Nc * C;
  if (use_bf16) b_.assign(static_cast<size_t>(blayers + Nc * 4 * C), 0);
  else std::vector<bf16>().swap(b_);
  fc_act_bf = use_bf16 ? std::span<bf16>(b_).subspan(static_cast<size_t>(blayers)) : std::span<bf16>{};
}

Activations::Layer Activations::layer(int64_t l) {
  const int64_t Nc = rows_, C = cfg_.C;
  int64_t o = off_layers_ + l * layer_stride_;
  Layer a = carve([&](int64_t n) {
    auto s = std::span<float>(f_).subspan(static_cast<size_t>(o), static_cast<size_t>(n));
    o += n;
    return s;
  });
  if (bf16_) {
    const auto b = static_cast<size_t>((keep_ ? l : 0) * 3 * Nc * C), n = static_cast<size_t>(Nc * C);
    a.ln1_bf = std::span<bf16>(b_).subspan(b, n);
    a.atty_bf = std::span<bf16>(b_).subspan(b + n, n);
    a.ln2_bf = std::span<bf16>(b_).subspan(b + 2 * n, n);
  }
  return a;
}

}  // namespace llmft
