// The head + cross-entropy kernels with bf16 matrix products (HeadBf16) against the double
// reference evaluated on the same bf16-rounded hidden rows and head weight.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/reference.h"
#include "llmft/model/kernels/bf16.h"
#include "llmft/model/kernels/crossentropy.h"
#include "test_util.h"

namespace llmft::kernels {
namespace {

using llmft::test::all_close;
using VF = std::vector<float>;
using VD = std::vector<double>;

VF randf(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  VF v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Rounds v to bf16 in place and returns the bf16 bits.
std::vector<bf16> round_bf16(VF& v) {
  std::vector<bf16> b(v.size());
  to_bf16(b, v);
  from_bf16(v, b);
  return b;
}

double rel_l2(const VF& a, const VD& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

TEST(HeadBf16, ForwardAndOnePassBackwardMatchTheReferenceOnRoundedInputs) {
  const int64_t M = 37, C = 48, V = 301;
  VF x = randf(M * C, 1, 1.0f), w = randf(V * C, 2, 0.3f);
  const auto xb = round_bf16(x), wb = round_bf16(w);
  std::vector<int32_t> tg(M);
  for (int64_t i = 0; i < M; ++i) tg[i] = static_cast<int32_t>((i * 97) % V);
  VD lref(M), dxr(M * C, 0.0), dwr(V * C, 0.0);
  ref::head_crossentropy_forward(lref, VD(x.begin(), x.end()), VD(w.begin(), w.end()), tg, M, C,
                                 V);
  ref::head_crossentropy_backward(dxr, dwr, VD(x.begin(), x.end()), VD(w.begin(), w.end()), tg,
                                  0.25, M, C, V);
  for (const int64_t R : {int64_t{8}, M}) {
    SCOPED_TRACE(R);
    std::vector<bf16> dl(std::min(M, R) * V);
    const HeadBf16 lowp{xb, wb, dl};
    VF loss(M), lse(M), scratch(std::min(M, R) * V);
    // Products of bf16 values are exact in fp32 and accumulate in fp32, so the losses are the
    // reference's on the rounded inputs to fp32 accuracy.
    head_crossentropy_forward(loss, lse, scratch, {}, {}, tg, M, C, V, R, lowp);
    EXPECT_TRUE(all_close(loss, VF(lref.begin(), lref.end()), 2e-5, 2e-5));
    VF loss2(M), dx(M * C, 0.0f), dw(V * C, 0.0f);
    head_crossentropy_forward_backward(loss2, lse, dx, dw, scratch, {}, {}, tg, 0.25f, M, C, V, R,
                                       lowp);
    EXPECT_TRUE(all_close(loss2, loss, 1e-6, 1e-6));
    // The logit gradients are rounded to bf16 (2^-9 relative each) before the two products.
    EXPECT_LT(rel_l2(dx, dxr), 1e-2);
    EXPECT_LT(rel_l2(dw, dwr), 1e-2);
    EXPECT_GT(rel_l2(dx, dxr), 0.0);  // bf16 products really ran
    VF dx2(M * C, 0.0f), dw2(V * C, 0.0f);
    head_crossentropy_backward(dx2, dw2, scratch, {}, {}, tg, lse, 0.25f, M, C, V, R, false, lowp);
    EXPECT_TRUE(all_close(dx2, dx, 1e-5, 1e-7));
    EXPECT_TRUE(all_close(dw2, dw, 1e-5, 1e-7));
  }
}

}  // namespace
}  // namespace llmft::kernels
