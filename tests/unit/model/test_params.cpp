// The parameter table: counts match GPT-2's published sizes, names are Hugging Face's.
#include "llmft/core/error.h"
#include "llmft/model/params.h"
#include "test_util.h"

using namespace llmft;

static int64_t count(const ParamTable& t) {
  int64_t n = 0;
  for (const auto& s : t.specs()) n += s.numel;
  return n;
}

TEST(Params, Gpt2SmallTiedIs124M) {
  auto cfg = Gpt2Config::from_name("gpt2");
  cfg.tied = true;
  EXPECT_EQ(count(ParamTable(cfg)), 124439808);  // HF GPT2LMHeadModel num_parameters()
}

TEST(Params, MediumUntiedIs406M) {
  const auto cfg = Gpt2Config::from_name("gpt2-medium");  // untied by default (SPEC §4)
  const ParamTable t(cfg);
  EXPECT_EQ(count(t), 354823168 + 50257 * 1024);
  ASSERT_NE(t.find("lm_head.weight"), nullptr);
  EXPECT_EQ(t.find("h.23.attn.c_attn.weight")->shape, (std::vector<int64_t>{1024, 3072}));
  EXPECT_EQ(t.find("h.0.attn.c_attn.weight")->offset % 16, 0);
  // The typed view lands on the tensors the file names name, with their sizes.
  std::vector<float> flat(static_cast<size_t>(t.total()));
  const Gpt2Tensors<float> w = t.bind(std::span<float>(flat));
  auto at = [&](const std::string& name) { return t.view(std::span<float>(flat), *t.find(name)); };
  auto same = [](std::span<float> a, std::span<float> b) {
    return a.data() == b.data() && a.size() == b.size();
  };
  ASSERT_EQ(w.h.size(), 24u);
  EXPECT_TRUE(same(w.wte, at("wte.weight")));
  EXPECT_TRUE(same(w.h[0].ln_1.w, at("h.0.ln_1.weight")));
  EXPECT_TRUE(same(w.h[0].c_attn.b, at("h.0.attn.c_attn.bias")));
  EXPECT_TRUE(same(w.h[23].attn_proj.w, at("h.23.attn.c_proj.weight")));
  EXPECT_TRUE(same(w.h[23].mlp_proj.w, at("h.23.mlp.c_proj.weight")));
  EXPECT_TRUE(same(w.h[23].ln_2.b, at("h.23.ln_2.bias")));
  EXPECT_TRUE(same(w.ln_f.b, at("ln_f.bias")));
  EXPECT_TRUE(same(w.lm_head, at("lm_head.weight")));
  EXPECT_EQ(t.numel(), 354823168 + 50257 * 1024);
}

TEST(Params, TiedHeadIsTheEmbedding) {
  auto cfg = Gpt2Config::from_name("gpt2");
  cfg.tied = true;
  const ParamTable t(cfg);
  std::vector<float> flat(static_cast<size_t>(t.total()));
  const Gpt2Tensors<float> w = t.bind(std::span<float>(flat));
  EXPECT_EQ(t.find("lm_head.weight"), nullptr);
  EXPECT_EQ(w.lm_head.data(), w.wte.data());
  EXPECT_EQ(w.lm_head.size(), w.wte.size());
}

TEST(Params, UnknownNameIsUsageError) {
  EXPECT_THROW(Gpt2Config::from_name("gpt3"), UsageError);
}
