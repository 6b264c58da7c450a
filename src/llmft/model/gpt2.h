// GPT-2 training model (SPEC §4): forward, backward and loss over packed sequences, fp32.
// Matches tests/reference/gpt2_reference.py (golden: tests/golden/gpt2_tiny.safetensors).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "llmft/model/config.h"
#include "llmft/model/params.h"
#include "llmft/model/precision.h"

namespace llmft {

struct LossResult {
  double loss_sum = 0.0;  // sum of per-token cross-entropies over non-ignored targets
  int64_t n_targets = 0;  // targets that are not kIgnoreIndex
  double mean() const { return n_targets > 0 ? loss_sum / static_cast<double>(n_targets) : 0.0; }
};

class Gpt2 {
 public:
  static constexpr int32_t kIgnoreIndex = -100;

  // Parameters are zero until init_random() or a loader fills params().
  explicit Gpt2(const Gpt2Config& cfg);

  const Gpt2Config& config() const { return cfg_; }
  const ParamTable& table() const { return table_; }
  // Flat buffers laid out by table(): params, grads (and the optimizer's m, v) share it.
  // Non-const access to the parameters (params(), param()) marks the bf16 weight copy stale, so
  // the next forward refreshes it: once per optimizer step in a training loop.
  std::span<float> params() {
    weights_stale_ = true;
    return params_;
  }
  std::span<const float> params() const { return params_; }
  std::span<float> grads() { return grads_; }
  std::span<const float> grads() const { return grads_; }
  // One tensor's view; throws InternalError for an unknown name.
  std::span<float> param(const std::string& name);
  std::span<const float> param(const std::string& name) const;
  std::span<float> grad(const std::string& name);
  // Layer l's tensor by name suffix ("mlp.c_fc.weight"), without allocating.
  std::span<const float> layer_param(int64_t l, std::string_view suffix) const;
  std::span<float> layer_grad(int64_t l, std::string_view suffix);
  // The output head (V, C): lm_head.weight, or wte.weight when tied.
  std::span<const float> head_weight() const;

  // GPT-2's initialisation: N(0, 0.02) weights and embeddings, c_proj weights
  // N(0, 0.02/sqrt(2L)), zero biases, LayerNorm scale 1 and shift 0. Deterministic per seed.
  void init_random(uint64_t seed);

  // Sizes the activation arena for up to `max_tokens` tokens per call. forward() grows it when a
  // call needs more, so the step loop allocates nothing once it has seen its largest batch or
  // reserved it. (Attention keeps no (T, T) weights, so sequence lengths do not matter.)
  void reserve(int64_t max_tokens);
  int64_t arena_floats() const { return static_cast<int64_t>(acts_.size()); }

  // Packed sequences end to end: inputs, targets: (N); seq_offsets: (S+1), 0 .. N. Positions
  // restart at 0 in each sequence and attention stays inside it. Targets == -100 are ignored.
  // A padded (B, T) batch is seq_offsets {0, T, 2T, ..., BT}. training: dropout on (when the
  // config's rate is > 0) and the state kept for backward(). Throws Error on bad input.
  LossResult forward(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                     std::span<const int64_t> seq_offsets, bool training = true);
  // Accumulates into grads() the gradient of dloss_scale * loss_sum of the last forward(), i.e.
  // each counted token's loss gets gradient dloss_scale (1 / total targets over the micro-batches
  // gives the mean). Call once per forward().
  void backward(float dloss_scale);
  // forward(training) and backward(dloss_scale) in one call, with the output head's gradient
  // computed chunk by chunk right after its logits (nothing recomputed, (R, V) scratch only):
  // what a training step runs when it knows the loss scale up front.
  LossResult forward_backward(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                              std::span<const int64_t> seq_offsets, float dloss_scale);

  // Logits (P, V) of the rows `positions` (indices into 0..N-1) of the packed inputs. No dropout.
  void forward_logits(std::span<float> logits, std::span<const int32_t> inputs,
                      std::span<const int64_t> seq_offsets, std::span<const int64_t> positions);

  void zero_grad();
  double grad_norm() const;  // global L2 norm of grads(), accumulated in double
  // As torch.nn.utils.clip_grad_norm_: scales grads by max_norm / (norm + 1e-6) when that is
  // below 1. Returns the norm before clipping.
  double clip_grad_norm(double max_norm);

