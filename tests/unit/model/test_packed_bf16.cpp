// The generation bf16 matmul (packed_bf16.h) against a double-precision product of the same
// bf16-rounded inputs, over ragged shapes (odd K, partial panels, every row-tile remainder), and
// its row independence: a row's output is bit for bit the same whatever rows surround it.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "llmft/model/kernels/packed_bf16.h"
#include "llmft/model/kernels/bf16.h"
#include "test_util.h"

using namespace llmft;
namespace k = llmft::kernels;
using namespace llmft::kernels;

namespace {

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

float rounded(float x) { return k::bf16_to_float(k::float_to_bf16(x)); }

// Both kernels of the run-time choice (bf16_native()): the native one where the CPU has it.
std::vector<bool> paths() {
  return k::bf16_native() ? std::vector<bool>{true, false} : std::vector<bool>{false};
}
struct Path {
  explicit Path(bool native) { k::set_bf16_native(native); }
  ~Path() { k::set_bf16_native(true); }
};

}  // namespace

TEST(PackedBf16, LinearEqualsDoubleProductOfRoundedInputs) {
  for (const bool native : paths()) {
  const Path path(native);
  for (const auto layout : {k::WeightLayout::kInOut, k::WeightLayout::kOutIn}) {
    for (const int64_t K : {1, 7, 64, 131}) {
      for (const int64_t N : {1, 63, 64, 65, 200}) {
        const auto w = randn(static_cast<size_t>(K * N), static_cast<uint32_t>(K * 1000 + N));
        const auto bias = randn(static_cast<size_t>(N), 5);
        const PackedBf16 pw(w, K, N, layout);
        ASSERT_EQ(pw.panels(), (N + 63) / 64);
        for (const int64_t M : {1, 2, 5, 6, 7, 13}) {
          const auto x = randn(static_cast<size_t>(M * K), static_cast<uint32_t>(M));
          std::vector<k::bf16> a(static_cast<size_t>(M * bf16_row_stride(K)));
          round_rows_bf16(a, x, M, K);
          for (const bool with_bias : {false, true}) {
            std::vector<float> out(static_cast<size_t>(M * N), NAN);
            bf16_linear(out, a, pw, with_bias ? std::span<const float>(bias) : std::span<const float>{},
                        M);
            std::vector<double> got(out.begin(), out.end()), want(static_cast<size_t>(M * N));
            for (int64_t r = 0; r < M; ++r)
              for (int64_t n = 0; n < N; ++n) {
                double s = with_bias ? bias[static_cast<size_t>(n)] : 0.0;
                for (int64_t i = 0; i < K; ++i) {
                  const float wi = layout == k::WeightLayout::kInOut ? w[static_cast<size_t>(i * N + n)]
                                                                     : w[static_cast<size_t>(n * K + i)];
                  s += static_cast<double>(rounded(x[static_cast<size_t>(r * K + i)])) * rounded(wi);
                }
                want[static_cast<size_t>(r * N + n)] = s;
              }
            // Exact bf16 products summed in fp32: error ~K * 2^-24 * sum|terms| (<= ~131 * 6e-8
            // * 131 for N(0,1) inputs, ~1e-3 worst case, ~1e-5 typical); 1e-4 relative + 2e-3
            // absolute still fails on any wrong term (each term is ~1).
            EXPECT_TRUE(test::all_close(got, want, 1e-4, 2e-3))
                << "K=" << K << " N=" << N << " M=" << M << " bias=" << with_bias
                << " native=" << native;
          }
        }
      }
    }
  }
  }
}

TEST(PackedBf16, RowResultsDoNotDependOnTheOtherRows) {
  for (const bool native : paths()) {
  const Path path(native);
  const int64_t K = 96, N = 130, M = 17;  // 17 rows: two full tiles of 6 and a tile of 5
  const auto w = randn(static_cast<size_t>(K * N), 1);
  const auto x = randn(static_cast<size_t>(M * K), 2);
  const PackedBf16 pw(w, K, N, k::WeightLayout::kInOut);
  std::vector<k::bf16> a(static_cast<size_t>(M * K));
  round_rows_bf16(a, x, M, K);
  std::vector<float> all(static_cast<size_t>(M * N));
  bf16_linear(all, a, pw, {}, M);
  for (int64_t r = 0; r < M; ++r) {
    std::vector<float> one(static_cast<size_t>(N));
    bf16_linear(one, std::span<const k::bf16>(a).subspan(static_cast<size_t>(r * K)), pw, {}, 1);
    const std::vector<float> row(all.begin() + r * N, all.begin() + (r + 1) * N);
    EXPECT_EQ(one, row) << "row " << r << " native " << native;  // bitwise
  }
  }
}

TEST(PackedBf16, RoundRowsPadsOddWidthsWithZero) {
  const auto x = randn(3 * 5, 9);
  std::vector<k::bf16> a(3 * 6, 0xffff);
  round_rows_bf16(a, x, 3, 5);
  for (int r = 0; r < 3; ++r) {
    for (int i = 0; i < 5; ++i) EXPECT_EQ(a[r * 6 + i], k::float_to_bf16(x[r * 5 + i]));
    EXPECT_EQ(a[r * 6 + 5], 0);
  }
}
