// LayerNorm forward/backward, alone and fused with the residual add; see layernorm.h. Row
// statistics accumulate in double.
#include "llmft/model/kernels/layernorm.h"

#include <algorithm>
#include <cmath>

#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/vmath.h"

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


namespace {

// One row of residual_layernorm_forward; same arithmetic as the bias add, dropout_forward and
// the unfused residual_forward (tests/support/kernels/residual_unfused.h) followed by
// layernorm_forward.
template <bool kBias, bool kDrop>
inline void residual_layernorm_row(float* r, float* y, uint16_t* ybf, float* mean, float* rstd,
                                   const float* a,
                                   const float* br, const float* bias, const float* w,
                                   const float* b, int64_t C, float eps, float p, uint64_t seed,
                                   uint64_t id0) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < C; ++c) {
    float v = br[c];
    if constexpr (kBias) v += bias[c];
    if constexpr (kDrop) v *= dropout_scale(seed, id0 + static_cast<uint64_t>(c), p);
    v = a[c] + v;
    r[c] = v;
    s += v;
  }
  const double m = s / static_cast<double>(C);
  double var = 0;
#pragma omp simd reduction(+ : var)
  for (int64_t c = 0; c < C; ++c) {
    const double d = r[c] - m;
    var += d * d;
  }
  var /= static_cast<double>(C);
  const float mf = static_cast<float>(m);
  const float rs = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
  if (y && ybf) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float v = (r[c] - mf) * rs * w[c] + b[c];
      y[c] = v;
      ybf[c] = float_to_bf16(v);
    }
  } else if (y) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) y[c] = (r[c] - mf) * rs * w[c] + b[c];
  } else {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) ybf[c] = float_to_bf16((r[c] - mf) * rs * w[c] + b[c]);
  }
  *mean = mf;
  *rstd = rs;
}

// Rows [i0, i1) of layernorm_residual_backward; partial column sums go to pw, pb, pbias (C each).
template <bool kDrop, bool kBranch>
void layernorm_residual_backward_rows(float* dx, float* dbranch, float* pw, float* pb,
                                      float* pbias, const float* dy, const float* x,
                                      const float* w, const float* mean, const float* rstd,
                                      int64_t i0, int64_t i1, int64_t C, float p, uint64_t seed) {
  std::fill_n(pw, C, 0.0f);
  std::fill_n(pb, C, 0.0f);
  std::fill_n(pbias, C, 0.0f);
  for (int64_t i = i0; i < i1; ++i) {
    const float* xi = x + i * C;
    const float* gi = dy + i * C;
    float* dxi = dx + i * C;
    float* dbi = kBranch ? dbranch + i * C : nullptr;
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
    const uint64_t id0 = static_cast<uint64_t>(i * C);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      // y = norm * w + b, norm = (x - mean) * rstd
      const float norm = (xi[c] - m) * rs;
      const float d = dxi[c] + (w[c] * gi[c] - a - norm * bb) * rs;
      dxi[c] = d;
      pw[c] += norm * gi[c];
      pb[c] += gi[c];
      // x = res_in + drop(branch + bias)
      float g = d;
      if constexpr (kDrop) g *= dropout_scale(seed, id0 + static_cast<uint64_t>(c), p);
      if constexpr (kBranch) dbi[c] = g;
      pbias[c] += g;
    }
  }
}

}  // namespace

void residual_layernorm_forward(std::span<float> res_out, std::span<float> y,
                                std::span<uint16_t> y_bf, std::span<float> mean,
                                std::span<float> rstd,
                                std::span<const float> res_in, std::span<const float> branch,
                                std::span<const float> bias, std::span<const float> w,
                                std::span<const float> b, int64_t N, int64_t C, float eps,
                                float dropout_p, uint64_t seed) {
  check_size(res_out, N * C, "residual_layernorm res_out");
  LLMFT_CHECK(!y.empty() || !y_bf.empty(), "residual_layernorm: no output");
  if (!y.empty()) check_size(y, N * C, "residual_layernorm y");
  if (!y_bf.empty()) check_size(y_bf, N * C, "residual_layernorm y_bf");
  check_size(res_in, N * C, "residual_layernorm res_in");
  check_size(branch, N * C, "residual_layernorm branch");
  check_size(mean, N, "residual_layernorm mean");
  check_size(rstd, N, "residual_layernorm rstd");
  check_size(w, C, "residual_layernorm w");
  check_size(b, C, "residual_layernorm b");
  if (!bias.empty()) check_size(bias, C, "residual_layernorm bias");
  LLMFT_CHECK(dropout_p >= 0.0f && dropout_p < 1.0f, "dropout p={}", dropout_p);
  auto* row = &residual_layernorm_row<false, false>;
  if (!bias.empty() && dropout_p > 0.0f) row = &residual_layernorm_row<true, true>;
  else if (!bias.empty()) row = &residual_layernorm_row<true, false>;
  else if (dropout_p > 0.0f) row = &residual_layernorm_row<false, true>;
#pragma omp parallel for if (N * C >= kParallelMin)
  for (int64_t i = 0; i < N; ++i)
    row(res_out.data() + i * C, y.empty() ? nullptr : y.data() + i * C,
        y_bf.empty() ? nullptr : y_bf.data() + i * C, mean.data() + i, rstd.data() + i,
        res_in.data() + i * C, branch.data() + i * C, bias.data(), w.data(), b.data(), C, eps,
        dropout_p, seed, static_cast<uint64_t>(i * C));
}

