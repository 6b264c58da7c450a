// GELU (tanh) fused with the bias add before it; see gelu.h, which defines the scalar formula
// (gelu(), gelu_grad()). The unfused gelu_forward/backward these replaced are test and benchmark
// references now (tests/support/kernels/gelu_unfused.h).
#include "llmft/model/kernels/gelu.h"

#include <algorithm>

#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/vmath.h"

namespace llmft::kernels {

void bias_gelu_forward(std::span<float> y, std::span<uint16_t> y_bf, std::span<float> x,
                       std::span<const float> bias, int64_t N, int64_t OC) {
  LLMFT_CHECK(!y.empty() || !y_bf.empty(), "bias_gelu: no output");
  if (!y.empty()) check_size(y, N * OC, "bias_gelu y");
  if (!y_bf.empty()) check_size(y_bf, N * OC, "bias_gelu y_bf");
  check_size(x, N * OC, "bias_gelu x");
  check_size(bias, OC, "bias_gelu bias");
  const bool fp = !y.empty(), bf = !y_bf.empty();
#pragma omp parallel for if (N * OC >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) {
    float* xi = x.data() + i * OC;
    const float* b = bias.data();
    if (fp && bf) {
      float* yi = y.data() + i * OC;
      uint16_t* yb = y_bf.data() + i * OC;
#pragma omp simd
      for (int64_t c = 0; c < OC; ++c) {
        const float v = xi[c] + b[c];
        xi[c] = v;
        const float g = gelu(v);
        yi[c] = g;
        yb[c] = float_to_bf16(g);
      }
    } else if (fp) {
      float* yi = y.data() + i * OC;
#pragma omp simd
      for (int64_t c = 0; c < OC; ++c) {
        const float v = xi[c] + b[c];
        xi[c] = v;
        yi[c] = gelu(v);
      }
    } else {
      uint16_t* yb = y_bf.data() + i * OC;
#pragma omp simd
      for (int64_t c = 0; c < OC; ++c) {
        const float v = xi[c] + b[c];
        xi[c] = v;
        yb[c] = float_to_bf16(gelu(v));
      }
    }
  }
}

int64_t gelu_bias_backward_scratch_size(int64_t N, int64_t OC) {
  return column_sum_scratch_size(N, OC, 1);
}

namespace {
// Rows [i0, i1) of gelu_bias_backward; column sums into pk (OC) when kSums.
template <bool kY, bool kYbf, bool kSums>
void gelu_bias_backward_rows(float* dx, float* y, uint16_t* ybf, float* pk, const float* dy,
                             const float* x, int64_t i0, int64_t i1, int64_t OC) {
  if constexpr (kSums) std::fill_n(pk, OC, 0.0f);
  for (int64_t i = i0; i < i1; ++i) {
    float* dxi = dx + i * OC;
    float* yi = kY ? y + i * OC : nullptr;
    uint16_t* ybi = kYbf ? ybf + i * OC : nullptr;
    const float* gi = dy + i * OC;
    const float* xi = x + i * OC;
#pragma omp simd
    for (int64_t c = 0; c < OC; ++c) {
      const float v = xi[c];
      const float e = gelu_exp(v);  // shared by gelu() and gelu_grad()
      if constexpr (kY || kYbf) {
        const float g = gelu_from_exp(v, e);
        if constexpr (kY) yi[c] = g;
        if constexpr (kYbf) ybi[c] = float_to_bf16(g);
      }
      const float d = gelu_grad_from_exp(v, e) * gi[c];
      dxi[c] = d;
      if constexpr (kSums) pk[c] += d;
    }
  }
}
}  // namespace

void gelu_bias_backward(std::span<float> dx, std::span<float> y, std::span<uint16_t> y_bf,
                        std::span<float> dbias,
                        std::span<float> scratch, std::span<const float> dy,
                        std::span<const float> x, int64_t N, int64_t OC) {
  check_size(dx, N * OC, "gelu_bias dx");
  check_size(dy, N * OC, "gelu_bias dy");
  check_size(x, N * OC, "gelu_bias x");
  if (!y.empty()) check_size(y, N * OC, "gelu_bias y");
  if (!y_bf.empty()) check_size(y_bf, N * OC, "gelu_bias y_bf");
  const bool sums = !dbias.empty();
  if (sums) {
    check_size(dbias, OC, "gelu_bias dbias");
    check_size(scratch, gelu_bias_backward_scratch_size(N, OC), "gelu_bias scratch");
  }
  // One instantiation per combination of outputs: [y][y_bf][sums].
  using Rows = void (*)(float*, float*, uint16_t*, float*, const float*, const float*, int64_t,
                        int64_t, int64_t);
  static constexpr Rows kRows[2][2][2] = {
      {{&gelu_bias_backward_rows<false, false, false>, &gelu_bias_backward_rows<false, false, true>},
       {&gelu_bias_backward_rows<false, true, false>, &gelu_bias_backward_rows<false, true, true>}},
      {{&gelu_bias_backward_rows<true, false, false>, &gelu_bias_backward_rows<true, false, true>},
       {&gelu_bias_backward_rows<true, true, false>, &gelu_bias_backward_rows<true, true, true>}}};
  const Rows rows = kRows[!y.empty()][!y_bf.empty()][sums];
  const int64_t nchunks = (N + kSumRows - 1) / kSumRows;
  const int64_t kBlock = 256;
  const int64_t nblocks = (OC + kBlock - 1) / kBlock;
  float* part = scratch.data();  // (nchunks, OC) column sums of each chunk of rows
#pragma omp parallel if (N * OC >= kParallelMin)
  {
#pragma omp for schedule(static)
    for (int64_t k = 0; k < nchunks; ++k)
      rows(dx.data(), y.data(), y_bf.data(), sums ? part + k * OC : nullptr, dy.data(), x.data(),
           k * kSumRows, std::min(N, (k + 1) * kSumRows), OC);
    if (sums) {
      // Chunk partials in chunk order, threads split the columns.
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < nblocks; ++blk) {
        const int64_t c0 = blk * kBlock, c1 = std::min(OC, c0 + kBlock);
        float acc[kBlock] = {};
        for (int64_t k = 0; k < nchunks; ++k) {
          const float* pk = part + k * OC;
#pragma omp simd
          for (int64_t c = c0; c < c1; ++c) acc[c - c0] += pk[c];
        }
        for (int64_t c = c0; c < c1; ++c) dbias[c] += acc[c - c0];
      }
    }
  }
}

}  // namespace llmft::kernels
