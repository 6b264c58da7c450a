// The unfused GELU forward/backward; see gelu_unfused.h.
#include "kernels/gelu_unfused.h"

#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/gelu.h"

namespace llmft::kernels {

void gelu_forward(std::span<float> y, std::span<const float> x, int64_t N) {
  check_size(y, N, "gelu y");
  check_size(x, N, "gelu x");
  float* yp = y.data();
  const float* xp = x.data();
#pragma omp parallel for simd schedule(static) if (N >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) yp[i] = gelu(xp[i]);
}

void gelu_backward(std::span<float> dx, std::span<const float> dy, std::span<const float> x,
                   int64_t N) {
  check_size(dx, N, "gelu dx");
  check_size(dy, N, "gelu dy");
  check_size(x, N, "gelu x");
  float* dxp = dx.data();
  const float* dyp = dy.data();
  const float* xp = x.data();
#pragma omp parallel for simd schedule(static) if (N >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) dxp[i] += gelu_grad(xp[i]) * dyp[i];
}

}  // namespace llmft::kernels
