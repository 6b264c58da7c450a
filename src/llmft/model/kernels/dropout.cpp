// Dropout forward/backward; see dropout.h.
#include "llmft/model/kernels/dropout.h"

#include "llmft/model/kernels/common.h"

namespace llmft::kernels {

void dropout_forward(std::span<float> y, std::span<const float> x, float p, uint64_t seed,
                     int64_t N) {
  check_size(y, N, "dropout y");
  check_size(x, N, "dropout x");
  LLMFT_CHECK(p >= 0.0f && p < 1.0f, "dropout p={}", p);
#pragma omp parallel for if (N >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) y[i] = x[i] * dropout_scale(seed, static_cast<uint64_t>(i), p);
}

void dropout_backward(std::span<float> dx, std::span<const float> dy, float p, uint64_t seed,
                      int64_t N) {
  check_size(dx, N, "dropout dx");
  check_size(dy, N, "dropout dy");
  LLMFT_CHECK(p >= 0.0f && p < 1.0f, "dropout p={}", p);
#pragma omp parallel for if (N >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) dx[i] += dy[i] * dropout_scale(seed, static_cast<uint64_t>(i), p);
}

}  // namespace llmft::kernels
