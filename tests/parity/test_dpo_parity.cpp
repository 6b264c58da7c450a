// llmft's DPO against the PyTorch reference (tests/reference/dpo_reference.py, golden
// tests/golden/dpo_tiny.safetensors): the reference's padded policy + frozen-reference loop
// against our packed batches (chosen and rejected in one pass) with the reference scored once.
// Reference log-probs, per-step policy log-probs, loss, rewards, gradients, parameters after
// three AdamW steps; in fp32 and in bf16.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "golden_reader.h"
#include "llmft/data/preference.h"
#include "llmft/model/adamw.h"
#include "llmft/model/gpt2.h"
#include "llmft/train/dpo_loss.h"
#include "test_util.h"

namespace llmft {
namespace {

using test::all_close;
using test::Golden;

// Log-probs and the loss: same fp32 math in another order (packed rows, fused head), a few ulps
// per op: 1e-5 relative, as the model's own parity test.
constexpr double kRtol = 1e-5, kAtol = 1e-6;
// Rewards are differences of two mean log-probs of size ~4.6 (policy minus reference): their
// error is the log-probs' (1e-5 relative of ~4.6), not 1e-5 of the (small) difference.
constexpr double kRewardAtol = 5e-5;
// Gradients: as the model's parity test (backward chains twice the ops, sums over tokens).
constexpr double kGradRtol = 1e-4, kGradAtol = 1e-6;

const Golden& golden() {
  static const Golden g(test::golden_dir() / "dpo_tiny.safetensors");
  return g;
}

struct DpoCase {
  Gpt2Config cfg;
  int64_t K = 0, S = 0, B = 0, max_length = 0;
  double beta = 0, lr = 0, wd = 0;
  PreferenceTokens pairs;
  std::vector<std::vector<int64_t>> batches;  // (S, B)
};

TokenizedDataset side(const char* key, const std::vector<int64_t>& prompt_lens) {
  const auto flat = golden().i32(std::string("pairs.") + key);
  const auto off = golden().i32(std::string("pairs.") + key + "_offsets");
  std::vector<std::vector<int32_t>> ids;
  for (size_t k = 0; k + 1 < off.size(); ++k) ids.emplace_back(flat.begin() + off[k], flat.begin() + off[k + 1]);
  return make_tokenized_dataset(ids, prompt_lens);
}

DpoCase setup() {
  const auto c = golden().i32("config");
  DpoCase s;
  s.cfg = test::golden_config(golden(), /*tied=*/false);
  s.K = c[5];
  s.S = c[6];
  s.B = c[7];
  s.max_length = c[8];
  s.beta = golden().f32("beta")[0];
  s.lr = golden().f32("lr")[0];
  s.wd = golden().f32("weight_decay")[0];
  const auto pl = golden().i32("pairs.prompt_lens");
  const std::vector<int64_t> prompt_lens(pl.begin(), pl.end());
  s.pairs.chosen = side("chosen", prompt_lens);
  s.pairs.rejected = side("rejected", prompt_lens);
  const auto b = golden().i32("steps.batches");
  for (int64_t i = 0; i < s.S; ++i) s.batches.emplace_back(b.begin() + i * s.B, b.begin() + (i + 1) * s.B);
  return s;
}

void load_params(Gpt2& model) {
  for (const auto& s : model.table().specs()) {
    const auto v = golden().f32("param." + s.name);
    ASSERT_EQ(static_cast<int64_t>(v.size()), s.numel) << s.name;
    std::copy(v.begin(), v.end(), model.table().view(model.params(), s).begin());
  }
}

std::vector<double> as_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// The reference scores of all K pairs, one packed forward.
void reference_scores(Gpt2& model, const DpoCase& s, std::vector<double>& chosen,
                      std::vector<double>& rejected) {
  std::vector<int64_t> all(static_cast<size_t>(s.K));
  for (int64_t k = 0; k < s.K; ++k) all[k] = k;
  const PreferenceBatch b = collate_preferences(s.pairs, all, s.max_length);
  const auto lp = score_pairs(model, b, /*training=*/false);
  chosen.clear();
  rejected.clear();
  for (int64_t k = 0; k < s.K; ++k) {
    chosen.push_back(lp[2 * k]);
    rejected.push_back(lp[2 * k + 1]);
  }
}

// Pair-interleaved scores (chosen 0, rejected 0, chosen 1, ...) as the reference lays them out:
// the B chosen, then the B rejected.
std::vector<double> chosen_then_rejected(const std::vector<double>& v) {
  std::vector<double> out;
  for (size_t i = 0; i < v.size(); i += 2) out.push_back(v[i]);
  for (size_t i = 1; i < v.size(); i += 2) out.push_back(v[i]);
  return out;
}

struct DpoRun {
  std::vector<double> ref_c, ref_r, loss, chosen, rejected;
  std::vector<std::vector<double>> policy;
};

// S DPO steps as llmft's loop runs them; grads_ok checks the gradients after steps 0 and S-1.
DpoRun run_steps(Gpt2& model, const DpoCase& s, bool check_grads) {
  DpoRun r;
  reference_scores(model, s, r.ref_c, r.ref_r);
  AdamWConfig ac;
  ac.lr = static_cast<float>(s.lr);
  ac.weight_decay = s.wd;
  AdamW opt(model.table().total(), ac);
  for (int64_t step = 0; step < s.S; ++step) {
    const auto& idx = s.batches[step];
    const PreferenceBatch b = collate_preferences(s.pairs, idx, s.max_length);
    model.zero_grad();
    const auto policy = score_pairs(model, b, /*training=*/true);
    std::vector<double> ref;
    for (int64_t i : idx) {
      ref.push_back(r.ref_c[i]);
      ref.push_back(r.ref_r[i]);
    }
    std::vector<float> dl(static_cast<size_t>(b.target_tokens()));
    const DpoStats st = dpo_loss(policy, ref, s.beta, b.target_offsets, dl);
    model.backward(dl);
    r.loss.push_back(st.loss);
    r.chosen.push_back(st.chosen_reward);
    r.rejected.push_back(st.rejected_reward);
    r.policy.push_back(chosen_then_rejected(policy));
    if (check_grads && (step == 0 || step == s.S - 1)) {
      for (const auto& spec : model.table().specs()) {
        EXPECT_TRUE(all_close(model.table().view(std::span<const float>(model.grads()), spec),
                              golden().f32(fmt::format("grad{}.{}", step, spec.name)), kGradRtol,
                              kGradAtol))
            << "step " << step << " " << spec.name;
      }
    }
    opt.step(model.params(), model.grads());
  }
  return r;
}

TEST(DpoParity, Fp32StepsMatchThePyTorchReference) {
  const DpoCase s = setup();
  Gpt2 model(s.cfg);
  load_params(model);
  const DpoRun r = run_steps(model, s, /*check_grads=*/true);
  EXPECT_TRUE(all_close(r.ref_c, as_double(golden().f32("reference.chosen")), kRtol, kAtol));
  EXPECT_TRUE(all_close(r.ref_r, as_double(golden().f32("reference.rejected")), kRtol, kAtol));
  const auto want_policy = golden().f32("steps.policy");
  for (int64_t step = 0; step < s.S; ++step) {
    const std::vector<float> w(want_policy.begin() + step * 2 * s.B,
                               want_policy.begin() + (step + 1) * 2 * s.B);
    EXPECT_TRUE(all_close(r.policy[step], as_double(w), kRtol, kAtol)) << "step " << step;
  }
  EXPECT_TRUE(all_close(r.loss, as_double(golden().f32("steps.loss")), kRtol, kAtol));
  EXPECT_TRUE(all_close(r.chosen, as_double(golden().f32("steps.chosen_reward")), 0, kRewardAtol));
  EXPECT_TRUE(
      all_close(r.rejected, as_double(golden().f32("steps.rejected_reward")), 0, kRewardAtol));
  // The third step moves rewards far from zero: a real check of the loss, not of ln 2.
  EXPECT_GT(std::abs(r.chosen.back() - r.rejected.back()), 1.0);
  // Parameters after the steps: Adam's update is ~lr per parameter whatever the gradient's size,
  // so a 1e-4 gradient difference on a near-zero gradient moves it by a fraction of lr: 1% of lr.
  const int64_t C = s.cfg.C;
  for (const auto& spec : model.table().specs()) {
    const auto w = model.table().view(std::span<const float>(model.params()), spec);
    std::vector<float> got(w.begin(), w.end());
    std::vector<float> want = golden().f32("after." + spec.name);
    if (spec.name.ends_with("attn.c_attn.bias")) {
      // The key bias's gradient is exactly zero (see Gpt2Parity.ThreeAdamWSteps): both sides
      // update it by normalised rounding noise; compare the q and v parts.
      std::copy(want.begin() + C, want.begin() + 2 * C, got.begin() + C);
    }
    EXPECT_TRUE(all_close(got, want, 1e-5, 0.01 * s.lr)) << spec.name;
  }
}

TEST(DpoParity, Bf16StepsStayWithinOnePercent) {
  const DpoCase s = setup();
  Gpt2 model(s.cfg);
  load_params(model);
  model.set_precision(Precision::kBf16);
  const DpoRun r = run_steps(model, s, /*check_grads=*/false);
  // bf16 products with fp32 accumulation, as PyTorch's bf16 autocast: 1e-2 relative on the
  // log-probs of the starting weights (the reference's, and the first step's policy) and on every
  // step's loss. Later steps' log-probs carry the updates' bf16 differences: AdamW at lr 3e-2 moves
  // a parameter by up to ~lr whatever its gradient's size, so a rounding difference in a
  // near-zero gradient moves it visibly (a few percent on a log-prob by step 3). A reward is the
  // difference of two log-probs: its budget is 1e-2 of the log-probs' size.
  EXPECT_TRUE(all_close(r.ref_c, as_double(golden().f32("reference.chosen")), 1e-2, 0));
  EXPECT_TRUE(all_close(r.loss, as_double(golden().f32("steps.loss")), 1e-2, 0));
  const auto want_policy = as_double(golden().f32("steps.policy"));
  const std::vector<double> first(want_policy.begin(), want_policy.begin() + 2 * s.B);
  EXPECT_TRUE(all_close(r.policy[0], first, 1e-2, 0));
  double size = 0;
  for (double x : want_policy) size = std::max(size, std::abs(x));
  const auto want_c = as_double(golden().f32("steps.chosen_reward"));
  const auto want_r = as_double(golden().f32("steps.rejected_reward"));
  double margin = 0;
  for (size_t i = 0; i < want_c.size(); ++i) margin = std::max(margin, std::abs(want_c[i] - want_r[i]));
  EXPECT_GT(margin, 1.0);  // the steps move the rewards: not a check of zeros
  EXPECT_TRUE(all_close(r.chosen, want_c, 0, 1e-2 * size));
  EXPECT_TRUE(all_close(r.rejected, want_r, 0, 1e-2 * size));
}

}  // namespace
}  // namespace llmft
