// LoRA (Hu et al. 2021) as PEFT defines it on GPT-2 (FACTS-phase2 §2): beside a frozen linear
// layer y = x @ W, a trained low-rank term
//   y += scale * drop(x) @ A^T @ B^T     A: (r, IC) "lora_A.weight", B: (OC, r) "lora_B.weight"
// with scale = alpha / r (rsLoRA: alpha / sqrt(r)). A starts Kaiming-uniform (a = sqrt(5), i.e.
// U(-1/sqrt(IC), 1/sqrt(IC))) and B at zero, so step 0 is the base model. Linear (linear.h) calls
// a LoraLayer in its forward and backward; Gpt2 attaches a Lora (the set of them) with set_lora().
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "llmft/model/config.h"
#include "llmft/model/params.h"

namespace llmft {

struct Act;

// The layers an adapter can sit beside, with PEFT's module names.
enum class LoraTarget { kCAttn, kAttnProj, kCFc, kMlpProj, kHead };
inline constexpr LoraTarget kBlockTargets[] = {LoraTarget::kCAttn, LoraTarget::kAttnProj,
                                               LoraTarget::kCFc, LoraTarget::kMlpProj};

// PEFT's module name suffix: "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "lm_head".
const char* lora_module(LoraTarget t);
// A comma-separated list of c_attn, attn.c_proj, c_fc, mlp.c_proj, head (and the shorthands
// c_proj = both projections, lm_head = head, all = the four block layers and the head).
// Throws UsageError naming an unknown entry.
std::vector<LoraTarget> parse_lora_targets(const std::string& list);

struct LoraConfig {
  int64_t rank = 16;
  double alpha = 16;
  double dropout = 0;   // on the adapter's input, training only (PEFT's lora_dropout)
  bool rslora = false;  // scale alpha / sqrt(r) instead of alpha / r
  std::vector<LoraTarget> targets{std::begin(kBlockTargets), std::end(kBlockTargets)};
  std::vector<int64_t> layers;  // blocks with adapters (PEFT's layers_to_transform); empty: all
  float scale() const;
  bool targets_layer(int64_t l) const;
  bool has(LoraTarget t) const;
  void validate(const Gpt2Config& cfg) const;  // throws UsageError
};

// One adapter: its weights and gradients (views into Lora's flat buffers) and what a forward keeps
// for the backward. All its products run in fp32 (bf16 inputs are widened): they are a few
// percent of the layer's work.
class LoraLayer {
 public:
  LoraLayer(std::span<float> A, std::span<float> B, int64_t IC, int64_t OC, int64_t r, float scale,
            float dropout, std::vector<float>* scratch);
  void set_grads(std::span<float> dA, std::span<float> dB) { dA_ = dA, dB_ = dB; }
  // Dropout for the next forward and its backward: seed, or off (evaluation, generation).
  void set_dropout_seed(bool on, uint64_t seed) { drop_on_ = on && p_ > 0, seed_ = seed; }
  int64_t rank() const { return r_; }

  // out (N, OC) += u @ B^T with u = scale * drop(x) @ A^T (N, r), kept for the backward.
  void forward(std::span<float> out, const Act& x, int64_t N);
  // du = scale * dout @ B (N, r), kept;  dx (N, IC) += drop'(du @ A).
  void backward_input(std::span<float> dx, const Act& dout, int64_t N);
  // dB += dout^T @ u;  dA += du^T @ drop(x). Needs backward_input's du.
  void backward_weights(const Act& dout, const Act& x, int64_t N);

  // The output head's adapter inside the fused loss (which makes the logits chunk by chunk):
  // project() computes u (N, r) from x; the kernel adds u @ B^T to each chunk of logits and
  // accumulates dB and du (= dlogits @ B, unscaled); finish_head() turns du into dA and dx.
  std::span<const float> project(const Act& x, int64_t N);
  std::span<const float> projection(int64_t N) const;  // the last project()'s u
  std::span<const float> B() const { return B_; }
  std::span<float> dB() const { return dB_; }
  std::span<float> du(int64_t N);
  void finish_head(std::span<float> dx, const Act& x, int64_t N);

 private:
  // x (N, IC) in fp32 with this forward's dropout applied: x.f itself, or the shared scratch.
  std::span<const float> input(const Act& x, int64_t N);
  // dx (N, IC) += drop'(du @ A), through the shared scratch when dropout is on.
  void add_input_gradient(std::span<float> dx, int64_t N);
  std::span<float> A_, B_, dA_, dB_;
  int64_t IC_, OC_, r_;
  float scale_, p_;
  bool drop_on_ = false;
  uint64_t seed_ = 0;
  std::vector<float> u_, du_;
  std::vector<float>* scratch_;  // shared by the set's layers: they run one at a time
};

// The adapters of one model: PEFT's tensors in one flat buffer (params, grads and AdamW's m and v
// share its table), and a LoraLayer per adapted linear layer.
class Lora {
 public:
  Lora(const Gpt2Config& cfg, const LoraConfig& lc);
  Lora(const Lora&) = delete;
  Lora& operator=(const Lora&) = delete;

  const LoraConfig& config() const { return lc_; }
  // PEFT's names: "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight" (r, IC), ...
  const TensorTable& table() const { return *table_; }
  std::span<float> params() { return params_; }
  std::span<const float> params() const { return params_; }
  std::span<float> grads() { return grads_; }
  void zero_grad();

  // PEFT's initialisation: every A Kaiming-uniform, every B zero. Deterministic per seed.
  void init(uint64_t seed);
  // The adapter of block l's layer t (or the head), nullptr when it has none.
  LoraLayer* layer(int64_t l, LoraTarget t);
  // Dropout masks of the next forward (and its backward), from the model's dropout seed.
  void set_dropout_seed(bool on, uint64_t seed);

  // delta (IC, OC) in GPT-2's Conv1D layout (OC, IC for the head) += scale * (B @ A)^T: what
  // merging adds to a frozen weight. A fresh adapter adds zeros.
  void add_delta(std::span<float> w, int64_t l, LoraTarget t) const;

 private:
  struct Slot {
    int64_t layer;  // -1: the head
    LoraTarget target;
    const ParamSpec *a, *b;
    std::unique_ptr<LoraLayer> adapter;
  };
  Slot* find(int64_t l, LoraTarget t);
  const Slot* find(int64_t l, LoraTarget t) const;
  Gpt2Config cfg_;
  LoraConfig lc_;
  std::unique_ptr<TensorTable> table_;
  std::vector<float> params_, grads_, scratch_;
  std::vector<Slot> slots_;
};

}  // namespace llmft
