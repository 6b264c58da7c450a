// bf16 conversion edge cases against an independent rounding reference; gemm_bf16 (native and
// portable paths) against double-precision products of the same bf16 values; the bf16 matmul
// overloads against the fp32 matmul on bf16-representable inputs.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "llmft/model/kernels/bf16.h"
#include "llmft/model/kernels/matmul.h"
#include "test_util.h"

namespace llmft::kernels {
namespace {

using llmft::test::all_close;
using VF = std::vector<float>;
using VB = std::vector<bf16>;

float from_bits(uint32_t u) { return std::bit_cast<float>(u); }
uint32_t to_bits(float x) { return std::bit_cast<uint32_t>(x); }

// Independent reference: the two bf16 neighbours of a finite x, compared in double; ties go to
// the even one. The upper neighbour of the largest finite bf16 is inf (value 2^128).
bf16 reference_round(float x) {
  const uint32_t u = to_bits(x);
  const uint32_t lo = u & 0xffff0000u;
  const uint32_t exp = (lo >> 23) & 0xffu;
  const double ulp = std::ldexp(1.0, (exp == 0 ? 1 : static_cast<int>(exp)) - 127 - 7);
  const double ax = std::fabs(static_cast<double>(x));
  const double alo = std::fabs(static_cast<double>(from_bits(lo)));
  const double dlo = ax - alo, dhi = alo + ulp - ax;
  const bf16 l = static_cast<bf16>(lo >> 16);
  if (dlo < dhi) return l;
  if (dhi < dlo) return static_cast<bf16>(l + 1);
  return (l & 1) ? static_cast<bf16>(l + 1) : l;
}

TEST(Bf16Convert, EdgeCases) {
  struct Case {
    uint32_t in;
    bf16 out;
  };
  const Case cases[] = {
      {0x3f800000u, 0x3f80},  // 1.0 exact
      {0x3f808000u, 0x3f80},  // 1 + 2^-8: tie, to even (down)
      {0x3f818000u, 0x3f82},  // tie, to even (up)
      {0x3f808001u, 0x3f81},  // just above the tie
      {0x3f807fffu, 0x3f80},  // just below the tie
      {0xbf808000u, 0xbf80},  // negative tie
      {0x00000000u, 0x0000},  // +0
      {0x80000000u, 0x8000},  // -0 keeps its sign
      {0x7f800000u, 0x7f80},  // +inf
      {0xff800000u, 0xff80},  // -inf
      {0x7f7fffffu, 0x7f80},  // max finite float rounds to inf
      {0x7f7f7fffu, 0x7f7f},  // stays max finite bf16
      {0x00012345u, 0x0001},  // denormal kept (torch does not flush)
      {0x0000ffffu, 0x0001},  // denormal rounds up to the smallest bf16 denormal
      {0x00008000u, 0x0000},  // denormal tie to even (zero)
      {0x80018000u, 0x8002},  // negative denormal tie to even (up)
      {0x007fffffu, 0x0080},  // largest denormal rounds to the smallest normal
  };
  for (const Case& c : cases) {
    EXPECT_EQ(float_to_bf16(from_bits(c.in)), c.out) << std::hex << c.in;
    // The vector path (with a 1-element masked tail) gives the same.
    VB out(1);
    VF in{from_bits(c.in)};
    to_bf16(out, in);
    EXPECT_EQ(out[0], c.out) << std::hex << c.in;
  }
  EXPECT_EQ(to_bits(bf16_to_float(0x3f81)), 0x3f810000u);
  EXPECT_EQ(to_bits(bf16_to_float(0x8000)), 0x80000000u);
}

TEST(Bf16Convert, NanStaysQuietNan) {
  // Quiet, signalling (payload only in the low bits, which truncation would turn into inf),
  // negative.
  for (uint32_t u : {0x7fc00000u, 0x7f800001u, 0x7f80ffffu, 0xff800001u, 0x7fffffffu}) {
    const bf16 b = float_to_bf16(from_bits(u));
    EXPECT_TRUE(std::isnan(bf16_to_float(b))) << std::hex << u;
    EXPECT_TRUE(b & 0x40) << "quiet bit, " << std::hex << u;
    EXPECT_EQ(b & 0x8000, (u >> 16) & 0x8000) << "sign, " << std::hex << u;
    VB out(1);
    VF in{from_bits(u)};
    to_bf16(out, in);
    EXPECT_EQ(out[0], b);
  }
}

// The vector paths process blocks of 32 and 16: special values at every position of a block,
// among ordinary values, convert exactly as the scalar rounding does.
TEST(Bf16Convert, SpecialValuesInsideVectorBlocks) {
  const uint32_t specials[] = {0x00012345u, 0x80000001u, 0x7f800001u, 0xffc00000u,
                               0x7f800000u, 0x7f7fffffu, 0x3f808000u, 0x80000000u};
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (uint32_t sp : specials) {
    for (size_t pos = 0; pos < 70; pos += 3) {
      VF in(70);
      for (auto& x : in) x = d(rng);
      in[pos] = from_bits(sp);
      VB out(in.size());
      to_bf16(out, in);
      for (size_t i = 0; i < in.size(); ++i)
        ASSERT_EQ(out[i], float_to_bf16(in[i])) << "special " << std::hex << sp << " at " << pos;
    }
  }
}

// Random bit patterns (all exponents, denormals included) against the reference; sizes cover the
// vector body, masked tails and the multithreaded path.
TEST(Bf16Convert, RandomBitsMatchReferenceAndRoundTrip) {
  std::mt19937 rng(7);
  for (size_t n : {size_t{1}, size_t{15}, size_t{17}, size_t{1000}, size_t{300001}}) {
    VF in(n);
    for (auto& x : in) {
      do x = from_bits(static_cast<uint32_t>(rng()));
      while (!std::isfinite(x));
    }
    VB out(n);
    to_bf16(out, in);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(out[i], reference_round(in[i])) << "i=" << i << " bits=" << std::hex << to_bits(in[i]);
      ASSERT_EQ(out[i], float_to_bf16(in[i]));
    }
    VF back(n);
    from_bf16(back, out);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(to_bits(back[i]), static_cast<uint32_t>(out[i]) << 16);
  }
}

TEST(Bf16Convert, RejectsShortOutput) {
  VF in(5);
  VB out(4);
  EXPECT_ANY_THROW(to_bf16(out, in));
  VF back(3);
  VB src(4);
  EXPECT_ANY_THROW(from_bf16(back, src));
}

// ---------------------------------------------------------------------------------------------
// gemm_bf16

VB rand_bf16(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  VB v(n);
  for (auto& x : v) x = float_to_bf16(d(rng));
  return v;
}

struct GemmCase {
  bool ta, tb;
  int64_t M, N, K, pad_a, pad_b, pad_c;
};

// Runs gemm_bf16 on one case with the current path and compares with a double reference built
// from the same bf16 values.
void check_gemm(const GemmCase& g, float beta, uint32_t seed) {
  const int64_t lda = (g.ta ? g.M : g.K) + g.pad_a, ldb = (g.tb ? g.K : g.N) + g.pad_b,
                ldc = g.N + g.pad_c;
  const VB A = rand_bf16(static_cast<size_t>((g.ta ? g.K : g.M) * lda), seed);
  const VB B = rand_bf16(static_cast<size_t>((g.tb ? g.N : g.K) * ldb), seed + 1);
  VF C(static_cast<size_t>(g.M * ldc));
  {
    std::mt19937 rng(seed + 2);
    std::normal_distribution<float> d(0.0f, 1.0f);
    // beta = 0 must overwrite: start from NaN (padding columns from a number they must keep).
    for (size_t c = 0; c < C.size(); ++c)
      C[c] = static_cast<int64_t>(c) % ldc >= g.N ? 7.0f
             : beta == 0.0f                       ? std::numeric_limits<float>::quiet_NaN()
                                                  : d(rng);
  }
  VF ref(C.size()), got = C;
  double max_abs_sum = 0;
  for (int64_t i = 0; i < g.M; ++i) {
    for (int64_t j = 0; j < ldc; ++j) {
      const size_t c = static_cast<size_t>(i * ldc + j);
      if (j >= g.N) {  // padding columns must stay untouched
        ref[c] = C[c];
        continue;
      }
      double s = beta == 0.0f ? 0.0 : C[c], abs_sum = std::fabs(s);
      for (int64_t k = 0; k < g.K; ++k) {
        const double a = bf16_to_float(A[static_cast<size_t>(g.ta ? k * lda + i : i * lda + k)]);
        const double b = bf16_to_float(B[static_cast<size_t>(g.tb ? j * ldb + k : k * ldb + j)]);
        s += a * b;
        abs_sum += std::fabs(a * b);
      }
      ref[c] = static_cast<float>(s);
      max_abs_sum = std::max(max_abs_sum, abs_sum);
    }
  }
  gemm_bf16(g.ta, g.tb, g.M, g.N, g.K, A.data(), lda, B.data(), ldb, beta, got.data(), ldc);
  // Products of bf16 values are exact in fp32, so the only error is fp32 summation of K + 1
  // terms: at most (K + 1) * 2^-24 * sum|terms| (the classical worst-case bound), plus the final
  // rounding (rtol 2^-23). An output or accumulator held in bf16 would be off by ~2^-9 relative:
  // far outside.
  const double atol = static_cast<double>(g.K + 1) * std::ldexp(1.0, -24) * max_abs_sum;
  EXPECT_TRUE(all_close(got, ref, std::ldexp(1.0, -23), atol))
      << "ta=" << g.ta << " tb=" << g.tb << " M=" << g.M << " N=" << g.N << " K=" << g.K
      << " beta=" << beta << " native=" << bf16_native();
}

class GemmBf16 : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { set_bf16_native(GetParam()); }
  void TearDown() override { set_bf16_native(true); }
};

