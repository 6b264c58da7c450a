// Gpt2 behaviour beyond PyTorch parity (that is tests/parity/test_gpt2_parity.cpp): dropout's
// backward against finite differences, head chunking, gradient accumulation, the arena, input
// errors, clipping, and AdamW against its formula.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/model/adamw.h"
#include "llmft/model/gpt2.h"
#include "test_util.h"

namespace llmft {
namespace {

using test::all_close;

Gpt2Config tiny(float dropout = 0.0f, bool tied = false) {
  Gpt2Config c;
  c.V = 53;
  c.maxT = 16;
  c.C = 20;
  c.L = 2;
  c.NH = 2;
  c.dropout = dropout;
  c.tied = tied;
  return c;
}

struct Packed {
  std::vector<int32_t> in, tg;
  std::vector<int64_t> off{0};
};

Packed make_batch(const std::vector<int64_t>& lens, int64_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(V) - 1);
  Packed p;
  for (int64_t n : lens) {
    for (int64_t t = 0; t < n; ++t) {
      p.in.push_back(tok(rng));
      p.tg.push_back(t % 3 == 0 ? Gpt2::kIgnoreIndex : tok(rng));
    }
    p.off.push_back(static_cast<int64_t>(p.in.size()));
  }
  return p;
}

std::vector<float> copy(std::span<const float> s) { return {s.begin(), s.end()}; }

TEST(Gpt2, DropoutBackwardMatchesFiniteDifferences) {
  Gpt2 m(tiny(0.2f));
  m.init_random(1);
  const Packed b = make_batch({5, 7, 1}, m.config().V, 2);
  m.set_dropout_seed(9);
  m.zero_grad();
  const LossResult r = m.forward(b.in, b.tg, b.off);
  m.backward(1.0f);  // gradient of loss_sum
  std::vector<float> g = copy(m.grads());
  // Dropout is on: the loss differs from an eval forward.
  const LossResult ev = m.forward(b.in, b.tg, b.off, /*training=*/false);
  EXPECT_NE(r.loss_sum, ev.loss_sum);
  // Central differences in float on the largest-gradient entries of a few tensors, replaying
  // the same masks. h = 1e-2 keeps float rounding of loss_sum (~1e-5) below 1e-3 of the slope.
  using Pick = std::span<float> (*)(Gpt2Tensors<float>&);
  const std::pair<const char*, Pick> picks[] = {
      {"h.0 c_attn.w", [](Gpt2Tensors<float>& t) { return t.h[0].c_attn.w; }},
      {"h.1 c_fc.w", [](Gpt2Tensors<float>& t) { return t.h[1].c_fc.w; }},
      {"wpe", [](Gpt2Tensors<float>& t) { return t.wpe; }},
      {"lm_head", [](Gpt2Tensors<float>& t) { return t.lm_head; }},
      {"h.0 ln_1.b", [](Gpt2Tensors<float>& t) { return t.h[0].ln_1.b; }}};
  Gpt2Tensors<float> gt = m.table().bind(std::span<float>(g));
  for (const auto& [name, pick] : picks) {
    const auto gv = pick(gt);
    std::vector<int64_t> idx(gv.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + 3, idx.end(),
                      [&](int64_t a, int64_t c) { return std::fabs(gv[a]) > std::fabs(gv[c]); });
    for (int k = 0; k < 3; ++k) {
      Gpt2Tensors<float> wt = m.weights();
      float& p = pick(wt)[idx[k]];
      const float orig = p, h = 1e-2f;
      p = orig + h;
      m.set_dropout_seed(9);
      const double lp = m.forward(b.in, b.tg, b.off).loss_sum;
      p = orig - h;
      m.set_dropout_seed(9);
      const double lm = m.forward(b.in, b.tg, b.off).loss_sum;
      p = orig;
      const double num = (lp - lm) / (2 * h);
      // Second-order error of central differences with h = 1e-2 plus float noise: 2% + 2e-3.
      EXPECT_NEAR(gv[idx[k]], num, 2e-3 + 2e-2 * std::fabs(num)) << name << "[" << idx[k] << "]";
    }
  }
}

TEST(Gpt2, EvalForwardIgnoresDropoutRate) {
  Gpt2 a(tiny(0.3f)), b(tiny(0.0f));
  a.init_random(3);
  b.init_random(3);
  const Packed p = make_batch({6, 3}, a.config().V, 4);
  EXPECT_EQ(a.forward(p.in, p.tg, p.off, false).loss_sum, b.forward(p.in, p.tg, p.off).loss_sum);
}

TEST(Gpt2, HeadChunksGiveTheSameResult) {
  for (bool tied : {false, true}) {
    Gpt2 a(tiny(0.0f, tied)), b(tiny(0.0f, tied));
    a.init_random(5);
    b.init_random(5);
    b.set_head_chunk_rows(3);  // several chunks: logits recomputed in backward
    const Packed p = make_batch({9, 4, 11}, a.config().V, 6);
    a.zero_grad();
    b.zero_grad();
    const LossResult ra = a.forward(p.in, p.tg, p.off), rb = b.forward(p.in, p.tg, p.off);
    EXPECT_NEAR(ra.loss_sum, rb.loss_sum, 1e-5 * ra.loss_sum);  // same rows, fp32 sum order
    a.backward(0.5f);
    b.backward(0.5f);
    // Chunked sgemm sums the head's dW over rows in another order: fp32 rounding of sums of a
    // few dozen terms of up to ~0.1 (up to ~4e-7 absolute seen on near-zero entries).
    EXPECT_TRUE(all_close(b.grads(), a.grads(), 1e-5, 1e-6));
  }
}

TEST(Gpt2, GradientAccumulationOverMicroBatches) {
  Gpt2 one(tiny()), two(tiny());
  one.init_random(7);
  two.init_random(7);
  const Packed a = make_batch({5, 8}, one.config().V, 8), b = make_batch({6}, one.config().V, 9);
  Packed ab = a;
  for (size_t i = 0; i < b.in.size(); ++i) {
    ab.in.push_back(b.in[i]);
    ab.tg.push_back(b.tg[i]);
  }
  ab.off.push_back(static_cast<int64_t>(ab.in.size()));
  one.zero_grad();
  const LossResult r = one.forward(ab.in, ab.tg, ab.off);
  one.backward(1.0f / static_cast<float>(r.n_targets));
  two.zero_grad();
  const LossResult ra = two.forward(a.in, a.tg, a.off);
  two.backward(1.0f / static_cast<float>(r.n_targets));
  const LossResult rb = two.forward(b.in, b.tg, b.off);
  two.backward(1.0f / static_cast<float>(r.n_targets));
  EXPECT_EQ(ra.n_targets + rb.n_targets, r.n_targets);
  EXPECT_NEAR(ra.loss_sum + rb.loss_sum, r.loss_sum, 1e-5 * r.loss_sum);
  EXPECT_TRUE(all_close(two.grads(), one.grads(), 1e-5, 1e-7));  // sums in another order
}

TEST(Gpt2, ArenaIsSizedUpFront) {
  Gpt2 m(tiny());
  m.init_random(1);
  m.reserve(40);
  const int64_t size = m.arena_floats();
  for (auto lens : {std::vector<int64_t>{16, 16, 8}, {3}, {1, 2, 3, 4, 5}}) {
    const Packed p = make_batch(lens, m.config().V, 1);
    m.forward(p.in, p.tg, p.off);
    m.backward(1.0f);
    EXPECT_EQ(m.arena_floats(), size);
  }
}

TEST(Gpt2, AllTargetsIgnored) {
  Gpt2 m(tiny());
  m.init_random(1);
  const std::vector<int32_t> in{1, 2, 3}, tg(3, Gpt2::kIgnoreIndex);
  const std::vector<int64_t> off{0, 3};
  m.zero_grad();
  const LossResult r = m.forward(in, tg, off);
  EXPECT_EQ(r.n_targets, 0);
  EXPECT_EQ(r.loss_sum, 0.0);
  m.backward(1.0f);
  EXPECT_EQ(m.grad_norm(), 0.0);
}

TEST(Gpt2, RejectsBadInput) {
  Gpt2 m(tiny());
  const std::vector<int32_t> ok{1, 2, 3}, bad_tok{1, 53, 3}, bad_tg{1, -5, 3};
  const std::vector<int64_t> off{0, 3}, bad_off{0, 2}, empty_seq{0, 0, 3};
  EXPECT_THROW(m.forward(bad_tok, ok, off), Error);
  EXPECT_THROW(m.forward(ok, bad_tg, off), Error);
  EXPECT_THROW(m.forward(ok, ok, bad_off), Error);
  EXPECT_THROW(m.forward(ok, ok, empty_seq), Error);
  EXPECT_THROW(m.forward(std::span<const int32_t>(ok).first(2), ok, off), Error);
  std::vector<int32_t> longseq(17, 1);
  const std::vector<int64_t> off17{0, 17};
  EXPECT_THROW(m.forward(longseq, longseq, off17), Error);  // longer than maxT = 16
  EXPECT_THROW(m.backward(1.0f), InternalError);            // no successful forward
}

TEST(Gpt2, ClipGradNorm) {
  Gpt2 m(tiny());
  m.init_random(1);
  const Packed p = make_batch({8, 8}, m.config().V, 3);
  m.zero_grad();
  m.forward(p.in, p.tg, p.off);
  m.backward(1.0f);
  const double norm = m.grad_norm();
  ASSERT_GT(norm, 0.5);
  EXPECT_NEAR(m.clip_grad_norm(0.5), norm, 1e-9 * norm);
  EXPECT_NEAR(m.grad_norm(), 0.5, 1e-5);
  EXPECT_NEAR(m.clip_grad_norm(10.0), 0.5, 1e-5);  // below the limit: untouched
  EXPECT_NEAR(m.grad_norm(), 0.5, 1e-5);
}

// A low-rank adapter as LoRA's: g(x) = (x @ A) @ B * scale, A (IC, r), B (r, OC), gradients
// accumulated in dA, dB. Reads x.f, or x.b where only the bf16 rounding is kept.
class LowRank : public LinearAdapter {
 public:
  LowRank(int64_t IC, int64_t OC, int64_t r, float scale, uint32_t seed)
      : IC_(IC), OC_(OC), r_(r), scale_(scale), A(IC * r), B(r * OC), dA(IC * r), dB(r * OC) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> d(0.0f, 0.3f);
    for (auto& x : A) x = d(gen);
    for (auto& x : B) x = d(gen);
  }
  void forward(std::span<float> out, Act x, int64_t N, Precision, Pass) override {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < OC_; ++o) out[n * OC_ + o] += static_cast<float>(scale_ * xab(x, n, o));
  }
  void backward_input(std::span<float> dx, Act dout, int64_t N, Precision) override {
    // dx = dout @ B^T @ A^T * scale
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < r_; ++k) {
        double t = 0;
        for (int64_t o = 0; o < OC_; ++o) t += at(dout, n * OC_ + o) * B[k * OC_ + o];
        for (int64_t i = 0; i < IC_; ++i) dx[n * IC_ + i] += static_cast<float>(scale_ * t * A[i * r_ + k]);
      }
  }
  void backward_weights(Act dout, Act x, int64_t N, Precision) override {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < r_; ++k) {
        double xa = 0, db = 0;
        for (int64_t i = 0; i < IC_; ++i) xa += at(x, n * IC_ + i) * A[i * r_ + k];
        for (int64_t o = 0; o < OC_; ++o) db += at(dout, n * OC_ + o) * B[k * OC_ + o];
        for (int64_t o = 0; o < OC_; ++o) dB[k * OC_ + o] += static_cast<float>(scale_ * xa * at(dout, n * OC_ + o));
        for (int64_t i = 0; i < IC_; ++i) dA[i * r_ + k] += static_cast<float>(scale_ * db * at(x, n * IC_ + i));
      }
  }
  // W + A @ B * scale, the merged weight (IC, OC).
  void merge_into(std::span<float> w) const {
    for (int64_t i = 0; i < IC_; ++i)
      for (int64_t o = 0; o < OC_; ++o) {
        double t = 0;
        for (int64_t k = 0; k < r_; ++k) t += A[i * r_ + k] * B[k * OC_ + o];
        w[i * OC_ + o] += static_cast<float>(scale_ * t);
      }
  }

 private:
  static double at(Act a, int64_t i) {
    return a.f.empty() ? kernels::bf16_to_float(a.b[i]) : a.f[i];
  }
  double xab(Act x, int64_t n, int64_t o) const {
    double t = 0;
    for (int64_t k = 0; k < r_; ++k) {
      double xa = 0;
      for (int64_t i = 0; i < IC_; ++i) xa += at(x, n * IC_ + i) * A[i * r_ + k];
      t += xa * B[k * OC_ + o];
    }
    return t;
  }
  int64_t IC_, OC_, r_;
  double scale_;

 public:
  std::vector<float> A, B, dA, dB;
};

