// LoRA adapters: step 0 is the base model, merging gives the same logits as running the adapter,
// PEFT's folder layout round-trips bit for bit, and adapters llmft cannot run are clear errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/io/peft.h"
#include "llmft/io/safetensors.h"
#include "test_util.h"

namespace llmft {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::all_close;

Gpt2Config tiny(bool tied) {
  Gpt2Config c;
  c.V = 61;
  c.maxT = 16;
  c.C = 24;
  c.L = 3;
  c.NH = 2;
  c.tied = tied;
  return c;
}

// A trained-looking adapter: PEFT's init, then every tensor moved.
std::unique_ptr<Lora> adapter(const Gpt2Config& cfg, const std::string& targets, uint32_t seed) {
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 6;
  lc.targets = parse_lora_targets(targets);
  auto lora = std::make_unique<Lora>(cfg, lc);
  lora->init(seed);
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 0.2f);
  for (float& v : lora->params()) v += d(gen);
  return lora;
}

std::vector<float> logits(Gpt2& m, const std::vector<int32_t>& ids) {
  const int64_t N = static_cast<int64_t>(ids.size()), V = m.config().V;
  std::vector<int64_t> pos(static_cast<size_t>(N)), off{0, N};
  for (int64_t i = 0; i < N; ++i) pos[static_cast<size_t>(i)] = i;
  std::vector<float> out(static_cast<size_t>(N * V));
  m.forward_logits(out, ids, off, pos);
  return out;
}

const std::vector<int32_t> kIds = {3, 17, 42, 8, 8, 60, 1, 29, 33, 2};

TEST(Lora, FreshAdapterIsTheBaseModel) {
  const Gpt2Config cfg = tiny(false);
  Gpt2 m(cfg);
  m.init_random(1);
  const auto base = logits(m, kIds);
  LoraConfig lc;
  lc.targets = parse_lora_targets("all");
  Lora lora(cfg, lc);
  lora.init(2);
  // B zero, A Kaiming-uniform within 1/sqrt(in).
  const TensorTable& t = lora.table();
  for (const ParamSpec& s : t.specs()) {
    const auto v = t.view(std::span<const float>(lora.params()), s);
    const bool is_b = s.name.find("lora_B") != std::string::npos;
    const float bound = 1.0f / std::sqrt(static_cast<float>(s.shape[1]));
    for (float x : v) {
      if (is_b) ASSERT_EQ(x, 0.0f) << s.name;
      else ASSERT_LE(std::abs(x), bound) << s.name;
    }
  }
  m.set_lora(&lora);
  EXPECT_EQ(logits(m, kIds), base);
}

// Merged weights give the adapter model's logits (fp32: 1e-5), for a tied base with a head
// adapter (the merged model is untied) and an untied one.
TEST(Lora, MergedModelGivesTheAdapterModelsLogits) {
  for (bool tied : {true, false}) {
    const Gpt2Config cfg = tiny(tied);
    Gpt2 m(cfg);
    m.init_random(7);
    const auto plain = logits(m, kIds);
    auto lora = adapter(cfg, "all", 3);
    m.set_lora(lora.get());
    const auto with = logits(m, kIds);
    const auto merged = merged_model(m, *lora);
    EXPECT_FALSE(merged->config().tied);
    EXPECT_EQ(merged->lora(), nullptr);
    EXPECT_TRUE(all_close(logits(*merged, kIds), with, 1e-5, 1e-5)) << "tied " << tied;
    EXPECT_FALSE(all_close(plain, with, 1e-3, 1e-3));  // the adapter does change the model
    // Detaching gives the base back.
    m.set_lora(nullptr);
    EXPECT_EQ(logits(m, kIds), plain);
  }
}

TEST(Peft, AdapterFolderRoundTripsBitForBit) {
  test::TempDir dir;
  const Gpt2Config cfg = tiny(false);
  auto lora = adapter(cfg, "c_attn,attn.c_proj,c_fc,mlp.c_proj", 9);
  write_peft_adapter(dir / "ad", *lora, "gpt2-medium");
  const json c = json::parse(read_file(dir / "ad" / "adapter_config.json"));
  EXPECT_EQ(c["peft_type"], "LORA");
  EXPECT_EQ(c["task_type"], "CAUSAL_LM");
  EXPECT_EQ(c["r"], 4);
  EXPECT_EQ(c["lora_alpha"], 6.0);
  EXPECT_EQ(c["fan_in_fan_out"], true);
  EXPECT_EQ(c["base_model_name_or_path"], "gpt2-medium");
  EXPECT_EQ(c["target_modules"], json({"attn.c_proj", "c_attn", "c_fc", "mlp.c_proj"}));
  const PeftAdapter back = read_peft_adapter(dir / "ad", cfg);
  EXPECT_EQ(back.base_model, "gpt2-medium");
  EXPECT_EQ(back.lora->config().rank, 4);
  EXPECT_EQ(back.lora->config().alpha, 6.0);
  EXPECT_EQ(back.lora->config().targets, lora->config().targets);
  EXPECT_TRUE(back.lora->config().layers.empty());
  ASSERT_EQ(back.lora->params().size(), lora->params().size());
  EXPECT_TRUE(std::equal(lora->params().begin(), lora->params().end(),
                         back.lora->params().begin()));
}