TEST_P(GemmBf16, AllTransposesBetasAndOddShapes) {
  const GemmCase shapes[] = {
      {false, false, 1, 1, 1, 0, 0, 0},    {false, false, 1, 37, 5, 0, 0, 0},
      {false, false, 7, 17, 33, 3, 0, 0},  {false, false, 13, 50, 129, 0, 5, 2},
      {false, false, 64, 48, 64, 0, 0, 0}, {false, false, 3, 100, 300, 1, 1, 1},
      {false, false, 33, 31, 1, 0, 0, 0},  {false, false, 1, 300, 257, 2, 3, 1},
      {false, false, 4, 513, 260, 0, 0, 0},
  };
  uint32_t seed = 1;
  for (const GemmCase& s : shapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (float beta : {0.0f, 1.0f}) {
          GemmCase g = s;
          g.ta = ta;
          g.tb = tb;
          check_gemm(g, beta, seed += 3);
        }
}

// Shapes past the portable path's block sizes (M 1024, N 2048, K 512) and the model's layouts.
TEST_P(GemmBf16, BlockBoundaries) {
  check_gemm({false, true, 3, 2100, 600, 0, 0, 0}, 1.0f, 11);
  check_gemm({true, false, 1030, 5, 520, 0, 0, 0}, 0.0f, 12);
  check_gemm({true, false, 40, 24, 1100, 0, 0, 0}, 1.0f, 13);
}

TEST_P(GemmBf16, EmptyDimensions) {
  VB A(4, 0x3f80), B(4, 0x3f80);
  VF C{5.0f, 5.0f, 5.0f, 5.0f};
  gemm_bf16(false, false, 2, 2, 0, A.data(), 1, B.data(), 2, 1.0f, C.data(), 2);
  EXPECT_EQ(C, (VF{5.0f, 5.0f, 5.0f, 5.0f}));  // K = 0, beta = 1: unchanged
  gemm_bf16(false, false, 2, 2, 0, A.data(), 1, B.data(), 2, 0.0f, C.data(), 2);
  EXPECT_EQ(C, (VF{0.0f, 0.0f, 0.0f, 0.0f}));  // K = 0, beta = 0: zeroed
  gemm_bf16(false, false, 0, 2, 2, A.data(), 2, B.data(), 2, 0.0f, C.data(), 2);  // M = 0: no-op
  EXPECT_ANY_THROW(gemm_bf16(false, false, 2, 2, 2, A.data(), 1, B.data(), 2, 0.0f, C.data(), 2));
  EXPECT_ANY_THROW(gemm_bf16(false, false, 2, 2, 2, A.data(), 2, B.data(), 2, 0.5f, C.data(), 2));
}

INSTANTIATE_TEST_SUITE_P(Paths, GemmBf16, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "Native" : "Portable"; });

