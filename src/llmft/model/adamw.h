// AdamW with torch.optim.AdamW's exact semantics (PyTorch 1.13, single-tensor path):
//   p *= 1 - lr*wd;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
//   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
// One flat loop over params/grads/m/v, which share the ParamTable layout. Golden:
// tests/golden/gpt2_tiny.safetensors ("adamw.*").
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace llmft {

// Doubles, like PyTorch's Python floats: derived scalars (1 - beta1, 1 - lr*wd) are computed in
// double and rounded to float once, as torch does.
struct AdamWConfig {
  double lr = 5e-5;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.1;  // decoupled, applied to every trainable tensor (SPEC §6)
};

class AdamW {
 public:
  // n: floats in the flat parameter buffer (ParamTable::total()).
  AdamW(int64_t n, const AdamWConfig& cfg);

  // One step over all params with this step's learning rate (schedules pass theirs; the
  // config's lr is the default). params, grads: (n).
  void step(std::span<float> params, std::span<const float> grads);
  void step(std::span<float> params, std::span<const float> grads, double lr);
  // The same step in slices, for an optimizer inside the backward pass (Gpt2::set_fused_update):
  // begin_step(lr) once, then update() for each slice of the flat layout, each element once.
  // params: the whole flat buffer; grads: the slice's gradient, from `offset` on.
  void begin_step(double lr);
  void update(std::span<float> params, int64_t offset, std::span<const float> grads);

  const AdamWConfig& config() const { return cfg_; }
  AdamWConfig& config() { return cfg_; }
  // State for checkpoints: m, v share the parameter layout; step_count is t (0 before any step).
  std::span<float> m() { return m_; }
  std::span<float> v() { return v_; }
  std::span<const float> m() const { return m_; }
  std::span<const float> v() const { return v_; }
  int64_t step_count() const { return t_; }
  void set_step_count(int64_t t) { t_ = t; }
  // Frees m and v once training is over (their last values are in the final checkpoint); a
  // later step() is refused. Returns the bytes freed.
  int64_t release_state();

 private:
  // This step's scalars (begin_step).
  struct Scalars {
    float b1, b2, eps, decay, step_size, bc2_sqrt, one_m_b1, one_m_b2;
  };
  AdamWConfig cfg_;
  std::vector<float> m_, v_;
  int64_t t_ = 0;
  Scalars k_{};
};

}  // namespace llmft
