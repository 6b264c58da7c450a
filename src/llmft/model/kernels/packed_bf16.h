// The bf16 matrix product of generation (Precision::kBf16, Pass::kDecode): weights rounded to bf16 once and packed
// in the layout VDPBF16PS reads, activations rounded per call, products exact and accumulated in
// fp32. Each output element sums its input pairs in the same order whatever the row count, so a
// row's result never depends on the batch it is computed in (cached decode == full recompute,
// bit for bit). Checked against a double-precision product in tests/unit/model.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>

#include "llmft/model/kernels/bf16.h"
#include "llmft/model/kernels/matmul.h"

namespace llmft::kernels {

// W (K, N) in bf16, output columns in panels of 64, input rows in pairs:
// element (k, n) at ((n / 64 * K2 + k / 2) * 64 + n % 64) * 2 + k % 2, K2 = ceil(K / 2); the odd
// K's last pair and the last panel's missing columns are zero. 64-byte aligned.
class PackedBf16 {
 public:
  static constexpr int64_t kPanel = 64;
  PackedBf16() = default;
  // w: (K, N) for kInOut (GPT-2's Conv1D), (N, K) for kOutIn (the output head). Multithreaded.
  PackedBf16(std::span<const float> w, int64_t K, int64_t N, WeightLayout layout);
  int64_t in() const { return K_; }
  int64_t out() const { return N_; }
  int64_t pairs() const { return K2_; }
  int64_t panels() const { return (N_ + kPanel - 1) / kPanel; }
  // (K2, 64, 2) of panel p.
  const bf16* panel(int64_t p) const { return data_.get() + p * K2_ * kPanel * 2; }
  int64_t bytes() const { return panels() * K2_ * kPanel * 2 * 2; }

 private:
  struct Free {
    void operator()(bf16* p) const { std::free(p); }
  };
  int64_t K_ = 0, N_ = 0, K2_ = 0;
  std::unique_ptr<bf16[], Free> data_;
};

// Row stride (in bf16) of the rounded activations bf16_linear reads: K rounded up to even.
inline int64_t bf16_row_stride(int64_t K) { return (K + 1) / 2 * 2; }

// a (M, bf16_row_stride(K)) = x (M, K) rounded to bf16 (to nearest even), the odd K's pad zero.
void round_rows_bf16(std::span<bf16> a, std::span<const float> x, int64_t M, int64_t K);

// out (M, N) = a (M, K) @ W + bias; a as round_rows_bf16 writes it (row stride
// bf16_row_stride(K)); bias (N) or empty. Threads split the panels. AVX512-BF16 where
// bf16_native() (bf16.h) says so, whatever the build's -march; else the same products widened to
// fp32 (slower).
void bf16_linear(std::span<float> out, std::span<const bf16> a, const PackedBf16& w,
                 std::span<const float> bias, int64_t M);

}  // namespace llmft::kernels
