// `llmft dpo` end to end on a tiny random model and 24 preference pairs
// (tests/data/prefs-tiny.json, the first entries of the bundled file: train 20, test 2, val 2):
// every output and its content, the reference scored once and stored, evaluation on the
// reference's schedule, the policy learning the preference, resume after Ctrl-C and after kill -9
// equal to an uninterrupted run, and bad input.
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <set>

#include "llmft/core/io.h"
#include "llmft/io/hf_folder.h"
#include "llmft/train/metrics.h"
#include "test_util.h"

using namespace llmft;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path prefs() { return test::test_data_dir() / "prefs-tiny.json"; }

// 20 train pairs / batch 4 = 5 steps per epoch.
std::vector<std::string> args(const fs::path& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"dpo",          "--model",      "random:tiny",   "--data",
                                prefs().string(), "--batch-size", "4",            "--epochs",
                                "2",            "--eval-freq",  "2",              "--eval-batches",
                                "2",            "--lr",         "2e-3",           "--beta",
                                "0.5",          "--max-new-tokens", "4",          "--sample-tokens",
                                "3",            "--threads",    "1",              "--output",
                                out.string()};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

std::string describe(const test::RunResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

json read_json(const fs::path& p) { return json::parse(read_file(p)); }

void expect_same_run(const MetricsHistory& a, const MetricsHistory& b) {
  ASSERT_EQ(a.steps.size(), b.steps.size());
  for (size_t i = 0; i < a.steps.size(); ++i) {
    EXPECT_EQ(a.steps[i].loss, b.steps[i].loss) << "step " << i;
    EXPECT_EQ(a.steps[i].rewards->chosen, b.steps[i].rewards->chosen) << "step " << i;
    EXPECT_EQ(a.steps[i].rewards->rejected, b.steps[i].rewards->rejected) << "step " << i;
    EXPECT_EQ(a.steps[i].batch, b.steps[i].batch);
    EXPECT_EQ(a.steps[i].tokens_seen, b.steps[i].tokens_seen);
  }
  ASSERT_EQ(a.evals.size(), b.evals.size());
  for (size_t i = 0; i < a.evals.size(); ++i) {
    EXPECT_EQ(a.evals[i].val_loss, b.evals[i].val_loss);
    EXPECT_EQ(a.evals[i].val_rewards->margin(), b.evals[i].val_rewards->margin());
  }
}

TEST(Dpo, WritesEveryOutputAndLearnsThePreference) {
  test::TempDir dir;
  const fs::path run = dir / "run";
  const auto r = test::run_llmft(args(run));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  // The reference's line, after the first update (as the reference evaluates).
  EXPECT_NE(r.out.find("Ep 1 (Step 000000): Train loss 0."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(", Train reward margins "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Ep 2 (Step 000008): "), std::string::npos) << r.out;

  const auto h = read_metrics(run / "metrics.jsonl");
  ASSERT_EQ(h.steps.size(), 10u);
  // Before the first update the policy is the reference: loss ln 2, rewards 0 (up to the
  // rounding of a differently packed batch).
  EXPECT_NEAR(h.steps[0].loss, std::log(2.0), 1e-5);
  for (size_t i = 0; i < h.steps.size(); ++i) {
    const auto& s = h.steps[i];
    EXPECT_EQ(s.step, static_cast<int64_t>(i));
    ASSERT_TRUE(s.rewards.has_value());
    ASSERT_EQ(s.batch.size(), 4u);
    for (int64_t idx : s.batch) EXPECT_TRUE(idx >= 0 && idx < 20) << idx;
  }
  // Evaluations after steps 0, 2, 4, 6, 8 and the last one, 9, with train and validation rewards.
  ASSERT_EQ(h.evals.size(), 6u);
  for (size_t i = 0; i < h.evals.size(); ++i) {
    EXPECT_EQ(h.evals[i].step, i < 5 ? static_cast<int64_t>(2 * i) : 9);
    ASSERT_TRUE(h.evals[i].train_rewards && h.evals[i].val_rewards);
  }
  // The policy learns to prefer the chosen answers of the pairs it trains on.
  EXPECT_GT(h.evals.back().train_rewards->margin(), 0.05);
  EXPECT_LT(h.evals.back().train_loss, std::log(2.0) - 0.01);
  // The field names other tools read.
  const std::string log = read_file(run / "metrics.jsonl");
  for (const char* f : {"\"chosen_reward\"", "\"rejected_reward\"", "\"reward_margin\"",
                        "\"val_reward_margin\"", "\"train_chosen_reward\"", "\"batch\""}) {
    EXPECT_NE(log.find(f), std::string::npos) << f;
  }

  // The reference scores: train and validation pairs, none for the 2 test pairs (20, 21).
  const json ref = read_json(run / "reference-logprobs.json");
  ASSERT_EQ(ref["chosen"].size(), 24u);
  for (size_t i = 0; i < 24; ++i) {
    const bool test_entry = i == 20 || i == 21;
    EXPECT_EQ(ref["chosen"][i].is_null(), test_entry) << i;
    EXPECT_EQ(ref["rejected"][i].is_null(), test_entry) << i;
    if (!test_entry) {
      EXPECT_LT(ref["chosen"][i].get<double>(), 0.0);
    }
  }

  // Test answers of the tuned model beside the starting model's, original fields kept.
  const json data = read_json(prefs());
  const json answers = read_json(run / "test-responses.json");
  ASSERT_EQ(answers.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(answers[i]["chosen"], data[20 + i]["chosen"]);
    EXPECT_TRUE(answers[i]["model_response"].is_string());
    EXPECT_TRUE(answers[i]["sft_response"].is_string());
  }
  const json summary = read_json(run / "summary.json");
  EXPECT_EQ(summary["command"], "dpo");
  EXPECT_EQ(summary["steps"], 10);
  EXPECT_EQ(summary["last_eval"]["val_loss"].get<double>(), h.evals.back().val_loss);
  EXPECT_EQ(summary["optimizer"]["lr"], 2e-3);
  EXPECT_EQ(read_json(run / "config.json")["options"]["beta"], 0.5);
  EXPECT_NE(read_file(run / "loss-plot.svg").find("DPO loss"), std::string::npos);
  EXPECT_NE(read_file(run / "reward-margin-plot.svg").find("Validation margin"), std::string::npos);
  const HfModel m = read_hf_folder(run / "model", /*tied=*/false);
  EXPECT_EQ(m.model.config().C, 64);
}

TEST(Dpo, ResumeAfterInterruptAndAfterKill9EqualsUninterruptedRun) {
  test::TempDir dir;
  const auto full = test::run_llmft(args(dir / "full", {"--no-test-answers"}));
  ASSERT_EQ(full.exit_code, 0) << describe(full);

  const auto cut = test::run_llmft(
      args(dir / "cut", {"--no-test-answers", "--interrupt-after-step", "3"}));
  ASSERT_EQ(cut.exit_code, 130) << describe(cut);
  EXPECT_NE(cut.out.find("llmft dpo --resume"), std::string::npos) << cut.out;
  const auto resumed = test::run_llmft({"dpo", "--resume", (dir / "cut").string()});
  ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
  // The reference scores come from the run folder, not from the (changed) model.
  EXPECT_EQ(resumed.out.find("Reference log-probabilities of"), std::string::npos);

  const auto killed = test::run_llmft(args(
      dir / "killed", {"--no-test-answers", "--checkpoint-every", "1", "--kill-after-step", "6"}));
  ASSERT_EQ(killed.exit_code, 128 + 9) << describe(killed);
  const auto after_kill = test::run_llmft({"dpo", "--resume", (dir / "killed").string()});
  ASSERT_EQ(after_kill.exit_code, 0) << describe(after_kill);

  const auto want = read_metrics(dir / "full" / "metrics.jsonl");
  expect_same_run(read_metrics(dir / "cut" / "metrics.jsonl"), want);
  expect_same_run(read_metrics(dir / "killed" / "metrics.jsonl"), want);
}

// --lora: the adapter trains, the base stays frozen and is the reference. A second run continuing
// the first one's adapter scores its reference without that adapter (the same scores as the first
// run), so its policy starts away from the reference; resume works as without LoRA.
TEST(Dpo, LoraTrainsAnAdapterWithTheBaseAsReferenceAndResumes) {
  test::TempDir dir;
  const std::vector<std::string> lora = {"--lora", "--lora-rank", "4", "--lora-alpha", "8"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), lora.begin(), lora.end());
    return extra;
  };
  const auto r = test::run_llmft(args(dir / "a", with({"--lr", "1e-2"})));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("LoRA: "), std::string::npos) << r.out;
  const auto a = read_metrics(dir / "a" / "metrics.jsonl");
  ASSERT_EQ(a.steps.size(), 10u);
  EXPECT_NEAR(a.steps[0].loss, std::log(2.0), 1e-5);  // B = 0: the policy is the base
  EXPECT_GT(a.evals.back().train_rewards->margin(), 0.02);
  const json cfg = read_json(dir / "a" / "adapter" / "adapter_config.json");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_TRUE(fs::exists(dir / "a" / "adapter" / "adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "a" / "model"));  // no --merge
  EXPECT_EQ(read_json(dir / "a" / "summary.json")["outputs"]["adapter"],
            (dir / "a" / "adapter").string());

  const auto b = test::run_llmft(
      args(dir / "b", {"--lora", "--adapter", (dir / "a" / "adapter").string(), "--merge",
                       "--no-test-answers", "--max-steps", "2"}));
  ASSERT_EQ(b.exit_code, 0) << describe(b);
  EXPECT_EQ(read_json(dir / "b" / "reference-logprobs.json"),
            read_json(dir / "a" / "reference-logprobs.json"));
  const auto bm = read_metrics(dir / "b" / "metrics.jsonl");
  ASSERT_FALSE(bm.steps.empty());
  EXPECT_GT(bm.steps[0].rewards->margin(), 0.0);  // the adapter's preference, from step 0
  EXPECT_TRUE(fs::exists(dir / "b" / "model" / "model.safetensors"));  // --merge

  const auto cut = test::run_llmft(
      args(dir / "cut", with({"--lr", "1e-2", "--no-test-answers", "--interrupt-after-step", "3"})));
  ASSERT_EQ(cut.exit_code, 130) << describe(cut);
  const auto resumed = test::run_llmft({"dpo", "--resume", (dir / "cut").string()});
  ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
  expect_same_run(read_metrics(dir / "cut" / "metrics.jsonl"), a);
}

// The run folder rules are finetune's (run_setup.h): a finished run resumes to nothing, and a
// larger --max-steps trains it on.
TEST(Dpo, ResumeOfAFinishedRunDoesNothingUnlessExtended) {
  test::TempDir dir;
  const fs::path run = dir / "run";
  const auto r = test::run_llmft(args(run, {"--max-steps", "3", "--no-test-answers"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("3 steps (0.60 of an epoch of 5 steps)"), std::string::npos) << r.out;
  const std::string summary = read_file(run / "summary.json");
  EXPECT_DOUBLE_EQ(read_json(run / "summary.json")["epochs"].get<double>(), 0.6);
  const auto again = test::run_llmft({"dpo", "--resume", run.string()});
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_NE(again.out.find("the run is finished (3 steps (0.60 of an epoch of 5 steps)); nothing "
                           "to do"),
            std::string::npos)
      << again.out;
  EXPECT_EQ(read_file(run / "summary.json"), summary);
  const auto more = test::run_llmft({"dpo", "--resume", run.string(), "--max-steps", "5"});
  ASSERT_EQ(more.exit_code, 0) << describe(more);
  EXPECT_NE(more.out.find("Extending the run from 3 steps"), std::string::npos) << more.out;
  EXPECT_EQ(read_metrics(run / "metrics.jsonl").steps.size(), 5u);
  EXPECT_EQ(read_json(run / "summary.json")["steps"], 5);
}

TEST(Dpo, BadInputIsOneLineAndNonZero) {
  test::TempDir dir;
  // An entry without "rejected": exit 1 naming the file and the entry, nothing trained.
  json data = read_json(prefs());
  data[3].erase("rejected");
  write_file_atomic(dir / "bad.json", data.dump());
  const auto bad = test::run_llmft(
      {"dpo", "--model", "random:tiny", "--data", (dir / "bad.json").string(), "-o",
       (dir / "run").string()});
  EXPECT_EQ(bad.exit_code, 1) << describe(bad);
  EXPECT_NE(bad.err.find("entry 3: missing field \"rejected\""), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(dir / "run" / "metrics.jsonl"));

  for (const std::vector<std::string>& usage :
       {std::vector<std::string>{"dpo", "--model", "random:tiny", "--beta", "0"},
        std::vector<std::string>{"dpo", "--data", prefs().string()},
        std::vector<std::string>{"dpo", "--model", "random:tiny", "--lr", "-1"}}) {
    const auto u = test::run_llmft(usage);
    EXPECT_EQ(u.exit_code, 2) << describe(u);
  }
  // --resume needs a dpo run folder.
  fs::create_directories(dir / "other");
  write_file_atomic(dir / "other" / "config.json", R"({"options": {}})");
  const auto other = test::run_llmft({"dpo", "--resume", (dir / "other").string()});
  EXPECT_EQ(other.exit_code, 1) << describe(other);
  EXPECT_NE(other.err.find("not a llmft dpo run"), std::string::npos) << other.err;
}

}  // namespace
