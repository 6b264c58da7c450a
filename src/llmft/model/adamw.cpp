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
  const int64_t n = static_cast<int64_t>(m_.size());
  LLMFT_CHECK(static_cast<int64_t>(params.size()) == n && static_cast<int64_t>(grads.size()) == n,
              "AdamW over {} floats got params {} grads {}", n, params.size(), grads.size());
  ++t_;
  const double t = static_cast<double>(t_);
  const float b1 = static_cast<float>(cfg_.beta1), b2 = static_cast<float>(cfg_.beta2);
  const float eps = static_cast<float>(cfg_.eps);
  const float decay = static_cast<float>(1.0 - lr * cfg_.weight_decay);
  const float step_size = static_cast<float>(lr / (1.0 - std::pow(cfg_.beta1, t)));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(cfg_.beta2, t)));
  const float one_m_b1 = static_cast<float>(1.0 - cfg_.beta1);
  const float one_m_b2 = static_cast<float>(1.0 - cfg_.beta2);
  float* p = params.data();
  const float* g = grads.data();
  float* m = m_.data();
  float* v = v_.data();
#pragma omp parallel for simd if (n >= kernels::kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    p[i] *= decay;
    m[i] = m[i] * b1 + g[i] * one_m_b1;
    v[i] = v[i] * b2 + one_m_b2 * g[i] * g[i];
    const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    p[i] = p[i] + (-step_size) * m[i] / denom;
  }
}

}  // namespace llmft