TEST(GemmBf16Switch, ForcingThePortablePath) {
  const bool cpu = bf16_native();
  set_bf16_native(false);
  EXPECT_FALSE(bf16_native());
  set_bf16_native(true);
  EXPECT_EQ(bf16_native(), cpu);
  // The native path runs whenever the CPU has AVX512-BF16 (unless switched off by the user).
  const char* env = std::getenv("LLMFT_BF16_NATIVE");
  const char* isa = std::getenv("ONEDNN_MAX_CPU_ISA");
  if ((env == nullptr || std::string(env) != "0") && isa == nullptr) {
    EXPECT_EQ(cpu, __builtin_cpu_supports("avx512bf16") != 0);
  }
}

// ---------------------------------------------------------------------------------------------
// matmul overloads: bf16 operands vs the fp32 matmul on the same (bf16-representable) values.

VF widen(const VB& v) {
  VF f(v.size());
  from_bf16(f, v);
  return f;
}
VF randf(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  VF v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Both sides accumulate the same exact products in fp32, in different orders: differences are
// a few fp32 roundings of sums of ~K terms of size ~1 (|sum| ~ sqrt(K)).
constexpr double kMatRtol = 1e-5, kMatAtol = 1e-4;

class MatmulBf16 : public ::testing::TestWithParam<std::tuple<bool, WeightLayout>> {
 protected:
  void SetUp() override { set_bf16_native(std::get<0>(GetParam())); }
  void TearDown() override { set_bf16_native(true); }
};

TEST_P(MatmulBf16, ForwardMatchesFp32) {
  const WeightLayout layout = std::get<1>(GetParam());
  for (const auto& d : {std::tuple<int64_t, int64_t, int64_t>{1, 16, 48}, {7, 33, 17},
                        {45, 128, 96}}) {
    const int64_t N = std::get<0>(d), IC = std::get<1>(d), OC = std::get<2>(d);
    const VB inp = rand_bf16(static_cast<size_t>(N * IC), 1), w = rand_bf16(static_cast<size_t>(IC * OC), 2);
    const VF bias = randf(static_cast<size_t>(OC), 3);
    for (bool with_bias : {false, true}) {
      const std::span<const float> b = with_bias ? std::span<const float>(bias) : std::span<const float>();
      VF out(static_cast<size_t>(N * OC), std::numeric_limits<float>::quiet_NaN()), ref(out.size());
      matmul_forward(out, inp, w, b, N, IC, OC, layout);
      matmul_forward(ref, widen(inp), widen(w), b, N, IC, OC, layout);
      EXPECT_TRUE(all_close(out, ref, kMatRtol, kMatAtol)) << N << "x" << IC << "x" << OC;
    }
  }
}

TEST_P(MatmulBf16, BackwardMatchesFp32AndAccumulates) {
  const WeightLayout layout = std::get<1>(GetParam());
  for (const auto& d : {std::tuple<int64_t, int64_t, int64_t>{1, 16, 48}, {7, 33, 17},
                        {45, 128, 96}}) {
    const int64_t N = std::get<0>(d), IC = std::get<1>(d), OC = std::get<2>(d);
    const VB inp = rand_bf16(static_cast<size_t>(N * IC), 4), w = rand_bf16(static_cast<size_t>(IC * OC), 5);
    const VF dout_f32 = randf(static_cast<size_t>(N * OC), 6);
    VB dout(dout_f32.size());
    to_bf16(dout, dout_f32);
    // Start from non-zero gradients: the overloads accumulate.
    VF dinp = randf(static_cast<size_t>(N * IC), 7), dw = randf(static_cast<size_t>(IC * OC), 8),
       db = randf(static_cast<size_t>(OC), 9);
    VF rdinp = dinp, rdw = dw, rdb = db;
    matmul_backward(dinp, dw, db, dout_f32, dout, inp, w, N, IC, OC, layout);
    // Reference: fp32 matmul on the bf16 dout for dinp/dw, on the fp32 dout for dbias.
    matmul_backward(rdinp, rdw, {}, widen(dout), widen(inp), widen(w), N, IC, OC, layout);
    matmul_backward({}, {}, rdb, dout_f32, {}, {}, N, IC, OC, layout);
    EXPECT_TRUE(all_close(dinp, rdinp, kMatRtol, kMatAtol)) << "dinp " << N << "x" << IC << "x" << OC;
    EXPECT_TRUE(all_close(dw, rdw, kMatRtol, kMatAtol)) << "dw " << N << "x" << IC << "x" << OC;
    // The same fp32 summation in the same order: identical.
    EXPECT_TRUE(all_close(db, rdb, 0.0, 0.0)) << "dbias";
    // Skipped outputs: only dw requested.
    VF dw2(dw.size(), 0.0f), rdw2(dw.size(), 0.0f);
    matmul_backward({}, dw2, {}, {}, dout, inp, {}, N, IC, OC, layout);
    matmul_backward({}, rdw2, {}, widen(dout), widen(inp), {}, N, IC, OC, layout);
    EXPECT_TRUE(all_close(dw2, rdw2, kMatRtol, kMatAtol));
  }
}

TEST(MatmulBf16Sizes, RejectsShortSpans) {
  VB inp(10), w(12);
  VF out(5);
  EXPECT_ANY_THROW(matmul_forward(out, inp, w, {}, 2, 5, 3));  // out needs 6
  VF dinp(10), dw(15), db(3), dout_f32(6);
  VB dout(6);
  EXPECT_ANY_THROW(matmul_backward(dinp, dw, db, dout_f32, dout, inp, w, 2, 5, 3));  // w short
  EXPECT_ANY_THROW(matmul_backward({}, {}, db, {}, dout, inp, w, 2, 5, 3));  // no fp32 dout
}

INSTANTIATE_TEST_SUITE_P(
    Paths, MatmulBf16,
    ::testing::Combine(::testing::Values(true, false),
                       ::testing::Values(WeightLayout::kInOut, WeightLayout::kOutIn)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param) ? "Native" : "Portable") +
             (std::get<1>(info.param) == WeightLayout::kInOut ? "InOut" : "OutIn");
    });

}  // namespace
}  // namespace llmft::kernels
