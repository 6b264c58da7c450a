// LoRA against the PyTorch reference (tests/reference/lora_reference.py, golden
// tests/golden/lora_tiny.safetensors): PEFT's adapters on every block layer and the head of the
// tiny untied GPT-2, frozen base: loss, every adapter gradient, three AdamW steps over the
// adapters only, in fp32 and (within bf16's 1e-2) in bf16, with forward_backward and with
// forward + backward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "golden_reader.h"
#include "llmft/model/adamw.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/lora.h"
#include "test_util.h"

namespace llmft {
namespace {

using test::all_close;
using test::Golden;

// As the GPT-2 parity tests: fp32 loss 1e-5 relative, gradients 1e-4 (small entries are
// cancellations, hence the absolute floor).
constexpr double kFwdRtol = 1e-5, kFwdAtol = 1e-5;
constexpr double kGradRtol = 1e-4, kGradAtol = 1e-6;
// bf16 products (fp32 accumulation): the loss within 1e-2 relative, as PyTorch's autocast.
constexpr double kBf16Rtol = 1e-2;

const Golden& golden() {
  static const Golden g(test::golden_dir() / "lora_tiny.safetensors");
  return g;
}

struct Setup {
  Gpt2 model;
  Lora lora;
  std::vector<int32_t> inputs, targets;
  std::vector<int64_t> off;
};

Gpt2Config config() { return test::golden_config(golden(), /*tied=*/false); }

LoraConfig lora_config() {
  LoraConfig lc;
  lc.rank = golden().i32("config")[5];
  lc.alpha = golden().f32("lora.alpha")[0];
  lc.targets = parse_lora_targets("all");
  return lc;
}

// The golden base and adapters, attached; the padded batch.
std::unique_ptr<Setup> setup(Precision p) {
  auto s = std::unique_ptr<Setup>(new Setup{Gpt2(config()), Lora(config(), lora_config()), {}, {}, {}});
  for (const auto& spec : s->model.table().specs()) {
    const auto v = golden().f32("param." + spec.name);
    std::copy(v.begin(), v.end(), s->model.table().view(s->model.params(), spec).begin());
  }
  for (const auto& spec : s->lora.table().specs()) {
    EXPECT_EQ(golden().shape("lora." + spec.name), spec.shape) << spec.name;
    const auto v = golden().f32("lora." + spec.name);
    std::copy(v.begin(), v.end(), s->lora.table().view(s->lora.params(), spec).begin());
  }
  s->model.set_lora(&s->lora);
  s->model.set_precision(p);
  s->inputs = golden().i32("batch.inputs");
  s->targets = golden().i32("batch.targets");
  const int64_t B = golden().shape("batch.inputs")[0], T = golden().shape("batch.inputs")[1];
  for (int64_t b = 0; b <= B; ++b) s->off.push_back(b * T);
  return s;
}

int64_t count_targets(const std::vector<int32_t>& t) {
  return std::count_if(t.begin(), t.end(), [](int32_t x) { return x != Gpt2::kIgnoreIndex; });
}

void expect_grads(const Lora& lora, std::span<const float> grads, const std::string& prefix,
                  double rtol, double atol) {
  for (const auto& spec : lora.table().specs())
    EXPECT_TRUE(all_close(lora.table().view(grads, spec), golden().f32(prefix + spec.name), rtol,
                          atol))
        << spec.name;
}

TEST(LoraParity, LossAndAdapterGradients) {
  auto s = setup(Precision::kFp32);
  const float scale = 1.0f / static_cast<float>(count_targets(s->targets));
  s->model.zero_grad();
  const LossResult r = s->model.forward_backward(s->inputs, s->targets, s->off, scale);
  EXPECT_TRUE(all_close(std::vector<float>{float(r.mean())}, golden().f32("loss"), kFwdRtol, kFwdAtol));
  expect_grads(s->lora, s->lora.grads(), "grad.", kGradRtol, kGradAtol);
  EXPECT_FALSE(s->model.has_grads());  // the frozen base has no gradient buffers

  // The split forward() + backward() gives the same.
  std::vector<float> fused(s->lora.grads().begin(), s->lora.grads().end());
  s->model.zero_grad();
  s->model.forward(s->inputs, s->targets, s->off);
  s->model.backward(scale);
  EXPECT_TRUE(all_close(s->lora.grads(), fused, 1e-6, 1e-9));
}

TEST(LoraParity, AdamWStepsOverTheAdaptersOnly) {
  auto s = setup(Precision::kFp32);
  const std::vector<float> base(s->model.params().begin(), s->model.params().end());
  const Gpt2::Trainable t = s->model.trainable();
  ASSERT_EQ(t.params.data(), s->lora.params().data());
  AdamW opt(t.table.total(), {1e-2, 0.9, 0.999, 1e-8, 0.1});
  const float scale = 1.0f / static_cast<float>(count_targets(s->targets));
  std::vector<float> losses;
  for (int step = 0; step < 3; ++step) {
    s->model.zero_grad();
    losses.push_back(
        static_cast<float>(s->model.forward_backward(s->inputs, s->targets, s->off, scale).mean()));
    opt.step(t.params, t.grads);
  }
  EXPECT_TRUE(all_close(losses, golden().f32("adamw.losses"), kFwdRtol, kFwdAtol));
  // Three updates chain three gradients: 1e-4 as a gradient.
  expect_grads(s->lora, s->lora.params(), "adamw.", kGradRtol, kGradAtol);
  EXPECT_TRUE(std::equal(base.begin(), base.end(), s->model.params().begin()));  // frozen
}

TEST(LoraParity, Bf16WithinBf16Tolerance) {
  auto s = setup(Precision::kBf16);
  const float scale = 1.0f / static_cast<float>(count_targets(s->targets));
  s->model.zero_grad();
  const LossResult r = s->model.forward_backward(s->inputs, s->targets, s->off, scale);
  EXPECT_NEAR(r.mean(), golden().f32("loss")[0], kBf16Rtol * golden().f32("loss")[0]);
  // Gradients: the norm of the difference within 1e-2 of the norm (per tensor), as bf16 rounds
  // every product input to 8 bits of mantissa.
  for (const auto& spec : s->lora.table().specs()) {
    const auto got = s->lora.table().view(std::span<const float>(s->lora.grads()), spec);
    const auto want = golden().f32("grad." + spec.name);
    double d = 0, n = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      d += (got[i] - want[i]) * double(got[i] - want[i]);
      n += want[i] * double(want[i]);
    }
    EXPECT_LT(std::sqrt(d), 2e-2 * std::sqrt(n)) << spec.name;
  }
}

}  // namespace
}  // namespace llmft