// PEFT's names and shapes for GPT-2 small (FACTS-phase2 §2).
TEST(Peft, Gpt2SmallNamesAndShapes) {
  Gpt2Config cfg;  // gpt2: C 768, L 12
  cfg.V = 50257;
  cfg.maxT = 1024;
  cfg.C = 768;
  cfg.L = 12;
  cfg.NH = 12;
  LoraConfig lc;
  lc.rank = 8;
  Lora lora(cfg, lc);
  const TensorTable& t = lora.table();
  auto shape = [&](const std::string& n) {
    const ParamSpec* s = t.find("base_model.model.transformer.h.0." + n);
    return s ? s->shape : std::vector<int64_t>{};
  };
  EXPECT_EQ(shape("attn.c_attn.lora_A.weight"), (std::vector<int64_t>{8, 768}));
  EXPECT_EQ(shape("attn.c_attn.lora_B.weight"), (std::vector<int64_t>{2304, 8}));
  EXPECT_EQ(shape("attn.c_proj.lora_B.weight"), (std::vector<int64_t>{768, 8}));
  EXPECT_EQ(shape("mlp.c_fc.lora_B.weight"), (std::vector<int64_t>{3072, 8}));
  EXPECT_EQ(shape("mlp.c_proj.lora_A.weight"), (std::vector<int64_t>{8, 3072}));
  EXPECT_EQ(t.specs().size(), 12u * 4 * 2);
  // Rank 16 on every block layer of GPT-2 small: per block c_attn 16 * (768 + 2304), attn
  // c_proj 16 * (768 + 768), c_fc and mlp c_proj 16 * (768 + 3072) each; 2,359,296 in all (the
  // reference's 2,654,208 has separate q, k, v adapters of rank 16 each, i.e. rank 48 on c_attn).
  LoraConfig r16;
  EXPECT_EQ(Lora(cfg, r16).table().numel(), 2359296);
}

// An adapter written elsewhere: a subset of layers (layers_to_transform), rsLoRA, PEFT's
// target_modules by suffix ("c_attn"); the scale follows use_rslora.
TEST(Peft, ReadsAPeftAdapterWithLayerSubsetAndRsLora) {
  test::TempDir dir;
  const Gpt2Config cfg = tiny(false);
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8;
  lc.rslora = true;
  lc.layers = {0, 2};
  lc.targets = parse_lora_targets("c_attn");
  Lora lora(cfg, lc);
  lora.init(1);
  write_peft_adapter(dir / "ad", lora, "x");
  const PeftAdapter back = read_peft_adapter(dir / "ad", cfg);
  EXPECT_EQ(back.lora->config().layers, (std::vector<int64_t>{0, 2}));
  EXPECT_TRUE(back.lora->config().rslora);
  EXPECT_FLOAT_EQ(back.lora->config().scale(), 4.0f);  // 8 / sqrt(4)
  EXPECT_EQ(back.lora->layer(1, LoraTarget::kCAttn), nullptr);
  EXPECT_NE(back.lora->layer(2, LoraTarget::kCAttn), nullptr);
}

void expect_error(const fs::path& dir, const Gpt2Config& cfg, const std::string& what) {
  try {
    read_peft_adapter(dir, cfg);
    ADD_FAILURE() << "no error, expected " << what;
  } catch (const Error& e) {
    const std::string msg = std::string(e.what()) + "\nhint: " + e.hint();
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  }
}

TEST(Peft, AdaptersLlmftCannotRunAreClearErrors) {
  test::TempDir dir;
  const Gpt2Config cfg = tiny(false);
  auto lora = adapter(cfg, "c_attn", 4);
  write_peft_adapter(dir / "ok", *lora, "base");
  // Another base: wider layers or fewer of them.
  Gpt2Config wide = cfg;
  wide.C = 32;
  expect_error(dir / "ok", wide, "another base model (base)");
  Gpt2Config shallow = cfg;
  shallow.L = 2;
  expect_error(dir / "ok", shallow, "adapts layer 2, but the model has 2 layers");
  auto edit = [&](const std::string& name, const std::function<void(json&)>& f) {
    fs::copy(dir / "ok", dir / name);
    json c = json::parse(read_file(dir / name / "adapter_config.json"));
    f(c);
    write_file_atomic(dir / name / "adapter_config.json", c.dump());
    return dir / name;
  };
  expect_error(edit("ia3", [](json& c) { c["peft_type"] = "IA3"; }), cfg, "not \"LORA\"");
  expect_error(edit("dora", [](json& c) { c["use_dora"] = true; }), cfg, "DoRA");
  expect_error(edit("bias", [](json& c) { c["bias"] = "all"; }), cfg, "train biases");
  expect_error(edit("rank", [](json& c) { c["rank_pattern"] = {{"c_attn", 2}}; }), cfg, "per-layer");
  expect_error(edit("r", [](json& c) { c["r"] = 8; }), cfg, "has shape [4,24], expected [8,24]");
  expect_error(edit("names", [](json& c) { c["target_modules"] = {"c_fc"}; }), cfg,
               "target_modules does not name them");
  // An unknown tensor in the weights file.
  fs::copy(dir / "ok", dir / "extra");
  std::vector<float> z(4, 0.0f);
  write_safetensors(dir / "extra" / "adapter_model.safetensors",
                    {{"base_model.model.transformer.wte.lora_A.weight", {2, 2}, z}});
  expect_error(dir / "extra", cfg, "is not a LoRA weight of a GPT-2 layer");
  expect_error(dir / "missing", cfg, "no such adapter folder");
}

}  // namespace
}  // namespace llmft
