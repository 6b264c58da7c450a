// The arena of a forward through GPT-2's blocks (gpt2.h): where each layer's activations live.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "llmft/model/config.h"
#include "llmft/model/kernels/bf16.h"

namespace llmft {

// The activations of a forward over up to rows() rows. Training keeps every layer's (the backward
// reads them); generation keeps one layer's worth, which every layer reuses. Per layer:
// ln1 (N, C) | ln1_mean, ln1_rstd (N) | qkv (N, 3C, biased) | atty (N, C) | att_lse (N, NH) |
// res2 (N, C) | ln2 (N, C) | ln2_mean, ln2_rstd (N) | fch (N, 4C, biased) | res3 (N, C).
// In bf16, ln1, atty and ln2 have bf16 copies (the products' inputs) and the fp32 ln1 and ln2
// are not kept.
class Activations {
 public:
  struct Layer {
    std::span<float> ln1, ln1_mean, ln1_rstd, qkv, atty, att_lse, res2, ln2, ln2_mean, ln2_rstd,
        fch, res3;
    std::span<kernels::bf16> ln1_bf, atty_bf, ln2_bf;
  };
  // Lays the arena out for `rows` rows (no-op when it already is, for at least that many).
  void reserve(const Gpt2Config& cfg, int64_t rows, bool keep_layers, bool use_bf16);
  int64_t rows() const { return rows_; }
  int64_t floats() const { return static_cast<int64_t>(f_.size()); }
  int64_t bytes() const { return floats() * 4 + static_cast<int64_t>(b_.size()) * 2; }
  Layer layer(int64_t l);
  // enc (N, C) the embeddings; ln0 (N, C) bf16 only: layer 0's LayerNorm before its rounding;
  // branch (N, C) attention / MLP branch output before its bias; fc_act (N, 4C) gelu(fch) (fp32;
  // fc_act_bf in bf16); lnf (N, C) after ln_f; lnf_stats (2N) its mean and rstd.
  std::span<float> enc, ln0, branch, fc_act, lnf, lnf_stats;
  std::span<kernels::bf16> fc_act_bf;

 private:
  // One layer's float spans, each taken in turn from take(n): layer() and the stride share it.
  template <typename Take>
  Layer carve(Take take) const;
  Gpt2Config cfg_;
  int64_t rows_ = 0, layer_stride_ = 0, off_layers_ = 0;
  bool keep_ = false, bf16_ = false;
  std::vector<float> f_;
  std::vector<kernels::bf16> b_;
};

}  // namespace llmft
