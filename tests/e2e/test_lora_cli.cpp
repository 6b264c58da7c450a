// `llmft finetune --lora`, `llmft merge` and `--adapter` end to end on the tiny random model: the
// adapter folder in PEFT's layout, resume after Ctrl-C and kill -9 bit-identical to an
// uninterrupted run, continuing an adapter, --merge and `llmft merge` giving the model that
// `generate --adapter` runs unmerged, and clear errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llmft/core/io.h"
#include "llmft/io/hf_folder.h"
#include "llmft/io/safetensors.h"
#include "llmft/train/metrics.h"
#include "test_util.h"

using namespace llmft;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path tiny_data() { return test::test_data_dir() / "finetune-tiny.json"; }

// 20 train entries / batch 4 = 5 steps per epoch; 2 epochs = 10 steps. A high learning rate so
// that the adapters move far from zero within a few steps.
std::vector<std::string> lora_args(const fs::path& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"finetune", "--model", "random:tiny", "--data",
                                tiny_data().string(), "--batch-size", "4", "--epochs", "2",
                                "--eval-freq", "3", "--eval-batches", "1", "--lr", "1e-2",
                                "--max-new-tokens", "6", "--sample-tokens", "4", "--threads",
                                "2", "--output", out.string(), "--no-judge", "--lora",
                                "--lora-rank", "4", "--lora-alpha", "8", "--untied"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

std::string describe(const test::RunResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

// The tiny base model as a folder (a 0-step full run writes it with the run's seed).
fs::path base_folder(const fs::path& root) {
  const auto r = test::run_llmft({"finetune", "--model", "random:tiny", "--data",
                                  tiny_data().string(), "--max-steps", "1", "--lr", "1e-9",
                                  "--weight-decay", "0", "--untied", "--no-test-answers",
                                  "--sample-tokens", "0", "--no-judge", "--threads", "2",
                                  "--output", (root / "base").string()});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  return root / "base" / "model";
}

}  // namespace

TEST(LoraCli, WritesAPeftAdapterAndNoFullModel) {
  test::TempDir dir;
  const auto r = test::run_llmft(lora_args(dir / "run", {"--lora-targets", "c_attn,mlp.c_proj,head"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("LoRA: "), std::string::npos) << r.out;
  const fs::path ad = dir / "run" / "adapter";
  EXPECT_FALSE(fs::exists(dir / "run" / "model"));
  ASSERT_TRUE(fs::exists(ad / "adapter_config.json"));
  const json c = json::parse(read_file(ad / "adapter_config.json"));
  EXPECT_EQ(c["peft_type"], "LORA");
  EXPECT_EQ(c["task_type"], "CAUSAL_LM");
  EXPECT_EQ(c["r"], 4);
  EXPECT_EQ(c["lora_alpha"], 8.0);
  EXPECT_EQ(c["lora_dropout"], 0.0);
  EXPECT_EQ(c["fan_in_fan_out"], true);
  EXPECT_EQ(c["bias"], "none");
  EXPECT_EQ(c["base_model_name_or_path"], "random:tiny");
  EXPECT_EQ(c["target_modules"], json({"c_attn", "lm_head", "mlp.c_proj"}));
  // PEFT's names and shapes: lora_A (r, in), lora_B (out, r); tiny: C = 64, two layers.
  const SafetensorsFile st(ad / "adapter_model.safetensors");
  EXPECT_EQ(st.metadata().at("format"), "pt");
  EXPECT_EQ(st.tensors().size(), 2u * (2 * 2 + 1));
  const auto* a = st.find("base_model.model.transformer.h.1.attn.c_attn.lora_A.weight");
  const auto* b = st.find("base_model.model.transformer.h.1.attn.c_attn.lora_B.weight");
  const auto* p = st.find("base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight");
  const auto* h = st.find("base_model.model.lm_head.lora_B.weight");
  ASSERT_TRUE(a && b && p && h);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(b->shape, (std::vector<int64_t>{192, 4}));
  EXPECT_EQ(p->shape, (std::vector<int64_t>{4, 256}));
  EXPECT_EQ(h->shape, (std::vector<int64_t>{50257, 4}));
  // Trained: B moved away from its zero start.
  std::vector<float> bw(static_cast<size_t>(b->numel));
  st.read_f32(*b, bw);
  EXPECT_GT(*std::max_element(bw.begin(), bw.end()), 1e-4f);
  const json s = json::parse(read_file(dir / "run" / "summary.json"));
  EXPECT_EQ(s["outputs"]["adapter"], ad.string());
  EXPECT_TRUE(s["outputs"]["model"].is_null());
  EXPECT_LT(s["model"]["trainable_parameters"].get<int64_t>(),
            s["model"]["parameters"].get<int64_t>() / 10);
}

TEST(LoraCli, ResumeAfterInterruptAndKillEqualsUninterruptedRun) {
  test::TempDir dir;
  const std::vector<std::string> common = {"--no-test-answers", "--lora-dropout", "0.1",
                                           "--precision", "bf16"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return extra;
  };
  const auto full = test::run_llmft(lora_args(dir / "full", with({})));
  ASSERT_EQ(full.exit_code, 0) << describe(full);
  const auto cut = test::run_llmft(lora_args(dir / "cut", with({"--interrupt-after-step", "3"})));
  ASSERT_EQ(cut.exit_code, 130) << describe(cut);
  const auto res = test::run_llmft({"finetune", "--resume", (dir / "cut").string()});
  ASSERT_EQ(res.exit_code, 0) << describe(res);
  const auto killed = test::run_llmft(lora_args(dir / "kill", with({"--kill-after-step", "6",
                                                                     "--checkpoint-every", "2"})));
  ASSERT_NE(killed.exit_code, 0);
  const auto res2 = test::run_llmft({"finetune", "--resume", (dir / "kill").string()});
  ASSERT_EQ(res2.exit_code, 0) << describe(res2);
  const auto want = read_metrics(dir / "full" / "metrics.jsonl");
  for (const char* run : {"cut", "kill"}) {
    const auto got = read_metrics(dir / run / "metrics.jsonl");
    ASSERT_EQ(got.steps.size(), want.steps.size()) << run;
    for (size_t i = 0; i < want.steps.size(); ++i)
      EXPECT_EQ(got.steps[i].loss, want.steps[i].loss) << run << " step " << i;
  }
  // The adapter folders are bit-identical (no model folder to read the config from: build it).
  auto params = [&](const char* run) {
    const SafetensorsFile st(dir / run / "adapter" / "adapter_model.safetensors");
    std::vector<float> all;
    for (const auto& t : st.tensors()) {
      std::vector<float> v(static_cast<size_t>(t.numel));
      st.read_f32(t, v);
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  EXPECT_TRUE(params("cut") == params("full"));
  EXPECT_TRUE(params("kill") == params("full"));
}

TEST(LoraCli, MergedModelAnswersAsBasePlusAdapter) {
  test::TempDir dir;
  const fs::path base = base_folder(dir.path());
  const auto r = test::run_llmft(
      {"finetune", "--model", base.string(), "--data", tiny_data().string(), "--batch-size", "4",
       "--max-steps", "6", "--lr", "2e-2", "--no-test-answers", "--sample-tokens", "0",
       "--no-judge", "--threads", "2", "--output", (dir / "run").string(), "--lora",
       "--lora-targets", "all", "--merge"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  ASSERT_TRUE(fs::exists(dir / "run" / "model" / "model.safetensors"));
  const json c = json::parse(read_file(dir / "run" / "adapter" / "adapter_config.json"));
  EXPECT_EQ(c["base_model_name_or_path"], base.string());
  // `llmft merge` writes the same weights as --merge.
  const auto m = test::run_llmft({"merge", "--model", base.string(), "--adapter",
                                  (dir / "run" / "adapter").string(), "-o",
                                  (dir / "merged").string()});
  ASSERT_EQ(m.exit_code, 0) << describe(m);
  const HfModel a = read_hf_folder(dir / "run" / "model");
  const HfModel b = read_hf_folder(dir / "merged");
  EXPECT_FALSE(a.model.config().tied);  // the head adapter unties the head
  EXPECT_TRUE(std::equal(a.model.params().begin(), a.model.params().end(),
                         b.model.params().begin(), b.model.params().end()));
  // Greedy answers: merged model == base + adapter unmerged; and they differ from the base's.
  auto answer = [&](std::vector<std::string> model) {
    std::vector<std::string> args = {"generate", "--max-new-tokens", "12", "--threads", "2"};
    args.insert(args.end(), model.begin(), model.end());
    args.push_back("Name a color.");
    const auto g = test::run_llmft(args);
    EXPECT_EQ(g.exit_code, 0) << describe(g);
    return g.out;
  };
  const std::string merged = answer({"--model", (dir / "merged").string()});
  const std::string unmerged =
      answer({"--model", base.string(), "--adapter", (dir / "run" / "adapter").string()});
  EXPECT_EQ(merged, unmerged);
  EXPECT_NE(merged, answer({"--model", base.string()}));
}

TEST(LoraCli, ContinuesAnExistingAdapter) {
  test::TempDir dir;
  const auto first = test::run_llmft(lora_args(dir / "a", {"--no-test-answers", "--max-steps", "3"}));
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  const auto next = test::run_llmft(lora_args(
      dir / "b", {"--no-test-answers", "--max-steps", "2", "--adapter", (dir / "a" / "adapter").string()}));
  // --lora-rank with --adapter is refused (the adapter's rank is used).
  ASSERT_EQ(next.exit_code, 2) << describe(next);
  EXPECT_NE(next.err.find("--lora-rank cannot be combined with --adapter"), std::string::npos);
  const auto ok = test::run_llmft(
      {"finetune", "--model", "random:tiny", "--data", tiny_data().string(), "--batch-size", "4",
       "--max-steps", "2", "--lr", "1e-2", "--no-test-answers", "--sample-tokens", "0",
       "--no-judge", "--threads", "2", "--untied", "--output", (dir / "b").string(), "--lora",
       "--adapter", (dir / "a" / "adapter").string()});
  ASSERT_EQ(ok.exit_code, 0) << describe(ok);
  EXPECT_NE(ok.out.find("rank 4, alpha 8"), std::string::npos) << ok.out;
  // Its first loss is the first run's model after 3 steps, not the base's: lower than run a's
  // first step.
  const auto a = read_metrics(dir / "a" / "metrics.jsonl");
  const auto b = read_metrics(dir / "b" / "metrics.jsonl");
  EXPECT_LT(b.steps[0].loss, a.steps[0].loss);
  const json c = json::parse(read_file(dir / "b" / "config.json"));
  EXPECT_EQ(c["options"]["lora_rank"], 4);
}

TEST(LoraCli, BadAdaptersAreClearErrors) {
  test::TempDir dir;
  const fs::path base = base_folder(dir.path());
  auto gen = [&](const fs::path& adapter) {
    return test::run_llmft({"generate", "--model", base.string(), "--adapter", adapter.string(),
                            "--max-new-tokens", "2", "hi"});
  };
  const auto missing = gen(dir / "nope");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("no such adapter folder"), std::string::npos) << missing.err;

  // An adapter for another model (C = 128, four layers: random:small) does not fit tiny.
  const auto small = test::run_llmft(
      {"finetune", "--model", "random:small", "--data", tiny_data().string(), "--batch-size", "4",
       "--max-steps", "1", "--no-test-answers", "--sample-tokens", "0", "--no-judge",
       "--threads", "2", "--output", (dir / "small").string(), "--lora"});
  ASSERT_EQ(small.exit_code, 0) << describe(small);
  const auto other = gen(dir / "small" / "adapter");
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("another base model (random:small)"), std::string::npos) << other.err;

  // Unsupported settings and unknown tensors name the file.
  fs::copy(dir / "small" / "adapter", dir / "dora");
  json c = json::parse(read_file(dir / "dora" / "adapter_config.json"));
  c["use_dora"] = true;
  write_file_atomic(dir / "dora" / "adapter_config.json", c.dump());
  const auto dora = gen(dir / "dora");
  EXPECT_EQ(dora.exit_code, 1);
  EXPECT_NE(dora.err.find("DoRA"), std::string::npos) << dora.err;
  write_file_atomic(dir / "dora" / "adapter_config.json", "{\"peft_type\": ");
  const auto bad_json = gen(dir / "dora");
  EXPECT_NE(bad_json.err.find("adapter_config.json: line 1, column 15: the JSON ends early (a value is missing)"), std::string::npos)
      << bad_json.err;
}
