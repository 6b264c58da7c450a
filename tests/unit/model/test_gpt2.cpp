// Gpt2 behaviour beyond PyTorch parity (that is tests/parity/test_gpt2_parity.cpp): dropout's
// backward against finite differences, head chunking, gradient accumulation, the arena, input
// errors, clipping, and AdamW against its formula.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/model/adamw.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/lora.h"
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

// LoRA through the linear layers and the fused head: with adapters on c_attn (layer 0 only),
// mlp c_proj (split around the GELU recompute) and the head, with dropout on their inputs, the
// adapter gradients equal central finite differences of the loss, and the base stays frozen
// (no gradient buffers).
TEST(Gpt2, LoraGradientsMatchFiniteDifferences) {
  const Gpt2Config cfg = tiny();
  Gpt2 m(cfg);
  m.init_random(11);
  LoraConfig lc;
  lc.rank = 3;
  lc.alpha = 1.5;
  lc.dropout = 0.25;
  lc.targets = parse_lora_targets("c_attn,mlp.c_proj,head");
  Lora lora(cfg, lc);
  lora.init(5);
  std::mt19937 gen(3);
  std::normal_distribution<float> d(0.0f, 0.3f);
  for (float& v : lora.params()) v += d(gen);  // B non-zero too
  m.set_lora(&lora);
  EXPECT_FALSE(m.has_grads());
  const Packed p = make_batch({7, 5}, cfg.V, 12);
  auto loss = [&]() {
    m.set_dropout_seed(4);  // the same dropout masks every time
    return m.forward(p.in, p.tg, p.off, /*training=*/true).loss_sum;
  };
  m.zero_grad();
  m.set_dropout_seed(4);
  m.forward_backward(p.in, p.tg, p.off, 1.0f);
  EXPECT_FALSE(m.has_grads());
  const std::vector<float> g = copy(lora.grads());
  const auto params = lora.params();
  // fp32 losses: the difference quotient carries ~1e-3 of noise, so the error is measured
  // against the largest gradient.
  double max_err = 0, max_g = 0;
  for (size_t i = 0; i < params.size(); i += 7) {
    const float x0 = params[i];
    const float h = 1e-2f;
    params[i] = x0 + h;
    const double up = loss();
    params[i] = x0 - h;
    const double down = loss();
    params[i] = x0;
    const double fd = (up - down) / (2.0 * h);
    max_err = std::max(max_err, std::abs(fd - g[i]));
    max_g = std::max(max_g, std::abs(static_cast<double>(g[i])));
  }
  EXPECT_GT(max_g, 1e-2);
  EXPECT_LT(max_err, 1e-2 * max_g);
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

// AdamW inside the backward pass (set_fused_update) makes exactly the updates of the plain step:
// the same gradients (accumulated in the same order) and the same elementwise AdamW, so the
// weights are bitwise equal after several steps, tied and untied, fp32 and bf16, with dropout.
// The gradient norm is summed slice by slice instead of in one pass: equal to 1e-12.
TEST(Gpt2, FusedUpdateEqualsThePlainStep) {
  for (const bool tied : {false, true}) {
    for (const Precision prec : {Precision::kFp32, Precision::kBf16}) {
      SCOPED_TRACE(fmt::format("tied {} {}", tied, prec == Precision::kBf16 ? "bf16" : "fp32"));
      Gpt2Config c = tiny(0.1f, tied);
      c.L = 3;  // an odd count, so both gradient slots see two blocks
      Gpt2 plain(c), fused(c);
      plain.init_random(4);
      fused.init_random(4);
      plain.set_precision(prec);
      fused.set_precision(prec);
      AdamWConfig ac;
      ac.lr = 1e-2;
      AdamW opt_plain(plain.table().total(), ac), opt_fused(fused.table().total(), ac);
      fused.set_fused_update([&](int64_t offset, std::span<const float> g) {
        opt_fused.update(fused.params(), offset, g);
      });
      EXPECT_THROW(fused.grads(), InternalError);
      for (int step = 0; step < 3; ++step) {
        const Packed b = make_batch({5, 9, 2}, c.V, 10 + static_cast<uint32_t>(step));
        for (Gpt2* m : {&plain, &fused}) {
          m->set_dropout_seed(static_cast<uint64_t>(step));
          m->zero_grad();
        }
        const double lr = 1e-2 * (step + 1);
        opt_fused.begin_step(lr);
        const LossResult lp = plain.forward_backward(b.in, b.tg, b.off, 0.1f);
        const LossResult lf = fused.forward_backward(b.in, b.tg, b.off, 0.1f);
        EXPECT_EQ(lp.loss_sum, lf.loss_sum);
        const double np = plain.grad_norm(), nf = fused.grad_norm();
        EXPECT_NEAR(nf, np, 1e-12 * np);
        opt_plain.step(plain.params(), plain.grads(), lr);
        ASSERT_TRUE(copy(plain.params()) == copy(fused.params())) << "step " << step;
      }
      EXPECT_TRUE(copy(opt_plain.m()) == copy(opt_fused.m()));
      EXPECT_TRUE(copy(opt_plain.v()) == copy(opt_fused.v()));
      EXPECT_TRUE(fused.trainable().grads.empty());  // no whole-model gradient exists
    }
  }
}

// A gradient that is not finite reaches no weight: the first slice handed over (the last block)
// already carries it, nothing is updated, and the norm says so.
TEST(Gpt2, FusedUpdateKeepsBackANonFiniteGradient) {
  Gpt2 m(tiny());
  m.init_random(5);
  m.params()[m.table().find("ln_f.weight")->offset] = NAN;
  int calls = 0;
  m.set_fused_update([&](int64_t, std::span<const float>) { ++calls; });
  const Packed b = make_batch({6, 4}, m.config().V, 3);
  m.zero_grad();
  m.forward_backward(b.in, b.tg, b.off, 1.0f);
  EXPECT_EQ(calls, 0);
  EXPECT_FALSE(std::isfinite(m.grad_norm()));
  m.set_fused_update({});
  EXPECT_NO_THROW(m.grads());  // off again: the whole gradient is laid out
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

TEST(AdamW, ReleasedStateFreesItsBytesAndRefusesAnotherStep) {
  AdamW opt(1000, AdamWConfig{});
  std::vector<float> p(1000, 1.0f), g(1000, 0.5f);
  opt.step(p, g);
  EXPECT_EQ(opt.release_state(), 2 * 1000 * 4);  // m and v
  EXPECT_TRUE(opt.m().empty());
  EXPECT_THROW(opt.step(p, g), InternalError);
}

}  // namespace
}  // namespace llmft
