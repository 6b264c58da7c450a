// `llmft finetune` end to end on a tiny random model and a 24-entry dataset
// (tests/data/finetune-tiny.json: train 20, validation 2, test 2): every output and its content,
// evaluation at exactly the reference's steps, overfitting, resume after Ctrl-C and after kill -9
// equal to an uninterrupted run, gradient accumulation equal to one big batch, usage errors,
// and the offline fallback.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <set>

#include "llmft/core/io.h"
#include "llmft/data/batch.h"
#include "llmft/data/dataset.h"
#include "llmft/data/loader.h"
#include "llmft/data/template.h"
#include "llmft/data/tokenized.h"
#include "llmft/io/hf_folder.h"
#include "llmft/model/gpt2.h"
#include "llmft/tokenizer/bpe.h"
#include "llmft/train/metrics.h"
#include "fake_judge.h"
#include "test_util.h"

using namespace llmft;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path tiny_data() { return test::test_data_dir() / "finetune-tiny.json"; }

// 20 train entries / batch 4 = 5 steps per epoch; 2 epochs = 10 steps.
std::vector<std::string> tiny_args(const fs::path& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"finetune",       "--model",        "random:tiny",
                                "--data",         tiny_data().string(), "--batch-size",
                                "4",              "--epochs",       "2",
                                "--eval-freq",    "2",              "--eval-batches",
                                "2",              "--lr",           "2e-3",
                                "--max-new-tokens", "6",            "--sample-tokens",
                                "5",              "--threads",      "2",
                                "--output",       out.string(), "--no-judge"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

std::string describe(const test::RunResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

json read_json(const fs::path& p) { return json::parse(read_file(p)); }

// Everything in a step record but its wall-clock speed.
void expect_same_steps(const MetricsHistory& a, const MetricsHistory& b) {
  ASSERT_EQ(a.steps.size(), b.steps.size());
  for (size_t i = 0; i < a.steps.size(); ++i) {
    EXPECT_EQ(a.steps[i].step, b.steps[i].step);
    EXPECT_EQ(a.steps[i].epoch, b.steps[i].epoch);
    EXPECT_EQ(a.steps[i].loss, b.steps[i].loss) << "step " << i;
    EXPECT_EQ(a.steps[i].lr, b.steps[i].lr);
    EXPECT_EQ(a.steps[i].tokens_seen, b.steps[i].tokens_seen);
    EXPECT_EQ(a.steps[i].batch, b.steps[i].batch);
    // The gradient norm is an OpenMP reduction whose partial sums may combine in any order.
    EXPECT_NEAR(a.steps[i].grad_norm, b.steps[i].grad_norm, 1e-9 * a.steps[i].grad_norm);
  }
  ASSERT_EQ(a.evals.size(), b.evals.size());
  for (size_t i = 0; i < a.evals.size(); ++i) {
    EXPECT_EQ(a.evals[i].step, b.evals[i].step);
    EXPECT_EQ(a.evals[i].train_loss, b.evals[i].train_loss);
    EXPECT_EQ(a.evals[i].val_loss, b.evals[i].val_loss);
    EXPECT_EQ(a.evals[i].tokens_seen, b.evals[i].tokens_seen);
  }
}

std::vector<float> model_params(const fs::path& run) {
  const HfModel m = read_hf_folder(run / "model", /*tied=*/false);
  return {m.model.params().begin(), m.model.params().end()};
}

}  // namespace

TEST(Finetune, WritesEveryOutputWithConsistentContent) {
  test::TempDir dir;
  const fs::path run = dir / "run";
  const auto r = test::run_llmft(tiny_args(run, {"--eval-freq", "1"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("Ep 1 (Step 000000): Train loss "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Ep 2 (Step 000009): Train loss "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("NOT pretrained"), std::string::npos) << r.out;
  // The sample after each epoch starts with the first validation prompt, newlines as spaces.
  EXPECT_NE(r.out.find("Below is an instruction that describes a task. Write a response that "
                       "appropriately completes the request.  ### Instruction:"),
            std::string::npos);

  // One step record per optimizer step, in order, with whole batches of train-split indices and
  // each epoch visiting distinct entries.
  const auto h = read_metrics(run / "metrics.jsonl");
  ASSERT_EQ(h.steps.size(), 10u);
  int64_t tokens = 0;
  std::set<int64_t> seen[2];
  for (size_t i = 0; i < h.steps.size(); ++i) {
    const auto& s = h.steps[i];
    EXPECT_EQ(s.step, static_cast<int64_t>(i));
    EXPECT_DOUBLE_EQ(s.epoch, (i + 1) / 5.0);
    EXPECT_EQ(s.lr, 2e-3);
    EXPECT_GT(s.tokens_seen, tokens);
    tokens = s.tokens_seen;
    EXPECT_TRUE(std::isfinite(s.loss) && s.loss > 0);
    EXPECT_TRUE(std::isfinite(s.grad_norm) && s.grad_norm > 0);
    ASSERT_EQ(s.batch.size(), 4u);
    for (int64_t idx : s.batch) {
      EXPECT_TRUE(idx >= 0 && idx < 20) << idx;
      EXPECT_TRUE(seen[i / 5].insert(idx).second) << "entry " << idx << " twice in one epoch";
    }
  }
  // --eval-freq 1: an evaluation after every step (the last one once).
  ASSERT_EQ(h.evals.size(), 10u);
  for (size_t i = 0; i < h.evals.size(); ++i) EXPECT_EQ(h.evals[i].step, static_cast<int64_t>(i));

  // Test answers: one per test entry (entries 20, 21 of the file), original fields kept.
  const json data = read_json(tiny_data());
  const json answers = read_json(run / "test-responses.json");
  ASSERT_EQ(answers.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(answers[i]["instruction"], data[20 + i]["instruction"]);
    EXPECT_EQ(answers[i]["output"], data[20 + i]["output"]);
    EXPECT_TRUE(answers[i]["model_response"].is_string());
  }

  const json summary = read_json(run / "summary.json");
  EXPECT_EQ(summary["steps"], 10);
  EXPECT_EQ(summary["model"]["pretrained"], false);
  EXPECT_EQ(summary["model"]["tied"], false);
  EXPECT_EQ(summary["tokens_seen"], tokens);
  EXPECT_EQ(summary["final_val_loss"].get<double>(), h.evals.back().val_loss);
  // What the optimizer ran with, in the file and in the printed summary.
  EXPECT_EQ(summary["optimizer"]["lr"], 2e-3);
  EXPECT_EQ(summary["optimizer"]["schedule"], "constant");
  EXPECT_TRUE(summary["optimizer"]["grad_clip"].is_null());
  EXPECT_NE(r.out.find("optimizer     AdamW, lr 0.002 (constant), weight decay "),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("grad clip off"), std::string::npos) << r.out;
  const json config = read_json(run / "config.json");
  EXPECT_EQ(config["options"]["batch_size"], 4);
  EXPECT_EQ(config["data"]["train"], 20);
  const std::string svg = read_file(run / "loss-plot.svg");
  EXPECT_NE(svg.find("Validation loss"), std::string::npos);

  // The saved Hugging Face folder reloads and gives the last evaluation's validation loss
  // (taken after the final step): mean over the validation loader's single batch.
  HfModel m = read_hf_folder(run / "model");
  Gpt2& model = m.model;
  EXPECT_FALSE(model.config().tied);
  InstructionDataset ds = load_dataset(tiny_data());
  const auto tok = BpeTokenizer::load_bundled();
  const TokenizedDataset td = tokenize_dataset(ds, PromptTemplate::kAlpaca, tok, 1);
  DataLoader val(td, split_dataset(ds.size()).val, eval_loader_options(4, {1024, false}));
  ASSERT_EQ(val.num_batches(), 1);
  const Batch b = val.batch(0, 0);
  const double loss =
      model.forward(b.packed_inputs, b.packed_targets, b.seq_offsets, /*training=*/false).mean();
  // Same kernels and thread count as the run; only the loss sum's OpenMP reduction order may differ.
  EXPECT_NEAR(loss, h.evals.back().val_loss, 1e-6);
}

TEST(Finetune, EvaluatesAtTheReferenceStepsAndTheLast) {
  // eval_freq 4 over 10 steps: after steps 0, 4, 8 (global_step % 4 == 0, from the first update)
  // as the reference, and after the last step, 9, so the final losses describe the final model.
  test::TempDir dir;
  const auto r = test::run_llmft(tiny_args(dir / "run", {"--eval-freq", "4", "--no-test-answers"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto h = read_metrics(dir / "run" / "metrics.jsonl");
  ASSERT_EQ(h.evals.size(), 4u);
  EXPECT_EQ(h.evals[0].step, 0);
  EXPECT_EQ(h.evals[1].step, 4);
  EXPECT_EQ(h.evals[2].step, 8);
  EXPECT_EQ(h.evals[3].step, 9);
  EXPECT_NE(r.out.find("Ep 2 (Step 000008)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Ep 2 (Step 000009)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(evaluations at steps 0 and 9)"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "run" / "test-responses.json"));
}

TEST(Finetune, LossFallsWhenOverfittingAHandfulOfExamples) {
  test::TempDir dir;
  const auto r = test::run_llmft(tiny_args(
      dir / "run", {"--epochs", "6", "--eval-freq", "5", "--lr", "5e-3", "--no-test-answers"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto h = read_metrics(dir / "run" / "metrics.jsonl");
  ASSERT_EQ(h.evals.size(), 7u);  // steps 0, 5, ..., 25 and the last, 29
  // From ~ln(50257) = 10.8 at random init; the tiny model memorises common tokens quickly.
  EXPECT_LT(h.evals.back().train_loss, h.evals.front().train_loss - 3.0)
      << h.evals.front().train_loss << " -> " << h.evals.back().train_loss;
  EXPECT_LT(h.steps.back().loss, h.steps.front().loss - 3.0);
}

TEST(Finetune, ResumeAfterInterruptEqualsUninterruptedRun) {
  test::TempDir dir;
  const auto full = test::run_llmft(tiny_args(dir / "full", {"--no-test-answers"}));
  ASSERT_EQ(full.exit_code, 0) << describe(full);

  // As if Ctrl-C came during step 3 (mid-epoch 1): checkpoint, message, exit 130.
  const auto cut = test::run_llmft(
      tiny_args(dir / "cut", {"--no-test-answers", "--interrupt-after-step", "3"}));
  ASSERT_EQ(cut.exit_code, 130) << describe(cut);
  EXPECT_NE(cut.out.find("--resume"), std::string::npos) << cut.out;
  EXPECT_FALSE(fs::exists(dir / "cut" / "model"));
  EXPECT_EQ(read_metrics(dir / "cut" / "metrics.jsonl").steps.size(), 4u);

  const auto res = test::run_llmft({"finetune", "--resume", (dir / "cut").string()});
  ASSERT_EQ(res.exit_code, 0) << describe(res);
  EXPECT_NE(res.out.find("Resuming from"), std::string::npos) << res.out;
  expect_same_steps(read_metrics(dir / "cut" / "metrics.jsonl"),
                    read_metrics(dir / "full" / "metrics.jsonl"));
  // The summary of the resumed call speaks of the whole run.
  const json summary = read_json(dir / "cut" / "summary.json");
  EXPECT_EQ(summary["steps"], 10);
  EXPECT_EQ(summary["epochs"], 2.0);
  ASSERT_TRUE(summary["final_batch_loss"].is_number()) << summary.dump();
  EXPECT_EQ(summary["final_batch_loss"].get<double>(),
            read_metrics(dir / "full" / "metrics.jsonl").steps.back().loss);
  const auto a = model_params(dir / "cut"), b = model_params(dir / "full");
  ASSERT_EQ(a.size(), b.size());
  EXPECT_TRUE(a == b) << "final weights differ after resume";
}

TEST(Finetune, ResumeAfterKill9EqualsUninterruptedRun) {
  // With dropout on, so the masks must replay too (they derive from seed, step and micro-batch).
  test::TempDir dir;
  const auto full =
      test::run_llmft(tiny_args(dir / "full", {"--no-test-answers", "--dropout", "0.1"}));
  ASSERT_EQ(full.exit_code, 0) << describe(full);
  // Checkpoints after 3 and 6 steps; SIGKILL right after step 7 (global step 7, the 8th update):
  // the log holds two steps past the last checkpoint, which the resume must replace.
  const auto killed = test::run_llmft(tiny_args(
      dir / "cut", {"--no-test-answers", "--dropout", "0.1", "--checkpoint-every", "3",
                    "--kill-after-step", "7"}));
  ASSERT_EQ(killed.exit_code, 128 + 9) << describe(killed);
  EXPECT_EQ(read_metrics(dir / "cut" / "metrics.jsonl").steps.size(), 8u);
  EXPECT_EQ(read_file(dir / "cut" / "checkpoints" / "latest"), "step-000006\n");

  const auto res = test::run_llmft({"finetune", "--resume", (dir / "cut").string()});
  ASSERT_EQ(res.exit_code, 0) << describe(res);
  expect_same_steps(read_metrics(dir / "cut" / "metrics.jsonl"),
                    read_metrics(dir / "full" / "metrics.jsonl"));
  EXPECT_TRUE(model_params(dir / "cut") == model_params(dir / "full"));
}

// Issue 16: one flipped bit in the newest checkpoint's optimizer state is caught by the sha256
// state.json records; --resume says so and resumes from the older kept checkpoint (step 5, the
// first epoch's end; checkpoints came after steps 3, 5 and 6), to the same
// result as the uninterrupted run.
TEST(Finetune, ResumeFallsBackWhenTheNewestCheckpointIsDamaged) {
  test::TempDir dir;
  const auto full = test::run_llmft(tiny_args(dir / "full", {"--no-test-answers"}));
  ASSERT_EQ(full.exit_code, 0) << describe(full);
  const auto killed = test::run_llmft(tiny_args(
      dir / "cut", {"--no-test-answers", "--checkpoint-every", "3", "--kill-after-step", "7"}));
  ASSERT_EQ(killed.exit_code, 128 + 9) << describe(killed);
  const fs::path opt = dir / "cut" / "checkpoints" / "step-000006" / "optimizer.safetensors";
  std::string bytes = read_file(opt);
  bytes[bytes.size() - 5] ^= 0x04;
  write_file_atomic(opt, bytes);
  const auto res = test::run_llmft({"finetune", "--resume", (dir / "cut").string()});
  ASSERT_EQ(res.exit_code, 0) << describe(res);
  EXPECT_NE(res.err.find(opt.string() + ": sha256 "), std::string::npos) << res.err;
  EXPECT_NE(res.err.find("resuming from the older checkpoint step-000005"), std::string::npos)
      << res.err;
  expect_same_steps(read_metrics(dir / "cut" / "metrics.jsonl"),
                    read_metrics(dir / "full" / "metrics.jsonl"));
  EXPECT_TRUE(model_params(dir / "cut") == model_params(dir / "full"));
}

// SIGTERM (what schedulers and container runtimes send) stops like Ctrl-C: the real handler takes
// the signal raised after step 4, the loop checkpoints, the run exits 143 and resumes to the
// uninterrupted result; the two newest checkpoints stay.
TEST(Finetune, SigtermCheckpointsAndResumesLikeCtrlC) {
  test::TempDir dir;
  const auto full = test::run_llmft(tiny_args(dir / "full", {"--no-test-answers"}));
  ASSERT_EQ(full.exit_code, 0) << describe(full);
  const auto cut = test::run_llmft(tiny_args(
      dir / "cut", {"--no-test-answers", "--checkpoint-every", "2", "--term-after-step", "4"}));
  ASSERT_EQ(cut.exit_code, 128 + 15) << describe(cut);
  EXPECT_NE(cut.err.find("llmft: SIGTERM: training stops at the next step with a checkpoint"),
            std::string::npos)
      << cut.err;
  // Checkpoints after steps 2 and 4, then the stop's after step 5 (global step 4): two kept.
  std::set<std::string> kept;
  for (const auto& e : fs::directory_iterator(dir / "cut" / "checkpoints"))
    if (e.is_directory()) kept.insert(e.path().filename().string());
  EXPECT_EQ(kept, (std::set<std::string>{"step-000004", "step-000005"}));
  const auto res = test::run_llmft({"finetune", "--resume", (dir / "cut").string()});
  ASSERT_EQ(res.exit_code, 0) << describe(res);
  expect_same_steps(read_metrics(dir / "cut" / "metrics.jsonl"),
                    read_metrics(dir / "full" / "metrics.jsonl"));
  EXPECT_TRUE(model_params(dir / "cut") == model_params(dir / "full"));
}

// A loss that is not finite stops the run before the update, naming the step: exit 1, no model
// folder, the checkpoint before it kept. (lr 1e30 makes every weight huge after one update.)
TEST(Finetune, NonFiniteLossStopsTheRunNamingTheStep) {
  test::TempDir dir;
  const auto r = test::run_llmft(tiny_args(
      dir / "run", {"--no-test-answers", "--lr", "1e30", "--checkpoint-every", "1"}));
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("llmft: error: step "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("training stopped before this update (the last checkpoint is kept)"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(dir / "run" / "model"));
  EXPECT_TRUE(fs::exists(dir / "run" / "checkpoints" / "step-000001"));
}

// A resumed run rebuilds its model from config.json: a hand-edited model record is an error
// naming the file and the key, not a crash or a model of another shape.
TEST(Finetune, ResumeRejectsAnEditedModelRecord) {
  test::TempDir dir;
  const auto cut = test::run_llmft(
      tiny_args(dir / "run", {"--no-test-answers", "--interrupt-after-step", "0"}));
  ASSERT_EQ(cut.exit_code, 130) << describe(cut);
  const fs::path config = dir / "run" / "config.json";
  json j = read_json(config);
  ASSERT_EQ(j["model"]["config"]["NH"], 2);
  j["model"]["config"].erase("NH");
  write_file_atomic(config, j.dump(2));

  const auto res = test::run_llmft({"finetune", "--resume", (dir / "run").string()});
  EXPECT_EQ(res.exit_code, 1) << describe(res);
  EXPECT_NE(res.err.find(config.string() + ": the model configuration has no \"NH\""),
            std::string::npos)
      << describe(res);
  EXPECT_EQ(read_metrics(dir / "run" / "metrics.jsonl").steps.size(), 1u);  // nothing trained
}

TEST(Finetune, GradientAccumulationEqualsOneBigBatch) {
  test::TempDir dir;
  const auto one = test::run_llmft(tiny_args(dir / "one", {"--no-test-answers", "--epochs", "1"}));
  const auto two = test::run_llmft(
      tiny_args(dir / "two", {"--no-test-answers", "--epochs", "1", "--grad-accum", "2"}));
  ASSERT_EQ(one.exit_code, 0) << describe(one);
  ASSERT_EQ(two.exit_code, 0) << describe(two);
  const auto a = read_metrics(dir / "one" / "metrics.jsonl");
  const auto b = read_metrics(dir / "two" / "metrics.jsonl");
  ASSERT_EQ(a.steps.size(), 5u);
  ASSERT_EQ(b.steps.size(), 5u);
  std::vector<double> la, lb, ga, gb;
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(a.steps[i].batch, b.steps[i].batch);
    EXPECT_EQ(a.steps[i].tokens_seen, b.steps[i].tokens_seen);
    la.push_back(a.steps[i].loss), lb.push_back(b.steps[i].loss);
    ga.push_back(a.steps[i].grad_norm), gb.push_back(b.steps[i].grad_norm);
  }
  // Same math, float sums in another order (two half-size matmuls, two backward passes), and
  // Adam's division by sqrt(v) amplifies tiny gradient differences over 5 steps.
  EXPECT_TRUE(test::all_close(std::span<const double>(lb), std::span<const double>(la), 1e-5, 0));
  EXPECT_TRUE(test::all_close(std::span<const double>(gb), std::span<const double>(ga), 1e-4, 0));
  // A per-micro-batch mean (the mistake this guards against) would change the first step's
  // gradient by the ratio of the halves' token counts, far beyond these tolerances.
  // Weights: Adam moves each weight by up to lr = 2e-3 per step whatever the gradient's size, so
  // a weight whose gradient is ~0 can move differently on rounding alone; 1e-4 is 5% of one step.
  const auto pa = model_params(dir / "one"), pb = model_params(dir / "two");
  EXPECT_TRUE(test::all_close(std::span<const float>(pb), std::span<const float>(pa), 1e-3, 1e-4));
}

TEST(Finetune, InvalidOptionsAreUsageErrors) {
  test::TempDir dir;
  const std::vector<std::vector<std::string>> bad = {
      {"--batch-size", "0"},    {"--lr", "-1"},          {"--lr", "nan"},
      {"--epochs", "0"},        {"--grad-accum", "3"},   {"--template", "chatml"},
      {"--schedule", "step"},   {"--max-length", "1"},   {"--dropout", "1"},
      {"--eval-freq", "0"},     {"--threads", "-2"},     {"--no-such-flag"},
      {"--model", "random:huge"},
  };
  for (const auto& extra : bad) {
    const auto r = test::run_llmft(tiny_args(dir / "bad", extra));
    std::string args;
    for (const auto& e : extra) args += e + " ";
    EXPECT_EQ(r.exit_code, 2) << args << describe(r);
    EXPECT_FALSE(r.err.empty()) << args;
  }
  // Options of a run cannot change on resume.
  const auto r = test::run_llmft({"finetune", "--resume", (dir / "x").string(), "--lr", "1"});
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("--lr"), std::string::npos) << r.err;
  // Resuming something that is not a run is an error (exit 1), not a crash.
  const auto nr = test::run_llmft({"finetune", "--resume", (dir / "x").string()});
  EXPECT_EQ(nr.exit_code, 1) << describe(nr);
  // Nothing was trained into the output folder.
  EXPECT_FALSE(fs::exists(dir / "bad" / "metrics.jsonl"));
}

TEST(Finetune, RefusesToOverwriteARun) {
  test::TempDir dir;
  const auto first = test::run_llmft(tiny_args(dir / "run", {"--max-steps", "1",
                                                             "--no-test-answers"}));
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  const auto again = test::run_llmft(tiny_args(dir / "run", {"--max-steps", "1"}));
  EXPECT_EQ(again.exit_code, 2) << describe(again);
  EXPECT_NE(again.err.find("already holds a run with a checkpoint"), std::string::npos)
      << again.err;
  EXPECT_NE(again.err.find("--resume"), std::string::npos) << again.err;
}

// A run killed before its first checkpoint (here by SIGKILL after step 0; two Ctrl-C or a
// SIGTERM there leave the same folder) starts again in place, with -o or with --resume, and ends
// as a run that was never stopped.
TEST(Finetune, ARunStoppedBeforeItsFirstCheckpointStartsAgainInPlace) {
  test::TempDir dir;
  const auto full = test::run_llmft(tiny_args(dir / "full", {"--no-test-answers"}));
  ASSERT_EQ(full.exit_code, 0) << describe(full);
  for (const char* how : {"output", "resume"}) {
    const fs::path run = dir / how;
    const auto killed =
        test::run_llmft(tiny_args(run, {"--no-test-answers", "--kill-after-step", "0"}));
    ASSERT_EQ(killed.exit_code, 128 + 9) << describe(killed);
    ASSERT_TRUE(fs::exists(run / "config.json"));
    ASSERT_FALSE(fs::exists(run / "checkpoints" / "latest"));
    const auto again = std::string(how) == "output"
                           ? test::run_llmft(tiny_args(run, {"--no-test-answers"}))
                           : test::run_llmft({"finetune", "--resume", run.string()});
    ASSERT_EQ(again.exit_code, 0) << how << "\n" << describe(again);
    EXPECT_NE(again.out.find(std::string(how) == "output"
                                 ? "the run there stopped before its first checkpoint; starting "
                                   "it again in place"
                                 : "the run stopped before its first checkpoint; starting it "
                                   "again from step 0 with its recorded options"),
              std::string::npos)
        << again.out;
    expect_same_steps(read_metrics(run / "metrics.jsonl"),
                      read_metrics(dir / "full" / "metrics.jsonl"));
    EXPECT_TRUE(model_params(run) == model_params(dir / "full")) << how;
  }
}

// --resume of a finished run says so and writes nothing: no answers regenerated, the summary and
// the log untouched.
TEST(Finetune, ResumeOfAFinishedRunDoesNothing) {
  test::TempDir dir;
  const fs::path run = dir / "run";
  const auto r = test::run_llmft(tiny_args(run));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::string summary = read_file(run / "summary.json");
  const std::string answers = read_file(run / "test-responses.json");
  const std::string log = read_file(run / "metrics.jsonl");
  const auto again = test::run_llmft({"finetune", "--resume", run.string(), "--no-judge"});
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_NE(again.out.find(run.string() + ": the run is finished (10 steps (2 epochs of 5 "
                           "steps)); nothing to do. To train on, resume with a larger "
                           "--max-steps or --epochs"),
            std::string::npos)
      << again.out;
  EXPECT_EQ(again.out.find("Answered"), std::string::npos) << again.out;
  EXPECT_EQ(read_file(run / "summary.json"), summary);
  EXPECT_EQ(read_file(run / "test-responses.json"), answers);
  EXPECT_EQ(read_file(run / "metrics.jsonl"), log);
  // A run cannot be shortened.
  const auto shorter =
      test::run_llmft({"finetune", "--resume", run.string(), "--max-steps", "4"});
  EXPECT_EQ(shorter.exit_code, 2) << describe(shorter);
  EXPECT_NE(shorter.err.find("fewer than the run's 10"), std::string::npos) << shorter.err;
}

// A larger --max-steps (or --epochs) trains a finished run on: the data order and step numbers
// continue, the linear schedule becomes the longer run's from the resume point on (documented in
// docs/finetune.md), and config.json and summary.json record the new length.
TEST(Finetune, ResumeWithMoreStepsExtendsAFinishedRun) {
  test::TempDir dir;
  const fs::path run = dir / "run";
  const auto first = test::run_llmft(
      tiny_args(run, {"--max-steps", "4", "--schedule", "linear", "--no-test-answers"}));
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  EXPECT_NE(first.out.find("Training: 4 steps (0.80 of an epoch of 5 steps)"), std::string::npos)
      << first.out;
  const auto more = test::run_llmft({"finetune", "--resume", run.string(), "--max-steps", "7"});
  ASSERT_EQ(more.exit_code, 0) << describe(more);
  EXPECT_NE(more.out.find("Extending the run from 4 steps (0.80 of an epoch of 5 steps) to 7 steps "
                          "(1.40 epochs of 5 steps); the learning rate follows a 7-step schedule "
                          "from here"),
            std::string::npos)
      << more.out;
  const auto h = read_metrics(run / "metrics.jsonl");
  ASSERT_EQ(h.steps.size(), 7u);
  for (size_t i = 0; i < 7; ++i) {
    EXPECT_EQ(h.steps[i].step, static_cast<int64_t>(i));
    const double total = i < 4 ? 4.0 : 7.0;
    EXPECT_NEAR(h.steps[i].lr, 2e-3 * (1.0 - static_cast<double>(i) / total), 1e-15) << i;
  }
  // The same batches as a 7-step run from the start (the shuffle depends on seed and epoch only).
  const auto straight = test::run_llmft(tiny_args(dir / "straight", {"--max-steps", "7",
                                                                      "--no-test-answers"}));
  ASSERT_EQ(straight.exit_code, 0) << describe(straight);
  const auto hs = read_metrics(dir / "straight" / "metrics.jsonl");
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(h.steps[i].batch, hs.steps[i].batch) << i;
  // Evaluated at the old and the new last step.
  EXPECT_EQ(h.evals.back().step, 6);
  EXPECT_EQ(read_json(run / "config.json")["total_steps"], 7);
  EXPECT_EQ(read_json(run / "config.json")["options"]["max_steps"], 7);
  const json summary = read_json(run / "summary.json");
  EXPECT_EQ(summary["steps"], 7);
  EXPECT_DOUBLE_EQ(summary["epochs"].get<double>(), 1.4);
  EXPECT_EQ(summary["steps_per_epoch"], 5);
  // --epochs replaces the recorded --max-steps.
  const auto epochs = test::run_llmft({"finetune", "--resume", run.string(), "--epochs", "2",
                                       "--no-judge"});
  ASSERT_EQ(epochs.exit_code, 0) << describe(epochs);
  EXPECT_EQ(read_metrics(run / "metrics.jsonl").steps.size(), 10u);
}

// Entries longer than the length limit are counted before training, with those that keep
// template tokens only.
TEST(Finetune, SaysBeforeTrainingWhatTheLengthLimitCrops) {
  test::TempDir dir;
  const auto r = test::run_llmft(tiny_args(dir / "run", {"--max-steps", "1", "--max-length", "10",
                                                         "--no-test-answers"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::string line = "Data: 24 of 24 entries are longer than 10 tokens: training crops "
                           "their end; 24 of them lose their whole response (train on template "
                           "tokens only) (--max-length 10, context ";
  const size_t at = r.out.find(line);
  EXPECT_NE(at, std::string::npos) << r.out;
  EXPECT_LT(at, r.out.find("Ep 1 (Step 000000)")) << r.out;
  // Within the limit: no such line.
  const auto ok = test::run_llmft(tiny_args(dir / "ok", {"--max-steps", "1", "--no-test-answers"}));
  ASSERT_EQ(ok.exit_code, 0) << describe(ok);
  EXPECT_EQ(ok.out.find("longer than"), std::string::npos) << ok.out;
}

// tests/data/chat-tiny.jsonl: the tiny dataset as `messages` conversations (some with a system
// message and an earlier turn) and prompt/completion entries. It trains with the prompt masked
// (only the assistant's answers count) and answers its test split, echoing each entry's shape.
TEST(Finetune, TrainsOnChatAndPromptCompletionData) {
  test::TempDir dir;
  const fs::path data = test::test_data_dir() / "chat-tiny.jsonl";
  std::vector<std::string> a = tiny_args(dir / "run", {"--max-steps", "2", "--mask-prompt"});
  a[4] = data.string();  // --data
  const auto r = test::run_llmft(a);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("Data: " + data.string() + ": 24 entries -> train 20, validation 2, test 2"),
            std::string::npos)
      << r.out;
  const auto h = read_metrics(dir / "run" / "metrics.jsonl");
  ASSERT_EQ(h.steps.size(), 2u);
  EXPECT_TRUE(std::isfinite(h.steps[0].loss) && h.steps[0].loss > 0);
  const json answers = read_json(dir / "run" / "test-responses.json");
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_TRUE(answers[0].contains("completion")) << answers.dump();  // entry 20: prompt/completion
  EXPECT_TRUE(answers[1].contains("messages")) << answers.dump();    // entry 21: a conversation
  EXPECT_TRUE(answers[1]["model_response"].is_string());

  // An unknown shape is one error line listing its keys.
  test::TempDir bad;
  write_file_atomic(bad / "qa.json", R"([{"question": "q", "answer": "a"}])");
  a[4] = (bad / "qa.json").string();
  *(std::find(a.begin(), a.end(), "--output") + 1) = (bad / "run").string();
  const auto e = test::run_llmft(a);
  EXPECT_EQ(e.exit_code, 1) << describe(e);
  EXPECT_EQ(e.err.substr(0, e.err.find('\n')),
            "llmft: error: " + (bad / "qa.json").string() +
                ": entry 0: unknown entry shape, with keys \"question\", \"answer\"");
}

// One step, one evaluation: the summary says so in the singular, and epochs as a fraction.
TEST(Finetune, SummaryCountsStepsAndEpochsTruthfully) {
  test::TempDir dir;
  const auto r = test::run_llmft(tiny_args(dir / "run", {"--max-steps", "1",
                                                         "--no-test-answers"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("training      1 step (0.20 of an epoch of 5 steps), "),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("(one evaluation, at step 0)"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("1 steps"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("steps 0 and 0"), std::string::npos) << r.out;
  const json summary = read_json(dir / "run" / "summary.json");
  EXPECT_DOUBLE_EQ(summary["epochs"].get<double>(), 0.2);
}

// A stop signal after the loop (model folder, test answers) does not speak of training; the run
// goes on and writes everything.
TEST(Finetune, StopSignalAfterTrainingSpeaksOfTheOutputs) {
  test::TempDir dir;
  const auto r = test::run_llmft(tiny_args(dir / "run", {"--max-steps", "2",
                                                         "--term-after-training"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("llmft: SIGTERM: writing the outputs (model folder, test answers) goes "
                       "on; a second signal (Ctrl-C) stops now, and --resume writes them later"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("training"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(dir / "run" / "test-responses.json"));
}

TEST(Finetune, FallsBackToARandomModelWhenOffline) {
  test::TempDir dir;
  // An empty hub cache and no network allowed: gpt2-medium cannot be had.
  const std::vector<std::string> env = {"HF_HUB_CACHE=" + (dir / "hub").string(),
                                        "HF_HUB_OFFLINE=1"};
  const std::vector<std::string> args = {"finetune",          "--model",     "gpt2-medium",
                                         "--data",            tiny_data().string(),
                                         "--batch-size",      "4",           "--max-steps",
                                         "1",                 "--eval-batches", "1",
                                         "--sample-tokens",   "2",           "--max-new-tokens",
                                         "2",                 "--output",    (dir / "run").string()};
  const auto r = test::run_llmft(args, {}, env);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("NOT a pretrained model"), std::string::npos) << r.out;
  const json summary = read_json(dir / "run" / "summary.json");
  EXPECT_EQ(summary["model"]["pretrained"], false);
  EXPECT_EQ(summary["model"]["fallback_random"], true);
  EXPECT_TRUE(fs::exists(dir / "run" / "test-responses.json"));

  auto strict = args;
  strict.back() = (dir / "run2").string();
  strict.push_back("--no-fallback");
  const auto s = test::run_llmft(strict, {}, env);
  EXPECT_EQ(s.exit_code, 1) << describe(s);
  EXPECT_FALSE(s.err.empty());
}

// The recipe's last step: with a judge answering at --judge-url, the run scores its test answers.
TEST(Finetune, JudgesTheTestAnswersWhenAJudgeAnswers) {
  test::FakeJudge judge;
  judge.chat = [](const test::FakeJudge::Chat& c, const httplib::Request& req,
                  httplib::Response& res) {
    test::FakeJudge::reply(req, res, c.body.value("stream", true), "42");
    return true;
  };
  test::TempDir dir;
  auto args = tiny_args(dir / "run", {"--max-steps", "2"});
  args.erase(std::find(args.begin(), args.end(), "--no-judge"));
  args.insert(args.end(), {"--judge-url", judge.url()});
  const auto r = test::run_llmft(args);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("Number of scores: 2 of 2"), std::string::npos) << describe(r);
  const json scored = read_json(dir / "run" / "test-responses-scored.json");
  ASSERT_EQ(scored.size(), 2u);
  int asked = 0;
  for (const auto& e : scored) {
    // A random model may answer nothing: an empty answer scores 0 without asking the judge.
    const bool empty = e["model_response"].get<std::string>().find_first_not_of(" \t\n") ==
                       std::string::npos;
    EXPECT_EQ(e["score"], empty ? 0 : 42) << e.dump();
    asked += !empty;
  }
  EXPECT_EQ(judge.chat_requests.load(), asked);
  // The run's summary records the judge's result.
  const json summary = read_json(dir / "run" / "summary.json");
  ASSERT_TRUE(summary.contains("judge")) << summary.dump(2);
  EXPECT_EQ(summary["judge"]["model"], "llama3");
  EXPECT_EQ(summary["judge"]["scored"], 2);
  EXPECT_EQ(summary["judge"]["entries"], 2);
  EXPECT_DOUBLE_EQ(summary["judge"]["average_score"].get<double>(), 42.0 * asked / 2);
  EXPECT_EQ(summary["judge"]["scores_file"], "test-responses-scored.json");
}

// Without a judge the run still succeeds and says how to judge later.
TEST(Finetune, SaysHowToJudgeLaterWhenNoJudgeAnswers) {
  test::FakeJudge judge;
  const std::string url = judge.url();
  judge.stop();  // the port now refuses connections
  test::TempDir dir;
  auto args = tiny_args(dir / "run", {"--max-steps", "1"});
  args.erase(std::find(args.begin(), args.end(), "--no-judge"));
  args.insert(args.end(), {"--judge-url", url});
  const auto r = test::run_llmft(args);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("llmft judge --input"), std::string::npos) << describe(r);
  EXPECT_FALSE(fs::exists(dir / "run" / "test-responses-scored.json"));
}

// Only a known model name that cannot be had falls back to a random model: a typo in a name or a
// path is an error, not a silent random run.
TEST(Finetune, UnknownModelNameIsAnErrorNotAFallback) {
  test::TempDir dir;
  const auto r = test::run_llmft(tiny_args(dir / "run", {"--model", "gpt2-meduim"}));
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("gpt2-meduim"), std::string::npos) << describe(r);
  EXPECT_FALSE(fs::exists(dir / "run" / "summary.json"));
}

// A resumed run judges with the judge it was started with (config.json records --judge-url,
// --judge-model and --no-judge); options given with --resume still override.
TEST(Finetune, ResumedRunKeepsItsJudge) {
  test::FakeJudge judge;
  std::atomic<int> phi3_asked{0};
  judge.chat = [&](const test::FakeJudge::Chat& c, const httplib::Request& req,
                   httplib::Response& res) {
    phi3_asked += c.body.value("model", std::string()) == "phi3";
    test::FakeJudge::reply(req, res, c.body.value("stream", true), "42");
    return true;
  };
  test::TempDir dir;
  const fs::path run = dir / "run";
  auto args = tiny_args(run, {"--max-steps", "2", "--interrupt-after-step", "0"});
  args.erase(std::find(args.begin(), args.end(), "--no-judge"));
  args.insert(args.end(), {"--judge-url", judge.url(), "--judge-model", "phi3"});
  const auto cut = test::run_llmft(args);
  ASSERT_EQ(cut.exit_code, 130) << describe(cut);
  const json options = read_json(run / "config.json")["options"];
  EXPECT_EQ(options["judge_url"], judge.url());
  EXPECT_EQ(options["judge_model"], "phi3");
  const auto resumed = test::run_llmft({"finetune", "--resume", run.string()});
  ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
  EXPECT_NE(resumed.out.find("Scoring the test answers with phi3 at " + judge.url()),
            std::string::npos)
      << describe(resumed);
  const json summary = read_json(run / "summary.json");
  ASSERT_TRUE(summary.contains("judge")) << summary.dump(2);
  EXPECT_EQ(summary["judge"]["model"], "phi3");
  EXPECT_EQ(summary["judge"]["url"], judge.url());
  EXPECT_EQ(phi3_asked.load(), judge.chat_requests.load());

  // --no-judge is kept as well: the resumed run looks for no judge at all.
  const fs::path quiet = dir / "quiet";
  const auto cut2 = test::run_llmft(tiny_args(quiet, {"--max-steps", "2",
                                                      "--interrupt-after-step", "0"}));
  ASSERT_EQ(cut2.exit_code, 130) << describe(cut2);
  EXPECT_EQ(read_json(quiet / "config.json")["options"]["judge"], false);
  const auto resumed2 = test::run_llmft({"finetune", "--resume", quiet.string()});
  ASSERT_EQ(resumed2.exit_code, 0) << describe(resumed2);
  EXPECT_EQ(resumed2.out.find("Scoring"), std::string::npos) << describe(resumed2);
  EXPECT_EQ(resumed2.out.find("No judge LLM answers"), std::string::npos) << describe(resumed2);
  EXPECT_FALSE(fs::exists(quiet / "test-responses-scored.json"));

  // A judge named with --resume overrides the recorded --no-judge.
  const auto cut3 = test::run_llmft(tiny_args(dir / "late", {"--max-steps", "2",
                                                             "--interrupt-after-step", "0"}));
  ASSERT_EQ(cut3.exit_code, 130) << describe(cut3);
  const auto resumed3 = test::run_llmft({"finetune", "--resume", (dir / "late").string(),
                                         "--judge-url", judge.url()});
  ASSERT_EQ(resumed3.exit_code, 0) << describe(resumed3);
  EXPECT_NE(resumed3.out.find("Scoring the test answers with llama3 at " + judge.url()),
            std::string::npos)
      << describe(resumed3);
}