  // Threads for our OpenMP kernels and OpenBLAS (n >= 1).
  static void set_num_threads(int n);
  // Dropout masks derive from (seed, number of training forwards since this call), so a run is
  // reproducible from its seed; calling it again replays the same masks.
  void set_dropout_seed(uint64_t seed) {
    dropout_seed_ = seed;
    forward_count_ = 0;
  }
  // Precision of the matrix products (precision.h). bf16 keeps a bf16 copy of the matrix
  // weights (the four per layer and the head), refreshed by the first forward after non-const
  // access to the parameters; everything else stays fp32.
  void set_precision(Precision p);
  Precision precision() const { return precision_; }
  // Frees the bf16 weight copy until the next forward rebuilds it: call before building a
  // generation Decoder, which makes its own, so the two never coexist (peak memory).
  void free_bf16_weights() {
    std::vector<uint16_t>().swap(wbf_);  // releases the memory, unlike clear()
    weights_stale_ = true;
  }
  // Times the bf16 weight copy was refreshed (tests: once per optimizer step).
  int64_t bf16_refreshes() const { return bf16_refreshes_; }

  // Rows of the (R, V) logits chunk of the fused head (default 256: 51 MB for GPT-2's V).
  void set_head_chunk_rows(int64_t rows);

 private:
  struct LayerActs;
  // An activation as the matrix products read it: f in fp32, b (its bf16 rounding) in bf16.
  struct Act {
    std::span<const float> f;
    std::span<const uint16_t> b;
  };
  LayerActs layer(int64_t l);
  void check_batch(std::span<const int32_t> inputs, std::span<const int32_t>* targets,
                   std::span<const int64_t> seq_offsets) const;
  void forward_trunk(std::span<const int32_t> inputs, std::span<const int64_t> seq_offsets,
                     bool dropout);
  // Gathers the rows whose target counts (xg, and its bf16 rounding); returns their number.
  int64_t gather_head_rows(std::span<const int32_t> targets);
  void backward_trunk();
  uint64_t site_seed(int64_t layer, int site) const;
  std::span<float> acts(int64_t offset, int64_t n) {
    return std::span<float>(acts_).subspan(static_cast<size_t>(offset), static_cast<size_t>(n));
  }
  std::span<uint16_t> bacts(int64_t offset, int64_t n) {
    return std::span<uint16_t>(bacts_).subspan(static_cast<size_t>(offset), static_cast<size_t>(n));
  }
  std::span<const float> cparam(const std::string& name) const { return param(name); }
  bool bf16() const { return precision_ == Precision::kBf16; }
  // The bf16 copy of layer l's matrix weight k (kMatNames order), or of the head (l == L).
  std::span<const uint16_t> wbf(int64_t l, int k = 0) const;
  void refresh_bf16();
  // out (N, OC) = in @ W, W: layer l's matrix k, in the model's precision (no bias: the kernel
  // after each product adds it).
  void mm_forward(std::span<float> out, Act in, int64_t l, int k, int64_t N, int64_t IC,
                  int64_t OC);
  // dinp (N, IC) += dout @ W^T (when dinp is not empty); dW += in^T @ dout (when want_dw).
  void mm_backward(std::span<float> dinp, bool want_dw, Act dout, Act in, int64_t l, int k,
                   int64_t N, int64_t IC, int64_t OC);
  // x as an Act: in bf16, rounded into buf.
  Act round(std::span<const float> x, std::span<uint16_t> buf);

  Gpt2Config cfg_;
  ParamTable table_;
  std::vector<float> params_, grads_;

  // Arena: capacity, offsets of each activation, and the buffers.
  int64_t cap_tokens_ = 0, head_rows_ = 256;
  int64_t layer_stride_ = 0, off_layers_ = 0, off_enc_ = 0, off_lnf_ = 0, off_lnf_stats_ = 0;
  int64_t off_xg_ = 0, off_losses_ = 0, off_lse_ = 0, off_head_ = 0, off_fc_ = 0;
  int64_t off_branch_ = 0, off_ln0_ = 0, off_dres_ = 0, off_dc_ = 0, off_dbranch_ = 0;
  int64_t off_dqkv_ = 0, off_dfc_ = 0, off_dxg_ = 0;
  std::vector<float> acts_, bwd_scratch_;
  // bf16 arena (bf16 precision only): per layer ln1 | atty | ln2 (each Nc x C), then gelu(fch)
  // and the rounded output gradients (Nc x 4C each), the head rows (Nc x C) and the head's
  // logit gradients (R x V).
  std::vector<uint16_t> bacts_, wbf_;
  int64_t boff_layers_ = 0, blayer_stride_ = 0, boff_fc_ = 0, boff_dout_ = 0, boff_xg_ = 0;
  int64_t boff_dlogits_ = 0;
  std::vector<int32_t> pos_, inputs_, gtargets_;
  std::vector<int64_t> offsets_, rows_;

  // State of the last forward, for backward().
  int64_t N_ = 0, M_ = 0;
  bool ready_for_backward_ = false, head_has_logits_ = false;
  bool dropout_on_ = false;
  uint64_t dropout_seed_ = 0, forward_count_ = 0;
  Precision precision_ = Precision::kFp32;
  bool weights_stale_ = true;
  int64_t bf16_refreshes_ = 0;
};

}  // namespace llmft
