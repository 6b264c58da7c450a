// AdamW step; see adamw.h. Scalars follow PyTorch: bias corrections in double, then used as
// float scalars in float tensor arithmetic.
#include "llmft/model/adamw.h"

#include <cmath>

#include "llmft/core/error.h"
#include "llmft/model/kernels/common.h"

namespace llmft {

AdamW::AdamW(int64_t n, const AdamWConfig& cfg) : cfg_(cfg) {
  LLMFT_CHECK(n >= 0, "AdamW size {}", n);
  m_.assign(static_cast<size_t>(n), 0.0f);
  v_.assign(static_cast<size_t>(n), 0.0f);
}

int64_t AdamW::release_state() {
  const auto bytes = static_cast<int64_t>((m_.capacity() + v_.capacity()) * sizeof(float));
  std::vector<float>().swap(m_);
  std::vector<float>().swap(v_);
  return bytes;
}

void AdamW::step(std::span<float> params, std::span<const float> grads) {
  step(params, grads, cfg_.lr);
}

void AdamW::step(std::span<float> params, std::span<const float> grads, double lr) {
  const auto n = static_cast<int64_t>(m_.size());
  LLMFT_CHECK(static_cast<int64_t>(params.size()) == n && static_cast<int64_t>(grads.size()) == n,
              "AdamW over {} floats got params {} grads {}", n, params.size(), grads.size());
  begin_step(lr);
  update(params, 0, grads);
}

void AdamW::begin_step(double lr) {
  ++t_;
  const double t = static_cast<double>(t_);
  k_.b1 = static_cast<float>(cfg_.beta1);
  k_.b2 = static_cast<float>(cfg_.beta2);
  k_.eps = static_cast<float>(cfg_.eps);
  k_.decay = static_cast<float>(1.0 - lr * cfg_.weight_decay);
  k_.step_size = static_cast<float>(lr / (1.0 - std::pow(cfg_.beta1, t)));
  k_.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(cfg_.beta2, t)));
  k_.one_m_b1 = static_cast<float>(1.0 - cfg_.beta1);
  k_.one_m_b2 = static_cast<float>(1.0 - cfg_.beta2);
}

void AdamW::update(std::span<float> params, int64_t offset, std::span<const float> grads) {
  const auto n = static_cast<int64_t>(grads.size());
  LLMFT_CHECK(t_ > 0 && static_cast<int64_t>(params.size()) == static_cast<int64_t>(m_.size()) &&
                  offset >= 0 && offset + n <= static_cast<int64_t>(m_.size()),
              "AdamW over {} floats: slice {}+{} of params {} (step {})", m_.size(), offset, n,
              params.size(), t_);
  const Scalars k = k_;
  float* p = params.data() + offset;
  const float* g = grads.data();
  float* m = m_.data() + offset;
  float* v = v_.data() + offset;
#pragma omp parallel for simd if (n >= kernels::kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    p[i] *= k.decay;
    m[i] = m[i] * k.b1 + g[i] * k.one_m_b1;
    v[i] = v[i] * k.b2 + k.one_m_b2 * g[i] * g[i];
    const float denom = std::sqrt(v[i]) / k.bc2_sqrt + k.eps;
    p[i] = p[i] + (-k.step_size) * m[i] / denom;
  }
}

}  // namespace llmft
