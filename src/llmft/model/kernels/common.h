// Shared helpers for the kernels: size checks (always on, outside hot loops), the threshold
// below which a parallel region costs more than it saves, and the counter-based dropout mask.
#pragma once

#include <cstdint>
#include <span>

#include "llmft/core/error.h"

namespace llmft::kernels {

// Work (in elements touched) under which we stay single-threaded.
inline constexpr int64_t kParallelMin = 1 << 14;

// x[i] = v for all i, split over the threads when large (gradient buffers of hundreds of MB,
// cleared every step: one thread alone is bound by its own bandwidth, a tenth of the machine's).
inline void fill(std::span<float> x, float v) {
  const auto n = static_cast<int64_t>(x.size());
  float* p = x.data();
#pragma omp parallel for simd schedule(static) if (n >= 16 * kParallelMin)
  for (int64_t i = 0; i < n; ++i) p[i] = v;
}

// Fused backward kernels sum columns (bias and LayerNorm weight gradients) in fixed chunks of
// kSumRows rows, then add the chunk partials in chunk order: the result does not depend on the
// thread count, and one parallel region does both. Scratch floats for `nsums` sums of `cols`
// columns over N rows:
inline constexpr int64_t kSumRows = 32;
inline int64_t column_sum_scratch_size(int64_t N, int64_t cols, int64_t nsums) {
  return (N + kSumRows - 1) / kSumRows * cols * nsums;
}

// Every kernel checks its spans are large enough before doing any work (an exception cannot
// leave an OpenMP region).
template <typename T>
inline void check_size(std::span<T> s, int64_t need, const char* what) {
  LLMFT_CHECK(static_cast<int64_t>(s.size()) >= need, "{} has {} elements, need {}", what,
              s.size(), need);
}

// Packed sequences: sequence s covers rows [offsets[s], offsets[s+1]).
inline void check_seq_offsets(std::span<const int64_t> offsets, int64_t N) {
  LLMFT_CHECK(offsets.size() >= 2 && offsets.front() == 0 && offsets.back() == N,
              "attention offsets must run from 0 to N={}", N);
  for (size_t s = 1; s < offsets.size(); ++s)
    LLMFT_CHECK(offsets[s] >= offsets[s - 1], "attention offsets decrease at {}", s);
}

// Dropout without stored masks: element i of site `seed` is kept iff hash(seed, i) >= p.
// Forward and backward recompute the same mask, so nothing is kept between them.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
// 1/(1-p) when kept, 0 when dropped.
inline float dropout_scale(uint64_t seed, uint64_t i, float p) {
  const float u = static_cast<float>(mix64(seed ^ mix64(i)) >> 40) * (1.0f / 16777216.0f);
  return u >= p ? 1.0f / (1.0f - p) : 0.0f;
}

}  // namespace llmft::kernels
