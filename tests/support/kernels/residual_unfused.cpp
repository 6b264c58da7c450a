// The unfused residual forward/backward; see residual_unfused.h.
#include "kernels/residual_unfused.h"

#include "llmft/model/kernels/common.h"

namespace llmft::kernels {

void residual_forward(std::span<float> out, std::span<const float> a, std::span<const float> b,
                      int64_t N) {
  check_size(out, N, "residual out");
  check_size(a, N, "residual a");
  check_size(b, N, "residual b");
#pragma omp parallel for simd if (N >= 4 * kParallelMin)
  for (int64_t i = 0; i < N; ++i) out[i] = a[i] + b[i];
}

void residual_backward(std::span<float> da, std::span<float> db, std::span<const float> dout,
                       int64_t N) {
  check_size(da, N, "residual da");
  check_size(db, N, "residual db");
  check_size(dout, N, "residual dout");
#pragma omp parallel for simd if (N >= 4 * kParallelMin)
  for (int64_t i = 0; i < N; ++i) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

}  // namespace llmft::kernels