int64_t layernorm_residual_backward_scratch_size(int64_t N, int64_t C) {
  return column_sum_scratch_size(N, C, 3);
}

void layernorm_residual_backward(std::span<float> dx, std::span<float> dbranch,
                                 std::span<float> dbias, std::span<float> dw,
                                 std::span<float> db, std::span<float> scratch,
                                 std::span<const float> dy, std::span<const float> x,
                                 std::span<const float> w, std::span<const float> mean,
                                 std::span<const float> rstd, int64_t N, int64_t C,
                                 float dropout_p, uint64_t seed) {
  check_size(dx, N * C, "layernorm_residual dx");
  check_size(dy, N * C, "layernorm_residual dy");
  check_size(x, N * C, "layernorm_residual x");
  check_size(w, C, "layernorm_residual w");
  check_size(mean, N, "layernorm_residual mean");
  check_size(rstd, N, "layernorm_residual rstd");
  check_size(scratch, layernorm_residual_backward_scratch_size(N, C), "layernorm_residual scratch");
  if (!dbranch.empty()) check_size(dbranch, N * C, "layernorm_residual dbranch");
  if (!dbias.empty()) check_size(dbias, C, "layernorm_residual dbias");
  if (!dw.empty()) check_size(dw, C, "layernorm_residual dw");
  if (!db.empty()) check_size(db, C, "layernorm_residual db");
  LLMFT_CHECK(dropout_p >= 0.0f && dropout_p < 1.0f, "dropout p={}", dropout_p);
  auto* rows = &layernorm_residual_backward_rows<false, false>;
  if (dropout_p > 0.0f && !dbranch.empty()) rows = &layernorm_residual_backward_rows<true, true>;
  else if (dropout_p > 0.0f) rows = &layernorm_residual_backward_rows<true, false>;
  else if (!dbranch.empty()) rows = &layernorm_residual_backward_rows<false, true>;
  const int64_t nchunks = (N + kSumRows - 1) / kSumRows;
  float* part = scratch.data();  // (nchunks, 3, C): dw, db, dbias partials of each chunk
  const int64_t kBlock = 256;
  const int64_t nblocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel if (N * C >= kParallelMin)
  {
#pragma omp for schedule(static)
    for (int64_t k = 0; k < nchunks; ++k) {
      float* pk = part + k * 3 * C;
      rows(dx.data(), dbranch.data(), pk, pk + C, pk + 2 * C, dy.data(), x.data(), w.data(),
           mean.data(), rstd.data(), k * kSumRows, std::min(N, (k + 1) * kSumRows), C, dropout_p,
           seed);
    }
    // Chunk partials in chunk order, threads split the columns.
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
      float accw[kBlock] = {}, accb[kBlock] = {}, accbias[kBlock] = {};
      for (int64_t k = 0; k < nchunks; ++k) {
        const float* pk = part + k * 3 * C;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) {
          accw[c - c0] += pk[c];
          accb[c - c0] += pk[C + c];
          accbias[c - c0] += pk[2 * C + c];
        }
      }
      for (int64_t c = c0; c < c1; ++c) {
        if (!dw.empty()) dw[c] += accw[c - c0];
        if (!db.empty()) db[c] += accb[c - c0];
        if (!dbias.empty()) dbias[c] += accbias[c - c0];
      }
    }
  }
}

}  // namespace llmft::kernels
