// The fused kernels (flash attention, residual + LayerNorm, bias + GELU, one-pass head +
// cross-entropy) against the double-precision references (kernels/reference.h), the new
// references' backward against central finite differences, and the fused kernels against the
// unfused fast ones they replace where both apply dropout.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "kernels/attention_unfused.h"
#include "kernels/gelu_unfused.h"
#include "kernels/reference.h"
#include "kernels/residual_unfused.h"
#include "llmft/model/kernels/attention.h"
#include "llmft/model/kernels/bf16.h"
#include "llmft/model/kernels/crossentropy.h"
#include "llmft/model/kernels/dropout.h"
#include "llmft/model/kernels/gelu.h"
#include "llmft/model/kernels/layernorm.h"
#include "llmft/model/kernels/vmath.h"
#include "test_util.h"

namespace llmft::kernels {
namespace {

using llmft::test::all_close;
using VF = std::vector<float>;
using VD = std::vector<double>;

// Float kernels against double references: float rounding over sums of up to a few hundred
// terms of O(1) values gives relative errors around 1e-6..1e-5 (as test_kernels.cpp).
constexpr double kRtol = 2e-5, kAtol = 2e-5;

VF randf(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  VF v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
VD to_d(const VF& v) { return VD(v.begin(), v.end()); }
VF to_f(const VD& v) { return VF(v.begin(), v.end()); }
double dot(const VD& a, const VD& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of a scalar function of `x` at ~`count` spread-out indices against
// `analytic`. Double precision with h = 1e-6 leaves errors ~1e-8 relative to O(1) gradients.
void fd_check(VD& x, const VD& analytic, const std::function<double()>& loss, int count = 24) {
  ASSERT_EQ(x.size(), analytic.size());
  const double h = 1e-6;
  const size_t step = std::max<size_t>(1, x.size() / count);
  for (size_t i = 0; i < x.size(); i += step) {
    const double orig = x[i];
    x[i] = orig + h;
    const double lp = loss();
    x[i] = orig - h;
    const double lm = loss();
    x[i] = orig;
    const double num = (lp - lm) / (2 * h);
    EXPECT_NEAR(analytic[i], num, 1e-6 + 1e-6 * std::fabs(num)) << "index " << i;
  }
}

// The library's conversion, to check the fused kernels' bf16 outputs bit for bit.
std::vector<uint16_t> to_bf16_copy(const VF& v) {
  std::vector<uint16_t> out(v.size());
  to_bf16(out, v);
  return out;
}

std::vector<int64_t> offsets_of(const std::vector<int64_t>& lens) {
  std::vector<int64_t> off{0};
  for (auto l : lens) off.push_back(off.back() + l);
  return off;
}

// logsumexp of each (row, head)'s scaled causal scores, (N, NH), in double.
VD ref_lse(const VD& qkv, const std::vector<int64_t>& off, int64_t C, int64_t NH) {
  const int64_t N = off.back(), HS = C / NH;
  VD lse(N * NH);
  for (size_t s = 0; s + 1 < off.size(); ++s)
    for (int64_t t = off[s]; t < off[s + 1]; ++t)
      for (int64_t h = 0; h < NH; ++h) {
        VD sc;
        for (int64_t t2 = off[s]; t2 <= t; ++t2) {
          double d = 0;
          for (int64_t i = 0; i < HS; ++i)
            d += qkv[t * 3 * C + h * HS + i] * qkv[t2 * 3 * C + C + h * HS + i];
          sc.push_back(d / std::sqrt(static_cast<double>(HS)));
        }
        const double m = *std::max_element(sc.begin(), sc.end());
        double sum = 0;
        for (double v : sc) sum += std::exp(v - m);
        lse[t * NH + h] = m + std::log(sum);
      }
  return lse;
}

// The scalar rounding the fused kernels write (float_to_bf16, inlined into their loops) and the
// vector conversion to_bf16 (VCVTNE2PS2BF16 where the CPU has it) give the same bits.
TEST(FusedKernels, ScalarBf16RoundingMatchesVectorConversion) {
  // Ties (both directions), denormals, the largest float (rounds to inf), infinities, NaNs.
  const std::vector<uint32_t> bits{0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x00000001u,
                                   0x807fffffu, 0x7f7fffffu, 0x7f800000u, 0xff800000u,
                                   0x7fc00000u, 0x7f800001u, 0xffffffffu, 0x00000000u};
  VF v = randf(1000, 70, 100.0f);
  for (uint32_t b : bits) v.push_back(std::bit_cast<float>(b));
  std::vector<uint16_t> mine(v.size());
  for (size_t i = 0; i < v.size(); ++i) mine[i] = float_to_bf16(v[i]);
  EXPECT_EQ(mine, to_bf16_copy(v));
}

TEST(FusedKernels, FlashAttentionMatchesReference) {
  // Lengths: a single token, several short ones, and 70 / 130 rows that cross the 64-row
  // blocks (online softmax over 2 and 3 key blocks). Head sizes 4, 12, 20 (padded to 16 and
  // 32), 64 (GPT-2's) and 128.
  const std::vector<std::vector<int64_t>> all_lens{{1}, {3, 1, 7}, {8, 17}, {70, 5}, {130}};
  for (const auto& d : {std::pair<int64_t, int64_t>{12, 3}, {36, 3}, {40, 2}, {128, 2}, {128, 1}}) {
    const int64_t C = d.first, NH = d.second;
    for (const auto& lens : all_lens) {
      for (float p : {0.0f, 0.3f}) {
        const auto off = offsets_of(lens);
        const int64_t N = off.back(), A = attention_att_size(off, NH);
        const uint64_t seed = 99;
        VF qkv = randf(N * 3 * C, 15), g = randf(N * C, 16);
        VF y(N * C), lse(N * NH), dqkv(N * 3 * C, 1.0f);
        attention_flash_forward(y, lse, qkv, off, N, C, NH, p, seed);
        VD yd(N * C), attd(A), dqkvd(N * 3 * C, 1.0);
        ref::attention_forward(yd, attd, to_d(qkv), off, N, C, NH, p, seed);
        SCOPED_TRACE(testing::Message() << "C=" << C << " NH=" << NH << " N=" << N << " p=" << p);
        EXPECT_TRUE(all_close(y, to_f(yd), kRtol, kAtol));
        // lse ~ log(T) + O(1): the same float rounding relative to a value of a few units.
        EXPECT_TRUE(all_close(lse, to_f(ref_lse(to_d(qkv), off, C, NH)), kRtol, kAtol));
        VF dbias(3 * C, 0.5f), scratch(attention_flash_backward_scratch_size(off, C));
        attention_flash_backward(dqkv, dbias, scratch, g, qkv, y, lse, off, N, C, NH, p, seed);
        ref::attention_backward(dqkvd, to_d(g), to_d(qkv), attd, off, N, C, NH, p, seed);
        // dk and dv sum up to 130 rows' contributions of O(1) terms, each through exp and the
        // dropout scale 1/0.7: float rounding reaches ~3e-5 relative on the largest of them.
        EXPECT_TRUE(all_close(dqkv, to_f(dqkvd), 5e-5, 5e-5));
        // dbias: column sums of the contributions (dqkvd started at 1.0 per element).
        VD dbiasd(3 * C, 0.5);
        for (int64_t i = 0; i < N * 3 * C; ++i) dbiasd[i % (3 * C)] += dqkvd[i] - 1.0;
        // Sums of up to 130 gradients: 10x the per-element budget.
        EXPECT_TRUE(all_close(dbias, to_f(dbiasd), 5e-4, 5e-4));
        // bias_attention_flash_forward = attention_flash_forward(qkv + bias).
        VF b = randf(3 * C, 17), qkvb = qkv, qkv2 = qkv, y2(N * C), lse2(N * NH);
        for (int64_t i = 0; i < N * 3 * C; ++i) qkv2[i] += b[i % (3 * C)];
        attention_flash_forward(y, lse, qkv2, off, N, C, NH, p, seed);
        std::vector<uint16_t> ybf(N * C);
        bias_attention_flash_forward(y2, ybf, lse2, qkvb, b, off, N, C, NH, p, seed);
        EXPECT_TRUE(all_close(qkvb, qkv2, 0, 0));
        EXPECT_TRUE(all_close(y2, y, 0, 0));
        EXPECT_EQ(ybf, to_bf16_copy(y));
        EXPECT_TRUE(all_close(lse2, lse, 0, 0));
      }
    }
  }
}

TEST(FusedKernels, FlashAttentionMatchesUnfusedKernelWithDropout) {
  // Same dropout mask as attention_forward/backward (the element counters of the (NH, T, T)
  // layout), so the unfused kernel's tests keep describing the semantics.
  const int64_t C = 128, NH = 2;
  const auto off = offsets_of({5, 64, 1, 66});
  const int64_t N = off.back(), A = attention_att_size(off, NH);
  VF qkv = randf(N * 3 * C, 21), g = randf(N * C, 22);
  for (float p : {0.1f, 0.5f}) {
    VF y_old(N * C), att(A), scratch(A), d_old(N * 3 * C, 0.0f);
    attention_forward(y_old, att, qkv, off, N, C, NH, p, 7);
    attention_backward(d_old, scratch, g, qkv, att, off, N, C, NH, p, 7);
    VF y(N * C), lse(N * NH), d(N * 3 * C, 0.0f);
    attention_flash_forward(y, lse, qkv, off, N, C, NH, p, 7);
    attention_flash_backward(d, {}, {}, g, qkv, y, lse, off, N, C, NH, p, 7);
    // Two float kernels with different summation orders: twice the float-vs-double budget.
    EXPECT_TRUE(all_close(y, y_old, 2 * kRtol, 2 * kAtol));
    EXPECT_TRUE(all_close(d, d_old, 1e-4, 1e-4));
    // A different seed changes the output: the mask is really applied.
    VF y2(N * C);
    attention_flash_forward(y2, lse, qkv, off, N, C, NH, p, 8);
    EXPECT_FALSE(all_close(y2, y, 1e-3, 1e-3));
  }
}

TEST(FusedKernels, FlashAttentionStaysInsideSequences) {
  // The second sequence's outputs must not change when the first sequence's tokens do.
  const int64_t C = 128, NH = 2;
  const std::vector<int64_t> off{0, 4, 9};
  VF qkv = randf(9 * 3 * C, 17), qkv2 = qkv;
  for (int64_t i = 0; i < 4 * 3 * C; ++i) qkv2[i] += 1.0f;
  VF y1(9 * C), y2(9 * C), lse(9 * NH);
  attention_flash_forward(y1, lse, qkv, off, 9, C, NH);
  attention_flash_forward(y2, lse, qkv2, off, 9, C, NH);
  EXPECT_TRUE(all_close(std::span<const float>(y1).subspan(4 * C),
                        std::span<const float>(y2).subspan(4 * C), 0, 0));
}

TEST(FusedKernels, ForkedSequenceMatchesItsTwoSequences) {
  // A forked sequence [prefix | first | second] gives each continuation what the unforked
  // sequence prefix + continuation gives: the same outputs, the same gradients for the
  // continuations' rows, and for the prefix the sum of both sequences' gradients. Shapes cross
  // the 64-row blocks (a second continuation that starts, or a hidden range that ends, inside a
  // block), an empty first continuation, a one-row prefix, and a sequence that does not fork.
  const int64_t C = 128, NH = 2, W = 3 * C;
  struct Shape {
    int64_t prefix, first, second;
  };
  for (const auto& shapes : std::vector<std::vector<Shape>>{
           {{70, 20, 50}}, {{3, 64, 5}, {1, 2, 3}}, {{5, 0, 4}, {40, 30, 100}}, {{9, 7, 0}}}) {
    std::vector<int64_t> flens, ulens;
    std::vector<SeqFork> forks;
    for (const Shape& f : shapes) {
      flens.push_back(f.prefix + f.first + f.second);
      forks.push_back({f.prefix, f.prefix + f.first});
      ulens.push_back(f.prefix + f.first);
      ulens.push_back(f.prefix + f.second);
    }
    const auto foff = offsets_of(flens), uoff = offsets_of(ulens);
    const int64_t N = foff.back(), U = uoff.back();
    VF qkv = randf(N * W, 31), g = randf(N * C, 32);
    // The unforked batch: each sequence's rows copied, the prefix twice. The second copy of the
    // prefix gets no output gradient, so the prefix's gradient sums the two sequences' once.
    VF uqkv(U * W), ug(U * C, 0.0f);
    std::vector<int64_t> row_of(U, -1);  // forked row of each unforked row
    for (size_t s = 0; s < shapes.size(); ++s) {
      const Shape& f = shapes[s];
      const int64_t o = foff[s], u1 = uoff[2 * s], u2 = uoff[2 * s + 1];
      for (int64_t t = 0; t < f.prefix + f.first; ++t) row_of[u1 + t] = o + t;
      for (int64_t t = 0; t < f.prefix; ++t) row_of[u2 + t] = o + t;
      for (int64_t t = 0; t < f.second; ++t)
        row_of[u2 + f.prefix + t] = o + f.prefix + f.first + t;
      for (int64_t r = u1; r < u2 + f.prefix + f.second; ++r) {
        std::copy_n(qkv.begin() + row_of[r] * W, W, uqkv.begin() + r * W);
        if (r < u2 || r >= u2 + f.prefix)
          std::copy_n(g.begin() + row_of[r] * C, C, ug.begin() + r * C);
      }
    }
    VF y(N * C), lse(N * NH), d(N * 3 * C, 0.0f), uy(U * C), ulse(U * NH), ud(U * W, 0.0f);
    attention_flash_forward(y, lse, qkv, foff, N, C, NH, 0.0f, 0, forks);
    attention_flash_backward(d, {}, {}, g, qkv, y, lse, foff, N, C, NH, 0.0f, 0, forks);
    attention_flash_forward(uy, ulse, uqkv, uoff, U, C, NH);
    attention_flash_backward(ud, {}, {}, ug, uqkv, uy, ulse, uoff, U, C, NH);
    VF want_y(N * C), want_d(N * W, 0.0f);
    for (int64_t r = 0; r < U; ++r) {
      std::copy_n(uy.begin() + r * C, C, want_y.begin() + row_of[r] * C);
      for (int64_t i = 0; i < W; ++i) want_d[row_of[r] * W + i] += ud[r * W + i];
    }
    SCOPED_TRACE(testing::Message() << "N=" << N);
    // Other key-block boundaries, so other float summation orders: twice the float budget.
    EXPECT_TRUE(all_close(y, want_y, 2 * kRtol, 2 * kAtol));
    EXPECT_TRUE(all_close(d, want_d, 1e-4, 1e-4));
  }
}

TEST(FusedKernels, ForkedSecondContinuationDoesNotSeeTheFirst) {
  // Changing the first continuation's keys and values leaves the second's outputs unchanged.
  const int64_t C = 128, NH = 2, W = 3 * C, N = 30;
  const std::vector<int64_t> off{0, N};
  const std::vector<SeqFork> forks{{10, 18}};
  VF qkv = randf(N * W, 41), qkv2 = qkv;
  for (int64_t i = 10 * W; i < 18 * W; ++i) qkv2[i] += 1.0f;
  VF y1(N * C), y2(N * C), lse(N * NH);
  attention_flash_forward(y1, lse, qkv, off, N, C, NH, 0.0f, 0, forks);
  attention_flash_forward(y2, lse, qkv2, off, N, C, NH, 0.0f, 0, forks);
  EXPECT_TRUE(all_close(std::span<const float>(y1).subspan(18 * C),
                        std::span<const float>(y2).subspan(18 * C), 0, 0));
  EXPECT_FALSE(all_close(std::span<const float>(y1).subspan(10 * C, 8 * C),
                         std::span<const float>(y2).subspan(10 * C, 8 * C), 1e-3, 1e-3));
}

TEST(FusedKernels, ReferenceAttentionWithDropoutMatchesFiniteDifferences) {
  // The dropout mask is fixed by the seed, so the output is a smooth function of qkv.
  const int64_t C = 12, NH = 3;
  const auto off = offsets_of({3, 6});
  const int64_t N = off.back(), A = attention_att_size(off, NH);
  VD qkv = to_d(randf(N * 3 * C, 30)), g = to_d(randf(N * C, 31)), dq(N * 3 * C), y(N * C), att(A);
  ref::attention_forward(y, att, qkv, off, N, C, NH, 0.4f, 5);
  ref::attention_backward(dq, g, qkv, att, off, N, C, NH, 0.4f, 5);
  fd_check(qkv, dq, [&] {
    VD out(N * C), a(A);
    ref::attention_forward(out, a, qkv, off, N, C, NH, 0.4f, 5);
    return dot(out, g);
  }, 80);
}

TEST(FusedKernels, ResidualLayernormMatchesReference) {
  // N = 33 and 70 cross the 32-row chunks of the column sums, C = 300 the 256-column blocks.
  for (const auto& d : {std::pair<int64_t, int64_t>{1, 3}, {3, 7}, {7, 36}, {33, 65}, {70, 300}}) {
    const int64_t N = d.first, C = d.second;
    for (float p : {0.0f, 0.25f}) {
      for (bool with_bias : {false, true}) {
        SCOPED_TRACE(testing::Message() << N << "x" << C << " p=" << p << " bias=" << with_bias);
        VF res = randf(N * C, 40, 2.0f), br = randf(N * C, 41), bias = randf(C, 42);
        VF w = randf(C, 43), b = randf(C, 44), gy = randf(N * C, 45), gr = randf(N * C, 46);
        for (auto& v : res) v += 0.5f;  // non-zero mean
        VF nobias;
        const VF& bs = with_bias ? bias : nobias;
        VF res_out(N * C), y(N * C), mean(N), rstd(N);
        residual_layernorm_forward(res_out, y, {}, mean, rstd, res, br, bs, w, b, N, C, 1e-5f, p,
                                   3);
        VD res_outd(N * C), yd(N * C), md(N), rd(N);
        ref::residual_layernorm_forward(res_outd, yd, md, rd, to_d(res), to_d(br), to_d(bs),
                                        to_d(w), to_d(b), N, C, 1e-5, p, 3);
        EXPECT_TRUE(all_close(res_out, to_f(res_outd), kRtol, kAtol));
        EXPECT_TRUE(all_close(y, to_f(yd), kRtol, kAtol));
        EXPECT_TRUE(all_close(mean, to_f(md), kRtol, kAtol));
        EXPECT_TRUE(all_close(rstd, to_f(rd), kRtol, kAtol));
        // Same arithmetic as the unfused kernels, in the same order: equal bit for bit without
        // dropout. With dropout, res_in + scale * branch contracts to one FMA (one rounding
        // instead of two): a few float ulps apart.
        VF r2 = br, res2(N * C), y2(N * C), m2(N), s2(N);
        if (with_bias)
          for (int64_t i = 0; i < N * C; ++i) r2[i] += bias[i % C];
        if (p > 0) dropout_forward(r2, r2, p, 3, N * C);
        residual_forward(res2, res, r2, N * C);
        layernorm_forward(y2, m2, s2, res2, w, b, N, C, 1e-5f);
        const double tol = p > 0 ? 1e-6 : 0.0;
        EXPECT_TRUE(all_close(res_out, res2, tol, tol));
        EXPECT_TRUE(all_close(y, y2, 10 * tol, 10 * tol));
        // In place: res_out aliasing res_in.
        VF inplace = res;
        std::vector<uint16_t> ybf(N * C), ybf2(N * C);
        residual_layernorm_forward(inplace, y2, ybf, m2, s2, inplace, br, bs, w, b, N, C, 1e-5f, p,
                                   3);
        EXPECT_TRUE(all_close(inplace, res_out, 0, 0));
        EXPECT_TRUE(all_close(y2, y, 0, 0));
        EXPECT_EQ(ybf, to_bf16_copy(y));
        // bf16 output only.
        residual_layernorm_forward(res2, {}, ybf2, m2, s2, res, br, bs, w, b, N, C, 1e-5f, p, 3);
        EXPECT_EQ(ybf2, ybf);

        // Backward: dx starts as the residual path's gradient gr; accumulators start at 0.5.
        VF dx = gr, dbranch(N * C, 7.0f), dbias(C, 0.5f), dw(C, 0.5f), db(C, 0.5f);
        VF scratch(layernorm_residual_backward_scratch_size(N, C));
        layernorm_residual_backward(dx, dbranch, dbias, dw, db, scratch, gy, res_out, w, mean,
                                    rstd, N, C, p, 3);
        VD dxd = to_d(gr), dbrd(N * C), dbiasd(C, 0.5), dwd(C, 0.5), dbd(C, 0.5);
        ref::layernorm_residual_backward(dxd, dbrd, dbiasd, dwd, dbd, to_d(gy), res_outd, to_d(w),
                                         md, rd, N, C, p, 3);
        EXPECT_TRUE(all_close(dx, to_f(dxd), kRtol, kAtol));
        EXPECT_TRUE(all_close(dbranch, to_f(dbrd), kRtol, kAtol));
        // Column sums over up to 70 rows of O(1) values: float rounding ~1e-5 relative.
        EXPECT_TRUE(all_close(dbias, to_f(dbiasd), 1e-4, 1e-4));
        EXPECT_TRUE(all_close(dw, to_f(dwd), 1e-4, 1e-4));
        EXPECT_TRUE(all_close(db, to_f(dbd), 1e-4, 1e-4));
        // Without dbranch (p = 0: the caller uses dx) and frozen weights.
        if (p == 0.0f) {
          VF dx2 = gr, dbias2(C, 0.5f);
          layernorm_residual_backward(dx2, {}, dbias2, {}, {}, scratch, gy, res_out, w, mean,
                                      rstd, N, C);
          EXPECT_TRUE(all_close(dx2, dx, 0, 0));
          EXPECT_TRUE(all_close(dbias2, dbias, 0, 0));
        }
      }
    }
  }
}

TEST(FusedKernels, ReferenceResidualLayernormMatchesFiniteDifferences) {
  // L = <y, gy> + <res_out, gr>: dL/dres_out = gr + LN'(gy) = dx, dL/dbranch = drop'(dx),
  // dL/dbias = its column sums, dL/dw and dL/db the LayerNorm ones.
  const int64_t N = 5, C = 7;
  const float p = 0.3f;
  VD res = to_d(randf(N * C, 50)), br = to_d(randf(N * C, 51)), bias = to_d(randf(C, 52));
  VD w = to_d(randf(C, 53)), b = to_d(randf(C, 54)), gy = to_d(randf(N * C, 55));
  VD gr = to_d(randf(N * C, 56));
  auto loss = [&] {
    VD ro(N * C), y(N * C), m(N), r(N);
    ref::residual_layernorm_forward(ro, y, m, r, res, br, bias, w, b, N, C, 1e-5, p, 9);
    return dot(y, gy) + dot(ro, gr);
  };
  VD ro(N * C), y(N * C), m(N), r(N);
  ref::residual_layernorm_forward(ro, y, m, r, res, br, bias, w, b, N, C, 1e-5, p, 9);
  VD dx = gr, dbr(N * C), dbias(C), dw(C), db(C);
  ref::layernorm_residual_backward(dx, dbr, dbias, dw, db, gy, ro, w, m, r, N, C, p, 9);
  fd_check(res, dx, loss);
  fd_check(br, dbr, loss);
  fd_check(bias, dbias, loss);
  fd_check(w, dw, loss);
  fd_check(b, db, loss);
}

TEST(FusedKernels, BiasGeluMatchesReference) {
  for (const auto& d : {std::pair<int64_t, int64_t>{1, 3}, {7, 5}, {33, 65}, {70, 300}}) {
    const int64_t N = d.first, OC = d.second;
    SCOPED_TRACE(testing::Message() << N << "x" << OC);
    VF x = randf(N * OC, 60, 2.0f), bias = randf(OC, 61), g = randf(N * OC, 62);
    VF xf = x, y(N * OC);
    std::vector<uint16_t> ybf(N * OC), ybf2(N * OC), ybf3(N * OC);
    bias_gelu_forward(y, ybf, xf, bias, N, OC);
    EXPECT_EQ(ybf, to_bf16_copy(y));
    VF xf2 = x;
    bias_gelu_forward({}, ybf2, xf2, bias, N, OC);  // bf16 output only
    EXPECT_EQ(ybf2, ybf);
    VD xd = to_d(x), yd(N * OC);
    ref::bias_gelu_forward(yd, xd, to_d(bias), N, OC);
    EXPECT_TRUE(all_close(xf, to_f(xd), 0, 0));  // one float addition, exact
    EXPECT_TRUE(all_close(y, to_f(yd), kRtol, kAtol));
    VF y_old(N * OC);
    gelu_forward(y_old, xf, N * OC);
    EXPECT_TRUE(all_close(y, y_old, 0, 0));  // the same expression as the unfused kernel

    VF dx(N * OC, 7.0f), yb(N * OC), dbias(OC, 0.5f);
    VF scratch(gelu_bias_backward_scratch_size(N, OC));
    gelu_bias_backward(dx, yb, ybf3, dbias, scratch, g, xf, N, OC);
    EXPECT_EQ(ybf3, ybf);
    VD dxd(N * OC), dbiasd(OC, 0.5);
    ref::gelu_bias_backward(dxd, dbiasd, to_d(g), xd, N, OC);
    EXPECT_TRUE(all_close(dx, to_f(dxd), kRtol, kAtol));
    // Column sums over up to 70 rows of O(1) values: float rounding ~1e-5 relative.
    EXPECT_TRUE(all_close(dbias, to_f(dbiasd), 1e-4, 1e-4));
    // The recompute is the forward's output exactly, the derivative the unfused kernel's.
    EXPECT_TRUE(all_close(yb, y_old, 0, 0));
    VF dx_old(N * OC, 0.0f);
    gelu_backward(dx_old, g, xf, N * OC);
    EXPECT_TRUE(all_close(dx, dx_old, 0, 0));
    // dx aliasing dy, no recompute, no bias gradient.
    VF inplace = g;
    gelu_bias_backward(inplace, {}, {}, {}, {}, inplace, xf, N, OC);
    EXPECT_TRUE(all_close(inplace, dx, 0, 0));
  }
}

TEST(FusedKernels, OnePassHeadCrossEntropyMatchesReference) {
  const int64_t C = 36, V = 97;
  for (int64_t M : {1, 3, 7, 20}) {
    VF x = randf(M * C, 18), w = randf(V * C, 19, 0.3f);
    std::vector<int32_t> tg(M);
    for (int64_t i = 0; i < M; ++i) tg[i] = static_cast<int32_t>((i * 37 + 5) % V);
    VD lossd(M), dxd(M * C, 1.0), dwd(V * C, 1.0);
    ref::head_crossentropy_forward(lossd, to_d(x), to_d(w), tg, M, C, V);
    ref::head_crossentropy_backward(dxd, dwd, to_d(x), to_d(w), tg, 0.25, M, C, V);
    for (int64_t R : {1, 4, 64}) {
      SCOPED_TRACE(testing::Message() << "M=" << M << " R=" << R);
      VF loss(M), lse(M), scratch(std::min(M, R) * V), dx(M * C, 1.0f), dw(V * C, 1.0f);
      head_crossentropy_forward_backward(loss, lse, dx, dw, scratch, x, w, tg, 0.25f, M, C, V, R);
      EXPECT_TRUE(all_close(loss, to_f(lossd), kRtol, kAtol));
      EXPECT_TRUE(all_close(dx, to_f(dxd), kRtol, kAtol));
      EXPECT_TRUE(all_close(dw, to_f(dwd), kRtol, kAtol));
      // The same losses and lse as the forward-only kernel (same arithmetic per row).
      VF loss2(M), lse2(M), scratch2(std::min(M, R) * V);
      head_crossentropy_forward(loss2, lse2, scratch2, x, w, tg, M, C, V, R);
      EXPECT_TRUE(all_close(loss, loss2, 0, 0));
      EXPECT_TRUE(all_close(lse, lse2, 0, 0));
      VF dx2(M * C, 1.0f);  // frozen head
      head_crossentropy_forward_backward(loss, lse, dx2, {}, scratch, x, w, tg, 0.25f, M, C, V, R);
      EXPECT_TRUE(all_close(dx2, dx, 0, 0));
    }
  }
}

}  // namespace
}  // namespace llmft::kernels
