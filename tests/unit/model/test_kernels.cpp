// Every kernel against its double-precision reference (kernels/reference.h) on awkward shapes,
// and every reference backward against central finite differences in double.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "kernels/attention_unfused.h"
#include "kernels/gelu_unfused.h"
#include "kernels/reference.h"
#include "kernels/residual_unfused.h"
#include "llmft/model/kernels/crossentropy.h"
#include "llmft/model/kernels/dropout.h"
#include "llmft/model/kernels/encoder.h"
#include "llmft/model/kernels/layernorm.h"
#include "llmft/model/kernels/matmul.h"
#include "test_util.h"

namespace llmft::kernels {
namespace {

using llmft::test::all_close;
using VF = std::vector<float>;
using VD = std::vector<double>;

// Float kernels against double references: float rounding over sums of up to a few hundred
// terms of O(1) values gives relative errors around 1e-6..1e-5.
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

// Central differences of a scalar function of `x` at `count` spread-out indices, compared with
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

double dot(const VD& a, const VD& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST(Kernels, Matmul) {
  for (const auto& d : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 7, 5},
                        {7, 36, 108}, {17, 33, 65}}) {
    const int64_t N = std::get<0>(d), IC = std::get<1>(d), OC = std::get<2>(d);
    for (bool out_in : {false, true}) {
      const auto layout = out_in ? WeightLayout::kOutIn : WeightLayout::kInOut;
      VF x = randf(N * IC, 1), w = randf(IC * OC, 2), b = randf(OC, 3), g = randf(N * OC, 4);
      VF y(N * OC);
      matmul_forward(y, x, w, b, N, IC, OC, layout);
      VD yd(N * OC);
      ref::matmul_forward(yd, to_d(x), to_d(w), to_d(b), N, IC, OC, out_in);
      EXPECT_TRUE(all_close(y, to_f(yd), kRtol, kAtol)) << N << " " << IC << " " << OC;
      // backward accumulates: start from ones
      VF dx(N * IC, 1.0f), dw(IC * OC, 1.0f), db(OC, 1.0f);
      matmul_backward(dx, dw, db, g, x, w, N, IC, OC, layout);
      VD dxd(N * IC, 1.0), dwd(IC * OC, 1.0), dbd(OC, 1.0);
      ref::matmul_backward(dxd, dwd, dbd, to_d(g), to_d(x), to_d(w), N, IC, OC, out_in);
      EXPECT_TRUE(all_close(dx, to_f(dxd), kRtol, kAtol));
      EXPECT_TRUE(all_close(dw, to_f(dwd), kRtol, kAtol));
      EXPECT_TRUE(all_close(db, to_f(dbd), kRtol, kAtol));
      // reference backward vs finite differences of L = sum(y * g)
      VD xd = to_d(x), wd = to_d(w), bd = to_d(b), gd = to_d(g);
      VD dx0(N * IC), dw0(IC * OC), db0(OC);
      ref::matmul_backward(dx0, dw0, db0, gd, xd, wd, N, IC, OC, out_in);
      auto loss = [&] {
        VD out(N * OC);
        ref::matmul_forward(out, xd, wd, bd, N, IC, OC, out_in);
        return dot(out, gd);
      };
      fd_check(xd, dx0, loss);
      fd_check(wd, dw0, loss);
      fd_check(bd, db0, loss);
    }
  }
}

// OpenBLAS is loaded at the first product, after llmft has named the kernels cpuid supports: a
// pre-AVX2 OPENBLAS_CORETYPE (what OpenBLAS picks on CPUs it does not recognise) is overridden.
// ctest runs each test in its own process, so this one loads OpenBLAS itself.
TEST(Kernels, BlasKernelsFollowCpuid) {
  ::setenv("OPENBLAS_CORETYPE", "Prescott", 1);
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  EXPECT_STREQ(blas_kernels(), avx512 ? "SkylakeX" : avx2 ? "Haswell" : "Prescott");
  VF a = randf(64 * 32, 1), b = randf(32 * 48, 2), c(64 * 48);
  sgemm(false, false, 64, 48, 32, a.data(), 32, b.data(), 48, 0.0f, c.data(), 48);
  VD cd(64 * 48);
  ref::matmul_forward(cd, to_d(a), to_d(b), VD(48, 0.0), 64, 32, 48, false);
  EXPECT_TRUE(all_close(c, to_f(cd), kRtol, kAtol));
}

TEST(Kernels, Layernorm) {
  for (const auto& d : {std::pair<int64_t, int64_t>{1, 3}, {3, 7}, {7, 36}, {9, 65}}) {
    const int64_t N = d.first, C = d.second;
    VF x = randf(N * C, 5, 2.0f), w = randf(C, 6), b = randf(C, 7), g = randf(N * C, 8);
    for (auto& v : x) v += 0.5f;  // non-zero mean
    VF y(N * C), mean(N), rstd(N);
    layernorm_forward(y, mean, rstd, x, w, b, N, C, 1e-5f);
    VD yd(N * C), md(N), rd(N);
    ref::layernorm_forward(yd, md, rd, to_d(x), to_d(w), to_d(b), N, C, 1e-5);
    EXPECT_TRUE(all_close(y, to_f(yd), kRtol, kAtol));
    EXPECT_TRUE(all_close(rstd, to_f(rd), kRtol, kAtol));
    VF dx(N * C, 0.5f), dw(C, 0.5f), db(C, 0.5f);
    layernorm_backward(dx, dw, db, g, x, w, mean, rstd, N, C);
    VD dxd(N * C, 0.5), dwd(C, 0.5), dbd(C, 0.5);
    ref::layernorm_backward(dxd, dwd, dbd, to_d(g), to_d(x), to_d(w), md, rd, N, C);
    EXPECT_TRUE(all_close(dx, to_f(dxd), kRtol, kAtol));
    EXPECT_TRUE(all_close(dw, to_f(dwd), kRtol, kAtol));
    EXPECT_TRUE(all_close(db, to_f(dbd), kRtol, kAtol));
    VD xd = to_d(x), wd = to_d(w), bd = to_d(b), gd = to_d(g);
    VD dx0(N * C), dw0(C), db0(C), m0(N), r0(N), y0(N * C);
    ref::layernorm_forward(y0, m0, r0, xd, wd, bd, N, C, 1e-5);
    ref::layernorm_backward(dx0, dw0, db0, gd, xd, wd, m0, r0, N, C);
    auto loss = [&] {
      VD out(N * C), m(N), r(N);
      ref::layernorm_forward(out, m, r, xd, wd, bd, N, C, 1e-5);
      return dot(out, gd);
    };
    fd_check(xd, dx0, loss);
    fd_check(wd, dw0, loss);
    fd_check(bd, db0, loss);
  }
}

TEST(Kernels, Encoder) {
  const int64_t V = 11, maxT = 9, C = 7;
  const std::vector<int32_t> inp{3, 3, 10, 0, 5, 3}, pos{0, 1, 2, 0, 1, 0};
  const int64_t N = 6;
  VF wte = randf(V * C, 9), wpe = randf(maxT * C, 10), g = randf(N * C, 11);
  VF y(N * C);
  encoder_forward(y, inp, pos, wte, wpe, N, C);
  VD yd(N * C);
  ref::encoder_forward(yd, inp, pos, to_d(wte), to_d(wpe), N, C);
  EXPECT_TRUE(all_close(y, to_f(yd), 0, 0));  // one float addition, exact
  VF dte(V * C, 1.0f), dpe(maxT * C, 1.0f);
  encoder_backward(dte, dpe, g, inp, pos, N, C);
  VD dted(V * C, 1.0), dped(maxT * C, 1.0);
  ref::encoder_backward(dted, dped, to_d(g), inp, pos, N, C);
  EXPECT_TRUE(all_close(dte, to_f(dted), kRtol, kAtol));
  EXPECT_TRUE(all_close(dpe, to_f(dped), kRtol, kAtol));
  VD ted = to_d(wte), ped = to_d(wpe), gd = to_d(g), dte0(V * C), dpe0(maxT * C);
  ref::encoder_backward(dte0, dpe0, gd, inp, pos, N, C);
  auto loss = [&] {
    VD out(N * C);
    ref::encoder_forward(out, inp, pos, ted, ped, N, C);
    return dot(out, gd);
  };
  fd_check(ted, dte0, loss);
  fd_check(ped, dpe0, loss);
}

TEST(Kernels, GeluResidual) {
  for (int64_t N : {1, 3, 7, 40000}) {  // 40000 crosses the parallel threshold
    VF x = randf(N, 12, 2.0f), b = randf(N, 13), g = randf(N, 14);
    VF y(N);
    gelu_forward(y, x, N);
    VD yd(N);
    ref::gelu_forward(yd, to_d(x), N);
    EXPECT_TRUE(all_close(y, to_f(yd), kRtol, kAtol));
    VF dx(N, 1.0f);
    gelu_backward(dx, g, x, N);
    VD dxd(N, 1.0);
    ref::gelu_backward(dxd, to_d(g), to_d(x), N);
    EXPECT_TRUE(all_close(dx, to_f(dxd), kRtol, kAtol));
    VF r(N), da(N, 1.0f), db(N, 2.0f);
    residual_forward(r, x, b, N);
    VD rd(N), dad(N, 1.0), dbd(N, 2.0);
    ref::residual_forward(rd, to_d(x), to_d(b), N);
    EXPECT_TRUE(all_close(r, to_f(rd), 0, 0));  // one rounding, same in both
    residual_backward(da, db, g, N);
    ref::residual_backward(dad, dbd, to_d(g), N);
    EXPECT_TRUE(all_close(da, to_f(dad), 1e-7, 0));
    EXPECT_TRUE(all_close(db, to_f(dbd), 1e-7, 0));
    if (N < 100) {
      VD xd = to_d(x), gd = to_d(g), dx0(N);
      ref::gelu_backward(dx0, gd, xd, N);
      fd_check(xd, dx0, [&] {
        VD out(N);
        ref::gelu_forward(out, xd, N);
        return dot(out, gd);
      });
    }
  }
}

TEST(Kernels, Attention) {
  // packed sequences of awkward lengths, including a single token
  for (auto lens : {std::vector<int64_t>{1}, {3, 1, 7}, {8, 17}}) {
    for (const auto& d : {std::pair<int64_t, int64_t>{12, 3}, {36, 3}}) {
      const int64_t C = d.first, NH = d.second;
      std::vector<int64_t> off{0};
      for (auto l : lens) off.push_back(off.back() + l);
      const int64_t N = off.back();
      const int64_t A = attention_att_size(off, NH);
      VF qkv = randf(N * 3 * C, 15), g = randf(N * C, 16);
      VF y(N * C), att(A), dqkv(N * 3 * C, 1.0f), scratch(A);
      attention_forward(y, att, qkv, off, N, C, NH);
      VD yd(N * C), attd(A), dqkvd(N * 3 * C, 1.0);
      ref::attention_forward(yd, attd, to_d(qkv), off, N, C, NH);
      EXPECT_TRUE(all_close(y, to_f(yd), kRtol, kAtol));
      EXPECT_TRUE(all_close(att, to_f(attd), kRtol, kAtol));
      attention_backward(dqkv, scratch, g, qkv, att, off, N, C, NH);
      ref::attention_backward(dqkvd, to_d(g), to_d(qkv), attd, off, N, C, NH);
      EXPECT_TRUE(all_close(dqkv, to_f(dqkvd), kRtol, kAtol));
      VD qd = to_d(qkv), gd = to_d(g), dq0(N * 3 * C);
      ref::attention_backward(dq0, gd, qd, attd, off, N, C, NH);
      fd_check(qd, dq0, [&] {
        VD out(N * C), a(A);
        ref::attention_forward(out, a, qd, off, N, C, NH);
        return dot(out, gd);
      }, 60);
    }
  }
}

TEST(Kernels, AttentionStaysInsideSequences) {
  // The second sequence's outputs must not change when the first sequence's tokens do.
  const int64_t C = 12, NH = 3;
  const std::vector<int64_t> off{0, 4, 9};
  VF qkv = randf(9 * 3 * C, 17), qkv2 = qkv;
  for (int64_t i = 0; i < 4 * 3 * C; ++i) qkv2[i] += 1.0f;
  VF y1(9 * C), y2(9 * C), att(attention_att_size(off, NH));
  attention_forward(y1, att, qkv, off, 9, C, NH);
  attention_forward(y2, att, qkv2, off, 9, C, NH);
  EXPECT_TRUE(all_close(std::span<const float>(y1).subspan(4 * C),
                        std::span<const float>(y2).subspan(4 * C), 0, 0));
}

TEST(Kernels, HeadCrossEntropy) {
  const int64_t C = 36, V = 97;
  for (int64_t M : {1, 3, 7, 20}) {
    for (int64_t R : {1, 4, 64}) {
      VF x = randf(M * C, 18), w = randf(V * C, 19, 0.3f);
      std::vector<int32_t> tg(M);
      for (int64_t i = 0; i < M; ++i) tg[i] = static_cast<int32_t>((i * 37 + 5) % V);
      VF loss(M), lse(M), scratch(std::min(M, R) * V);
      head_crossentropy_forward(loss, lse, scratch, x, w, tg, M, C, V, R);
      VD lossd(M);
      ref::head_crossentropy_forward(lossd, to_d(x), to_d(w), tg, M, C, V);
      EXPECT_TRUE(all_close(loss, to_f(lossd), kRtol, kAtol));
      for (bool reuse : {false, true}) {
        if (reuse) head_crossentropy_forward(loss, lse, scratch, x, w, tg, M, C, V, R);
        VF dx(M * C, 1.0f), dw(V * C, 1.0f);
        head_crossentropy_backward(dx, dw, scratch, x, w, tg, lse, 0.25f, M, C, V, R, reuse);
        VD dxd(M * C, 1.0), dwd(V * C, 1.0);
        ref::head_crossentropy_backward(dxd, dwd, to_d(x), to_d(w), tg, 0.25, M, C, V);
        EXPECT_TRUE(all_close(dx, to_f(dxd), kRtol, kAtol));
        EXPECT_TRUE(all_close(dw, to_f(dwd), kRtol, kAtol));
      }
    }
    VD xd = to_d(randf(M * C, 18)), wd = to_d(randf(V * C, 19, 0.3f)), dx0(M * C), dw0(V * C);
    std::vector<int32_t> tg(M, 3);
    ref::head_crossentropy_backward(dx0, dw0, xd, wd, tg, 1.0, M, C, V);
    auto loss = [&] {
      VD l(M);
      ref::head_crossentropy_forward(l, xd, wd, tg, M, C, V);
      double s = 0;
      for (double v : l) s += v;
      return s;
    };
    fd_check(xd, dx0, loss);
    fd_check(wd, dw0, loss);
  }
}

TEST(Kernels, Dropout) {
  const int64_t N = 100000;
  const float p = 0.25f;
  VF x(N, 1.0f), y(N), dx(N, 0.0f), g(N, 1.0f);
  dropout_forward(y, x, p, 42, N);
  int64_t kept = 0;
  for (float v : y) {
    ASSERT_TRUE(v == 0.0f || std::fabs(v - 1.0f / (1.0f - p)) < 1e-6f);
    kept += v != 0.0f;
  }
  EXPECT_NEAR(static_cast<double>(kept) / N, 0.75, 0.01);  // 0.01 = ~7 standard deviations
  dropout_backward(dx, g, p, 42, N);
  EXPECT_TRUE(all_close(dx, y, 0, 0));  // same mask, same scale
  VF y2(N);
  dropout_forward(y2, x, p, 43, N);
  EXPECT_FALSE(all_close(y2, y, 0, 0));  // another seed, another mask
}

}  // namespace
}  // namespace llmft::kernels