// The adapter hook of the linear layers: an adapter on c_attn and on mlp c_proj (whose backward
// is split around the GELU recompute) gives the merged model's loss, and its gradients are the
// merged weight's gradient projected (dA = dW' B^T s, dB = A^T dW' s); the base gradients are
// the merged model's too. fp32: 1e-5 / 1e-4 as the parity tests.
TEST(Gpt2, LinearAdapterHookMatchesMergedWeights) {
  const Gpt2Config cfg = tiny();
  const int64_t C = cfg.C, r = 3;
  const float s = 0.5f;
  Gpt2 base(cfg), merged(cfg);
  base.init_random(11);
  std::copy(base.params().begin(), base.params().end(), merged.params().begin());
  LowRank qkv(C, 3 * C, r, s, 1), proj(4 * C, C, r, s, 2);
  base.linears(0).c_attn.set_adapter(&qkv);
  base.linears(1).mlp_proj.set_adapter(&proj);
  qkv.merge_into(merged.weights().h[0].c_attn.w);
  proj.merge_into(merged.weights().h[1].mlp_proj.w);
  const Packed p = make_batch({7, 5}, cfg.V, 12);
  base.zero_grad();
  merged.zero_grad();
  const LossResult ra = base.forward_backward(p.in, p.tg, p.off, 1.0f);
  const LossResult rm = merged.forward_backward(p.in, p.tg, p.off, 1.0f);
  EXPECT_NEAR(ra.loss_sum, rm.loss_sum, 1e-5 * rm.loss_sum);
  EXPECT_TRUE(all_close(base.grads(), merged.grads(), 1e-4, 1e-6));
  auto projected = [&](const LowRank& a, std::span<const float> dw, int64_t IC, int64_t OC) {
    std::vector<float> dA(IC * r), dB(r * OC);
    for (int64_t i = 0; i < IC; ++i)
      for (int64_t o = 0; o < OC; ++o)
        for (int64_t k = 0; k < r; ++k) {
          dA[i * r + k] += s * dw[i * OC + o] * a.B[k * OC + o];
          dB[k * OC + o] += s * a.A[i * r + k] * dw[i * OC + o];
        }
    return std::pair{dA, dB};
  };
  const auto [qa, qb] = projected(qkv, merged.grad_tensors().h[0].c_attn.w, C, 3 * C);
  EXPECT_TRUE(all_close(qkv.dA, qa, 1e-4, 1e-6));
  EXPECT_TRUE(all_close(qkv.dB, qb, 1e-4, 1e-6));
  const auto [pa, pb] = projected(proj, merged.grad_tensors().h[1].mlp_proj.w, 4 * C, C);
  EXPECT_TRUE(all_close(proj.dA, pa, 1e-4, 1e-6));
  EXPECT_TRUE(all_close(proj.dB, pb, 1e-4, 1e-6));
  // bf16: the adapters see the products' rounded inputs; the loss stays within bf16's 1e-2 of
  // the merged fp32 model, and far closer to it than the model without the adapters.
  base.set_precision(Precision::kBf16);
  const double lb = base.forward(p.in, p.tg, p.off, false).loss_sum;
  base.linears(0).c_attn.set_adapter(nullptr);
  base.linears(1).mlp_proj.set_adapter(nullptr);
  const double none = base.forward(p.in, p.tg, p.off, false).loss_sum;
  EXPECT_NEAR(lb, rm.loss_sum, 1e-2 * rm.loss_sum);
  EXPECT_LT(std::abs(lb - rm.loss_sum), 0.1 * std::abs(none - rm.loss_sum))
      << lb << " " << none << " " << rm.loss_sum;
}

