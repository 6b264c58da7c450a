// Data-parallel finetuning under mpirun (dist/dist.h): two ranks follow the trajectory of one
// process at the same global batch, resume across rank counts, print and write once, and a rank
// that dies ends the job instead of leaving the others waiting.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "llmft/core/io.h"
#include "llmft/train/metrics.h"
#include "test_util.h"

using namespace llmft;
using namespace llmft::test;

namespace {

// A tiny random model, 20 steps, evaluations every 5: seconds per run.
std::vector<std::string> finetune_args(const std::filesystem::path& out,
                                       const std::string& steps = "20") {
  return {"finetune",         "--model",       "random:tiny", "--max-steps", steps,
          "--eval-freq",      "5",             "--eval-batches", "2",        "--no-test-answers",
          "--no-judge",       "--sample-tokens", "0",         "-o",          out.string()};
}

// mpirun -np N llmft ARGS (as root too: CI containers run as root).
RunResult mpirun(int n, const std::vector<std::string>& args) {
  std::vector<std::string> a{"--oversubscribe", "-np", std::to_string(n),
                             llmft_binary().string()};
  a.insert(a.end(), args.begin(), args.end());
  return run_program(LLMFT_MPIEXEC, a, {},
                     {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"});
}

// fp32: the ranks' gradient sum differs from one process's only in float summation order;
// over 20 AdamW steps the losses stay within 1e-5 relative.
void expect_same_trajectory(const std::filesystem::path& a, const std::filesystem::path& b) {
  const MetricsHistory ma = read_metrics(a / "metrics.jsonl"), mb = read_metrics(b / "metrics.jsonl");
  ASSERT_EQ(ma.steps.size(), mb.steps.size());
  ASSERT_EQ(ma.evals.size(), mb.evals.size());
  for (size_t i = 0; i < ma.steps.size(); ++i) {
    EXPECT_EQ(ma.steps[i].step, mb.steps[i].step);
    EXPECT_EQ(ma.steps[i].batch, mb.steps[i].batch);
    EXPECT_NEAR(ma.steps[i].loss, mb.steps[i].loss, 1e-5 * std::abs(ma.steps[i].loss)) << i;
    EXPECT_NEAR(ma.steps[i].grad_norm, mb.steps[i].grad_norm, 1e-4 * ma.steps[i].grad_norm) << i;
  }
  for (size_t i = 0; i < ma.evals.size(); ++i) {
    EXPECT_NEAR(ma.evals[i].train_loss, mb.evals[i].train_loss, 1e-5 * ma.evals[i].train_loss);
    EXPECT_NEAR(ma.evals[i].val_loss, mb.evals[i].val_loss, 1e-5 * ma.evals[i].val_loss);
  }
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(Mpi, TwoRanksFollowOneProcess) {
  TempDir tmp;
  const RunResult one = run_llmft(finetune_args(tmp / "one"));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const RunResult two = mpirun(2, finetune_args(tmp / "two"));
  ASSERT_EQ(two.exit_code, 0) << two.out << two.err;
  expect_same_trajectory(tmp / "one", tmp / "two");
  // Rank 0 alone prints and writes.
  EXPECT_EQ(count(two.out, "Summary ("), 1u) << two.out;
  EXPECT_TRUE(std::filesystem::exists(tmp / "two" / "model" / "model.safetensors"));
}

TEST(Mpi, LoraWithTwoRanksFollowsOneProcess) {
  // Only the adapters' gradients are summed; the frozen base has none.
  TempDir tmp;
  auto args = [&](const char* out) {
    auto a = finetune_args(tmp / out, "10");
    a.push_back("--lora");
    return a;
  };
  ASSERT_EQ(run_llmft(args("one")).exit_code, 0);
  const RunResult two = mpirun(2, args("two"));
  ASSERT_EQ(two.exit_code, 0) << two.out << two.err;
  expect_same_trajectory(tmp / "one", tmp / "two");
  EXPECT_TRUE(std::filesystem::exists(tmp / "two" / "adapter" / "adapter_model.safetensors"));
}

TEST(Mpi, ResumesWithAnotherNumberOfRanks) {
  TempDir tmp;
  ASSERT_EQ(run_llmft(finetune_args(tmp / "one")).exit_code, 0);
  // Two ranks stop after step 9 (both at the same step: one checkpoint), one process finishes.
  auto args = finetune_args(tmp / "split");
  args.insert(args.end(), {"--interrupt-after-step", "9"});
  const RunResult first = mpirun(2, args);
  ASSERT_EQ(first.exit_code, 130) << first.out << first.err;  // as a Ctrl-C stop
  EXPECT_NE(first.out.find("Interrupted after step 10"), std::string::npos) << first.out;
  const RunResult rest = run_llmft({"finetune", "--resume", (tmp / "split").string()});
  ASSERT_EQ(rest.exit_code, 0) << rest.out << rest.err;
  expect_same_trajectory(tmp / "one", tmp / "split");
  // And the other way: one process stops, two ranks finish.
  auto args1 = finetune_args(tmp / "split1");
  args1.insert(args1.end(), {"--interrupt-after-step", "4"});
  ASSERT_EQ(run_llmft(args1).exit_code, 130);
  const RunResult rest2 = mpirun(2, {"finetune", "--resume", (tmp / "split1").string()});
  ASSERT_EQ(rest2.exit_code, 0) << rest2.out << rest2.err;
  expect_same_trajectory(tmp / "one", tmp / "split1");
}

TEST(Mpi, DpoWithTwoRanksFollowsOneProcess) {
  // Each rank scores its share of every batch's pairs and of the reference pairs.
  TempDir tmp;
  auto args = [&](const char* out) {
    return std::vector<std::string>{"dpo",          "--model",         "random:tiny",
                                    "--max-steps",  "10",              "--eval-freq",
                                    "5",            "--eval-batches",  "2",
                                    "--no-test-answers", "--sample-tokens", "0",
                                    "-o",           (tmp / out).string()};
  };
  const RunResult one = run_llmft(args("one"));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const RunResult two = mpirun(2, args("two"));
  ASSERT_EQ(two.exit_code, 0) << two.out << two.err;
  EXPECT_EQ(read_file(tmp / "one" / "reference-logprobs.json"),
            read_file(tmp / "two" / "reference-logprobs.json"));
  const MetricsHistory ma = read_metrics(tmp / "one" / "metrics.jsonl");
  const MetricsHistory mb = read_metrics(tmp / "two" / "metrics.jsonl");
  ASSERT_EQ(ma.steps.size(), 10u);
  ASSERT_EQ(mb.steps.size(), 10u);
  for (size_t i = 0; i < ma.steps.size(); ++i) {
    // fp32 sums in another order: the loss within 1e-5 relative; the rewards (differences of
    // log-probs, ~1e-4 here) within 1e-6 absolute.
    EXPECT_NEAR(ma.steps[i].loss, mb.steps[i].loss, 1e-5 * ma.steps[i].loss) << i;
    EXPECT_NEAR(ma.steps[i].rewards->chosen, mb.steps[i].rewards->chosen, 1e-6) << i;
    EXPECT_NEAR(ma.steps[i].rewards->rejected, mb.steps[i].rewards->rejected, 1e-6) << i;
  }
}

TEST(Mpi, ARankThatDiesEndsTheJob) {
  // Rank 1 is killed (SIGKILL) after step 3 while rank 0 waits for its gradients: mpirun must
  // end the job with an error instead of waiting forever (ctest's timeout would fail the test).
  TempDir tmp;
  auto base = finetune_args(tmp / "run");
  std::vector<std::string> a{"--oversubscribe", "-np", "1", llmft_binary().string()};
  a.insert(a.end(), base.begin(), base.end());
  a.insert(a.end(), {":", "-np", "1", llmft_binary().string()});
  a.insert(a.end(), base.begin(), base.end());
  a.insert(a.end(), {"--kill-after-step", "3"});
  const RunResult r = run_program(LLMFT_MPIEXEC, a, {},
                                  {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE((r.out + r.err).find("signal 9"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(r.out.find("Summary ("), std::string::npos);  // rank 0 did not finish alone
}

}  // namespace
