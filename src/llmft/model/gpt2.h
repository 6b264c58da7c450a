// GPT-2 (SPEC §4): the weights (params.h), the one forward through the blocks that training,
// evaluation, generation and the tests all run, its backward and the loss. Matches
// tests/reference/gpt2_reference.py (golden: tests/golden/gpt2_tiny.safetensors).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "llmft/model/activations.h"
#include "llmft/model/config.h"
#include "llmft/model/kernels/attention.h"
#include "llmft/model/kernels/attention_cached.h"
#include "llmft/model/kernels/crossentropy.h"
#include "llmft/model/linear.h"
#include "llmft/model/lora.h"
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

  // Parameters are zero until init_random() or a loader fills params(). Gradient buffers are
  // allocated by the first training call (or grads()), so a model that only generates has none.
  explicit Gpt2(const Gpt2Config& cfg);
  Gpt2(Gpt2&&) = default;
  Gpt2& operator=(Gpt2&&) = default;

  const Gpt2Config& config() const { return cfg_; }
  const ParamTable& table() const { return table_; }
  // The typed weights (params.h). Non-const access marks the bf16 copies stale, so the next
  // forward refreshes them: once per optimizer step in a training loop.
  Gpt2Tensors<float> weights() {
    check_fp32_base();
    ++version_;
    return w_;
  }
  Gpt2Tensors<const float> weights() const {
    check_fp32_base();
    return table_.bind(std::span<const float>(params_));
  }
  // The flat buffers laid out by table(): params, grads (and the optimizer's m, v) share it.
  std::span<float> params() {
    check_fp32_base();
    ++version_;
    return params_;
  }
  std::span<const float> params() const {
    check_fp32_base();
    return params_;
  }
  std::span<float> grads();
  std::span<const float> grads() const { return grads_; }
  Gpt2Tensors<float> grad_tensors();
  bool has_grads() const { return !grads_.empty(); }

  // The optimizer inside the backward pass: with `update` set, backward() hands each block's
  // gradient over as soon as it is complete (then the embeddings', ln_f's and the head's, last),
  // as update(offset, grads): the slice of the flat layout that starts at `offset`. The slice is
  // cleared after the call and its memory reused, so the model holds the embeddings' gradient
  // and two blocks' instead of all of them (gpt2-medium: 0.31 GB instead of 1.42 GB), and a
  // step needs no pass over a whole-model gradient. Once a slice's gradient is not finite,
  // neither it nor any later one is handed over, and grad_norm() (the norm of the whole gradient,
  // summed as the slices pass) is not finite. For the whole model (no LoRA), one backward per
  // update (no accumulation over micro-batches) and no clipping: grads() and clip_grad_norm()
  // are refused meanwhile. An empty function turns it off.
  using GradUpdate = std::function<void(int64_t offset, std::span<const float> grads)>;
  void set_fused_update(GradUpdate update);
  bool fused_update() const { return static_cast<bool>(fused_update_); }

  // LoRA (lora.h): with adapters attached, every forward (training, evaluation, generation) adds
  // their terms, and training updates only them: the base is frozen, so it has no gradient
  // buffers and its backward runs only the input-gradient products. nullptr detaches. The
  // adapters must outlive the attachment.
  void set_lora(Lora* lora);
  Lora* lora() const { return lora_; }
  // What training updates: the model's parameters, or the adapters' when LoRA is attached. The
  // trainer's AdamW, gradient norm and checkpoints run over these. The model's grads are empty
  // until the first training call lays them out, and with a fused update.
  struct Trainable {
    const TensorTable& table;
    std::span<float> params, grads;
  };
  Trainable trainable();
  // With LoRA in bf16: the frozen block matrices (95% of the weights) are kept in bf16 only,
  // converted layer by layer with each fp32 matrix's memory returned to the system at once, so a
  // model needs ~2 bytes per parameter instead of 6 and never more than its fp32 size. From then
  // on the block matrices have no fp32 values: params()/weights() are refused (merge from the
  // base's files instead) and so are fp32 products.
  void keep_base_in_bf16();
  bool base_in_bf16() const { return base_bf16_; }
  // Frees the training arena (activations and backward buffers); the next training call
  // re-lays it. For generation after training. Returns the bytes freed.
  int64_t release_training_memory();

  // GPT-2's initialisation: N(0, 0.02) weights and embeddings, c_proj weights
  // N(0, 0.02/sqrt(2L)), zero biases, LayerNorm scale 1 and shift 0. Deterministic per seed.
  void init_random(uint64_t seed);

  // Sizes the training arena for up to `max_tokens` tokens per call. forward() grows it when a
  // call needs more, so the step loop allocates nothing once it has seen its largest batch or
  // reserved it. (Attention keeps no (T, T) weights, so sequence lengths do not matter.)
  void reserve(int64_t max_tokens);
  int64_t arena_floats() const { return acts_.floats() + static_cast<int64_t>(work_.size()); }

  // Packed sequences end to end: inputs, targets: (N); seq_offsets: (S+1), 0 .. N. Positions
  // restart at 0 in each sequence and attention stays inside it. Targets == -100 are ignored.
  // A padded (B, T) batch is seq_offsets {0, T, 2T, ..., BT}. training: dropout on (when the
  // config's rate is > 0) and the state kept for backward(). forks: (S) or empty: sequences
  // that carry two continuations of one prefix (kernels::SeqFork; the second continuation's
  // positions follow the prefix), each continuation computed as its own prefix + continuation
  // sequence would be while the prefix runs once. Throws Error on bad input.
  LossResult forward(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                     std::span<const int64_t> seq_offsets, bool training = true,
                     std::span<const kernels::SeqFork> forks = {});
  // Accumulates into grads() the gradient of dloss_scale * loss_sum of the last forward(), i.e.
  // each counted token's loss gets gradient dloss_scale (1 / total targets over the micro-batches
  // gives the mean). Call once per forward().
  void backward(float dloss_scale);
  // The per-token losses -log p(target) of the last forward(): (M = n_targets), one per target
  // that is not -100, in packed row order. Their negatives are the per-token log-probabilities a
  // sequence score (DPO's mean response log-prob) is made of. Valid until the next call.
  std::span<const float> token_losses() const;
  // As backward(float), with a weight per token: accumulates the gradient of
  // sum_i dlosses[i] * token_losses()[i] (dlosses: (M)). DPO drives the model through this.
  void backward(std::span<const float> dlosses);
  // forward(training) and backward(dloss_scale) in one call, with the output head's gradient
  // computed chunk by chunk right after its logits (nothing recomputed, (R, V) scratch only):
  // what a training step runs when it knows the loss scale up front.
  LossResult forward_backward(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                              std::span<const int64_t> seq_offsets, float dloss_scale);

  // Logits (P, V) of the rows `positions` (indices into 0..N-1) of the packed inputs. No dropout.
  void forward_logits(std::span<float> logits, std::span<const int32_t> inputs,
                      std::span<const int64_t> seq_offsets, std::span<const int64_t> positions);

  // Generation: N new rows, row r the token ids[r] at position pos[r] of stream stream[r] of
  // `cache`, through the same blocks with attention over the cache (each row's key and value are
  // stored first). The rows' hidden states after ln_f are left in acts.lnf. `acts` is the
  // caller's arena (reserve(..., keep_layers = false, ...)); scratch: the cached attention's.
  void forward_cached(Activations& acts, const kernels::KvCache& cache,
                      std::span<const int32_t> ids, std::span<const int32_t> pos,
                      std::span<const int64_t> stream,
                      std::span<float> scratch, Precision p);
  // logits (R, V) = x (R, C) @ head^T: hidden rows after ln_f through the output head.
  void head_logits(std::span<float> logits, Act x, int64_t R, Precision p, Pass pass);
  // Builds (or keeps, when fresh) the bf16 weight copies `pass` reads; the other kind is freed,
  // so a model holds one bf16 copy at a time. forward() and forward_cached() call it.
  void prepare_bf16(Pass pass);
  int64_t bf16_bytes() const;

  // Over the trainable gradients (the adapters' with LoRA attached).
  void zero_grad();
  double grad_norm();  // global L2 norm, accumulated in double
  // As torch.nn.utils.clip_grad_norm_: scales grads by max_norm / (norm + 1e-6) when that is
  // below 1. Returns the norm before clipping.
  double clip_grad_norm(double max_norm);

  // Dropout masks derive from (seed, number of training forwards since this call), so a run is
  // reproducible from its seed; calling it again replays the same masks.
  void set_dropout_seed(uint64_t seed) {
    dropout_seed_ = seed;
    forward_count_ = 0;
  }
  // Precision of the training and evaluation products (precision.h): bf16 keeps a bf16 copy of
  // the matrix weights (the four per layer and the head), refreshed by the first forward after
  // non-const access to the parameters; everything else stays fp32.
  void set_precision(Precision p);
  Precision precision() const { return precision_; }
  // Times the bf16 weight copies were rebuilt (tests: once per optimizer step).
  int64_t bf16_refreshes() const { return bf16_refreshes_; }

  // Rows of the (R, V) logits chunk of the fused head (default 256: 51 MB for GPT-2's V).
  void set_head_chunk_rows(int64_t rows);

  // The linear layers of block l, and the output head ((V, C), Linear layout).
  struct BlockLinears {
    Linear c_attn, attn_proj, c_fc, mlp_proj;
  };
  BlockLinears& linears(int64_t l) { return lin_[static_cast<size_t>(l)]; }
  Linear& head() { return head_; }

 private:
  using Attend = std::function<void(int64_t l, Activations::Layer& a, int64_t N)>;
  void check_batch(std::span<const int32_t> inputs, std::span<const int32_t>* targets,
                   std::span<const int64_t> seq_offsets,
                   std::span<const kernels::SeqFork> forks = {}) const;
  // Embeddings, then the blocks, then ln_f, over N rows of `acts` (the one forward).
  void embed(Activations& acts, std::span<const int32_t> ids, std::span<const int32_t> pos,
             int64_t N, float dropout_p);
  void trunk(Activations& acts, int64_t N, Precision p, Pass pass, float dropout_p,
             const Attend& attend);
  // The training forward over packed sequences (flash attention), state kept for backward.
  void forward_packed(std::span<const int32_t> inputs, std::span<const int64_t> seq_offsets,
                      std::span<const kernels::SeqFork> forks, bool dropout);
  // Gathers the rows whose target counts (xg, and its bf16 rounding); returns their number.
  int64_t gather_head_rows(std::span<const int32_t> targets);
  LossResult head_loss(bool with_backward, float dloss_scale);
  kernels::HeadLowRank head_low_rank(bool with_backward, bool project = true);
  void finish_head_adapter();
  std::span<float> trainable_grads();
  // Lays out the gradient buffers (the whole flat layout, or the fused update's slots) and points
  // g_ and the linear layers at them.
  void lay_out_grads();
  // With a fused update: where a tensor's gradient lives in grads_ (an offset in floats), and the
  // hand-over of one finished slice of the flat layout.
  int64_t fused_slot(int64_t offset) const;
  void hand_over(int64_t offset, std::span<float> g);
  void hand_over_block(int64_t l);
  void hand_over_rest();
  void backward_head(float dloss_scale, std::span<const float> row_dloss);
  void backward_trunk();
  void backward_block(int64_t l, float p);
  uint64_t site_seed(int64_t layer, int site) const;
  bool lowp() const { return precision_ == Precision::kBf16; }
  void check_fp32_base() const;
  void bind_linears();
  // f(linear) for every linear layer of `self` (a Gpt2, const or not): the four of each block,
  // then the head.
  template <typename Self, typename F>
  static void each_linear(Self& self, F&& f);
  // x as an Act: in bf16 also its rounding, written into buf.
  Act round(std::span<const float> x, std::span<kernels::bf16> buf) const;
  std::span<float> work(int64_t offset, int64_t n) {
    return std::span<float>(work_).subspan(static_cast<size_t>(offset), static_cast<size_t>(n));
  }
  std::span<kernels::bf16> bwork(int64_t offset, int64_t n) {
    return std::span<kernels::bf16>(bwork_).subspan(static_cast<size_t>(offset),
                                                    static_cast<size_t>(n));
  }
  std::span<float> scratch(int64_t n);

  Gpt2Config cfg_;
  ParamTable table_;
  std::vector<float> params_, grads_;
  Gpt2Tensors<float> w_, g_;  // typed views of params_ and grads_ (g_ empty until allocated)
  std::vector<BlockLinears> lin_;
  Linear head_;
  int64_t version_ = 1, bf16_version_ = 0;  // the bf16 copies are fresh when these are equal
  Pass bf16_pass_ = Pass::kTrain;
  int64_t bf16_refreshes_ = 0;

  // The training forward's arena, and the head and backward buffers beside it (work_: xg (N, C),
  // losses, lse (N), the head's (R, V) logits, dres, dc, dbranch (N, C), dqkv (N, 3C),
  // dfc (N, 4C), dxg (N, C); bwork_ in bf16: xg and the rounded gradients (N, 4C), the head's
  // logit gradients (R, V)).
  Activations acts_;
  int64_t cap_tokens_ = 0, head_rows_ = 256;
  int64_t off_xg_ = 0, off_losses_ = 0, off_lse_ = 0, off_head_ = 0, off_dres_ = 0, off_dc_ = 0;
  int64_t off_dbranch_ = 0, off_dqkv_ = 0, off_dfc_ = 0, off_dxg_ = 0;
  int64_t boff_xg_ = 0, boff_dout_ = 0, boff_dlogits_ = 0;
  std::vector<float> work_, scratch_;
  std::vector<kernels::bf16> bwork_;
  std::vector<int32_t> pos_, inputs_, gtargets_;
  std::vector<int64_t> offsets_, rows_;
  std::vector<kernels::SeqFork> forks_;  // of the last forward: (S), or empty

  // State of the last forward, for backward().
  int64_t N_ = 0, M_ = 0;
  bool ready_for_backward_ = false, head_has_logits_ = false;
  bool dropout_on_ = false;
  uint64_t dropout_seed_ = 0, forward_count_ = 0;
  Precision precision_ = Precision::kFp32;
  Lora* lora_ = nullptr;
  bool base_bf16_ = false;

  // The fused update (set_fused_update): grads_ holds [0, block0) (the embeddings), two block
  // slots of `stride` floats (block l in slot l % 2) and the tail from ln_f on.
  GradUpdate fused_update_;
  int64_t fused_block0_ = 0, fused_stride_ = 0, fused_tail_ = 0;
  double fused_sumsq_ = 0.0;  // squared norm of the slices handed over in the last backward
};

}  // namespace llmft