// A model that only runs forwards has no gradient buffers; the first training call makes them.
TEST(Gpt2, GradientsAreAllocatedByTraining) {
  Gpt2 m(tiny());
  m.init_random(2);
  const Packed p = make_batch({6}, m.config().V, 3);
  m.forward(p.in, p.tg, p.off, false);
  std::vector<float> logits(static_cast<size_t>(m.config().V));
  const std::vector<int64_t> rows = {5};
  m.forward_logits(logits, p.in, p.off, rows);
  EXPECT_FALSE(m.has_grads());
  m.forward_backward(p.in, p.tg, p.off, 1.0f);
  EXPECT_TRUE(m.has_grads());
  EXPECT_GT(m.grad_norm(), 0.0);
}

TEST(AdamW, MatchesTheFormula) {
  const std::vector<float> g1{0.5f, -1e-3f, 0.0f, 2.0f}, g2{-0.25f, 1e-3f, 0.0f, 2.0f};
  std::vector<float> p{1.0f, -0.5f, 0.25f, 0.0f};
  AdamWConfig c;
  c.lr = 1e-2;
  c.weight_decay = 0.1;
  AdamW opt(4, c);
  std::vector<double> pd(p.begin(), p.end()), m(4, 0.0), v(4, 0.0);
  for (int t = 1; t <= 2; ++t) {
    const auto& g = t == 1 ? g1 : g2;
    opt.step(p, g);
    for (int i = 0; i < 4; ++i) {
      pd[i] *= 1 - c.lr * c.weight_decay;
      m[i] = c.beta1 * m[i] + (1 - c.beta1) * g[i];
      v[i] = c.beta2 * v[i] + (1 - c.beta2) * g[i] * g[i];
      const double mh = m[i] / (1 - std::pow(c.beta1, t));
      const double vh = std::sqrt(v[i] / (1 - std::pow(c.beta2, t)));
      pd[i] -= c.lr * mh / (vh + c.eps);
    }
  }
  EXPECT_EQ(opt.step_count(), 2);
  // float arithmetic vs double formula: a few ulps of O(1) values.
  EXPECT_TRUE(all_close(p, std::vector<float>(pd.begin(), pd.end()), 1e-6, 1e-7));
  EXPECT_NEAR(opt.m()[0], m[0], 1e-7);
  EXPECT_NEAR(opt.v()[3], v[3], 1e-7);
}

}  // namespace
}  // namespace llmft
