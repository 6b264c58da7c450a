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
  // The allocation-free per-layer lookup lands on the same tensors as the name lookup.
  for (const char* suffix : {"ln_1.weight", "attn.c_attn.bias", "mlp.c_proj.weight", "ln_2.bias"}) {
    EXPECT_EQ(&t.layer(0, suffix), t.find(std::string("h.0.") + suffix)) << suffix;
    EXPECT_EQ(&t.layer(23, suffix), t.find(std::string("h.23.") + suffix)) << suffix;
  }
}

TEST(Params, UnknownNameIsUsageError) {
  EXPECT_THROW(Gpt2Config::from_name("gpt3"), UsageError);
}
