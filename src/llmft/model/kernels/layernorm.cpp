// LayerNorm forward/backward; see layernorm.h. Row statistics accumulate in double.
#include "llmft/model/kernels/layernorm.h"

#include <algorithm>
#include <cmath>

#include "llmft/model/kernels/common.h"

namespace llmft::kernels {

void layernorm_forward(std::span<float> y, std::span<float> mean, std::span<float> rstd,
                       std::span<const float> x, std::span<const float> w,
                       std::span<const float> b, int64_t N, int64_t C, float eps) {
  check_size(y, N * C, "layernorm y");
  check_size(x, N * C, "layernorm x");
  check_size(mean, N, "layernorm mean");
  check_size(rstd, N, "layernorm rstd");
  check_size(w, C, "layernorm w");
  check_size(b, C, "layernorm b");
#pragma omp parallel for if (N * C >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) {
    const float* xi = x.data() + i * C;  // (C)
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; ++c) s += xi[c];
    const double m = s / static_cast<double>(C);
    double v = 0;
#pragma omp simd reduction(+ : v)
    for (int64_t c = 0; c < C; ++c) {
      const double d = xi[c] - m;
      v += d * d;
    }
    v /= static_cast<double>(C);
    const float mf = static_cast<float>(m);
    const float rs = static_cast<float>(1.0 / std::sqrt(v + static_cast<double>(eps)));
    float* yi = y.data() + i * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) yi[c] = (xi[c] - mf) * rs * w[c] + b[c];
    mean[i] = mf;
    rstd[i] = rs;
  }
}

void layernorm_backward(std::span<float> dx, std::span<float> dw, std::span<float> db,
                        std::span<const float> dy, std::span<const float> x,
                        std::span<const float> w, std::span<const float> mean,
                        std::span<const float> rstd, int64_t N, int64_t C) {
  check_size(dx, N * C, "layernorm dx");
  check_size(dy, N * C, "layernorm dy");
  check_size(x, N * C, "layernorm x");
  check_size(w, C, "layernorm w");
  check_size(mean, N, "layernorm mean");
  check_size(rstd, N, "layernorm rstd");
  // dx: rows are independent.
  //   norm = (x - mean) * rstd;  y = norm * w + b
  //   dx = rstd * (w*dy - mean(w*dy) - norm * mean(w*dy*norm))
#pragma omp parallel for if (N * C >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) {
    const float* xi = x.data() + i * C;
    const float* gi = dy.data() + i * C;
    const float m = mean[i], rs = rstd[i];
    double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t c = 0; c < C; ++c) {
      const float dn = w[c] * gi[c];
      s1 += dn;
      s2 += static_cast<double>(dn) * ((xi[c] - m) * rs);
    }
    const float a = static_cast<float>(s1 / static_cast<double>(C));
    const float bb = static_cast<float>(s2 / static_cast<double>(C));
    float* dxi = dx.data() + i * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float norm = (xi[c] - m) * rs;
      dxi[c] += (w[c] * gi[c] - a - norm * bb) * rs;
    }
  }
  if (dw.empty() && db.empty()) return;
  if (!dw.empty()) check_size(dw, C, "layernorm dw");
  if (!db.empty()) check_size(db, C, "layernorm db");
  // dw, db: sums over rows, so threads split the channels. Blocks of 128 channels (16 vector
  // accumulators): narrow blocks walk rows 4 KB apart one cache line at a time, which thrashes
  // L1 sets and defeats the prefetcher (bwd layernorm was 13x slower than fwd with 16).
  const int64_t kBlock = 128;
  const int64_t nblocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for if (N * C >= kParallelMin)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    float accw[kBlock] = {}, accb[kBlock] = {};
    for (int64_t i = 0; i < N; ++i) {
      const float* xi = x.data() + i * C;
      const float* gi = dy.data() + i * C;
      const float m = mean[i], rs = rstd[i];
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) {
        accw[c - c0] += (xi[c] - m) * rs * gi[c];
        accb[c - c0] += gi[c];
      }
    }
    for (int64_t c = c0; c < c1; ++c) {
      if (!dw.empty()) dw[c] += accw[c - c0];
      if (!db.empty()) db[c] += accb[c - c0];
    }
  }
}

}  // namespace llmft::kernels
