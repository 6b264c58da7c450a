// What every benchmark needs: a wall clock, medians, the process's peak memory, and the
// machine's same-run limits (matrix-product peak, memory bandwidth) that figures are set against.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "llmft/model/config.h"
#include "llmft/model/kernels/bf16.h"
#include "llmft/model/kernels/matmul.h"

namespace llmft::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Peak resident memory of this process so far (ru_maxrss is in KiB).
inline double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}
inline double peak_rss_gib() { return peak_rss_mb() / 1024.0; }

// Useful matrix-product FLOPs of one forward pass (bench_recipe.cpp's file comment): `tokens` rows
// through the blocks, the output head on `targets` rows, and causal attention over sequences
// whose n(n+1) sum to `attn_pairs2`.
inline double forward_flops(const Gpt2Config& cfg, double tokens, double targets,
                            double attn_pairs2) {
  const auto L = static_cast<double>(cfg.L), C = static_cast<double>(cfg.C),
             V = static_cast<double>(cfg.V);
  return 2 * 12 * L * C * C * tokens + 2 * V * C * targets + 2 * L * C * attn_pairs2;
}

// The matrix-product peak: OpenBLAS sgemm (fp32) or llmft's gemm_bf16 at 450 x 1024 x 4096 (a
// recipe batch's rows times an MLP matrix), GFLOP/s, median of `reps` after one warm-up.
inline double gemm_peak_gflops(bool bf16, int reps = 5) {
  constexpr int64_t M = 450, K = 1024, N = 4096;
  std::vector<float> a(M * K), b(K * N), c(M * N);
  for (size_t i = 0; i < a.size(); ++i) a[i] = 0.01f * static_cast<float>(i % 97);
  for (size_t i = 0; i < b.size(); ++i) b[i] = 0.02f * static_cast<float>(i % 89);
  std::vector<kernels::bf16> ah(a.size()), bh(b.size());
  kernels::to_bf16(ah, a);
  kernels::to_bf16(bh, b);
  std::vector<double> t;
  for (int r = 0; r < reps + 1; ++r) {
    const double t0 = now_s();
    if (bf16) {
      kernels::gemm_bf16(false, false, M, N, K, ah.data(), K, bh.data(), N, 0.0f, c.data(), N);
    } else {
      kernels::sgemm(false, false, M, N, K, a.data(), K, b.data(), N, 0.0f, c.data(), N);
    }
    if (r > 0) t.push_back(now_s() - t0);
  }
  return 2.0 * M * K * N / median(t) / 1e9;
}

// Memory read bandwidth, GB/s: every thread sums its share of a 1 GiB buffer (far beyond any
// cache), median of `reps` after one warm-up pass (which also faults the pages in).
inline double read_bandwidth_gbs(int reps = 5) {
  std::vector<float> buf(size_t{1} << 28, 1.0f);
  std::vector<double> t;
  volatile float sink = 0;
  for (int r = 0; r < reps + 1; ++r) {
    const double t0 = now_s();
    float sum = 0;
#pragma omp parallel for simd reduction(+ : sum) schedule(static)
    for (size_t i = 0; i < buf.size(); ++i) sum += buf[i];
    if (r > 0) t.push_back(now_s() - t0);
    sink = sink + sum;
  }
  return static_cast<double>(buf.size() * sizeof(float)) / median(t) / 1e9;
}

}  // namespace llmft::bench
