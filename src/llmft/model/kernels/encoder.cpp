// Token + position embedding forward/backward; see encoder.h.
#include "llmft/model/kernels/encoder.h"

#include <algorithm>

#include "llmft/model/kernels/common.h"

namespace llmft::kernels {

void encoder_forward(std::span<float> out, std::span<const int32_t> inp,
                     std::span<const int32_t> pos, std::span<const float> wte,
                     std::span<const float> wpe, int64_t N, int64_t C) {
  check_size(out, N * C, "encoder out");
  check_size(inp, N, "encoder inp");
  check_size(pos, N, "encoder pos");
  float* o = out.data();
  const float* te = wte.data();
  const float* pe = wpe.data();
#pragma omp parallel for if (N * C >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) {
    const float* a = te + static_cast<int64_t>(inp[i]) * C;  // (C)
    const float* b = pe + static_cast<int64_t>(pos[i]) * C;  // (C)
    float* y = o + i * C;
    for (int64_t c = 0; c < C; ++c) y[c] = a[c] + b[c];
  }
}

void encoder_backward(std::span<float> dwte, std::span<float> dwpe, std::span<const float> dout,
                      std::span<const int32_t> inp, std::span<const int32_t> pos, int64_t N,
                      int64_t C) {
  check_size(dout, N * C, "encoder dout");
  check_size(inp, N, "encoder inp");
  check_size(pos, N, "encoder pos");
  // Rows repeat (same token twice), so threads split the channels, never the rows.
  const int64_t kBlock = 16;
  const int64_t nblocks = (C + kBlock - 1) / kBlock;
  float* dte = dwte.empty() ? nullptr : dwte.data();
  float* dpe = dwpe.empty() ? nullptr : dwpe.data();
  const float* g = dout.data();
#pragma omp parallel for if (N * C >= kParallelMin)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    for (int64_t i = 0; i < N; ++i) {
      const float* gi = g + i * C;
      if (dte) {
        float* d = dte + static_cast<int64_t>(inp[i]) * C;
        for (int64_t c = c0; c < c1; ++c) d[c] += gi[c];
      }
      if (dpe) {
        float* d = dpe + static_cast<int64_t>(pos[i]) * C;
        for (int64_t c = c0; c < c1; ++c) d[c] += gi[c];
      }
    }
  }
}

}  // namespace llmft::kernels
