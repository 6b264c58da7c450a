// run_finetune's account of its own work (FinetuneResult::phases, summary.json's "phases"): the
// counts and token totals match the batches the loaders give, and the benchmark hooks
// (skip_model_writes, sample_at_end) do what they say and nothing by default.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <numeric>

#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "llmft/data/loader.h"
#include "llmft/data/template.h"
#include "llmft/data/tokenized.h"
#include "llmft/tokenizer/bpe.h"
#include "llmft/train/model_source.h"
#include "llmft/train/trainer.h"
#include "test_util.h"

using namespace llmft;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// tests/data/finetune-tiny.json: train 20, validation 2, test 2; batch 4 -> 5 steps per epoch.
FinetuneOptions tiny_options(const fs::path& out) {
  FinetuneOptions o;
  o.model = "random:tiny";
  o.data = test::test_data_dir() / "finetune-tiny.json";
  o.batch_size = 4;
  o.eval_freq = 3;
  o.eval_batches = 2;
  o.threads = 1;
  o.test_answers = false;
  o.sample_tokens = 3;
  o.output = out;
  return o;
}

struct Work {
  int64_t tokens = 0, targets = 0, batches = 0;
  void add(const Batch& b) {
    tokens += b.packed_tokens();
    targets += b.target_tokens;
    ++batches;
  }
};

}  // namespace

TEST(TrainerPhases, CountTheWorkOfEachPartAndSkipTheModelWrites) {
  test::TempDir dir;
  FinetuneOptions o = tiny_options(dir / "run");
  o.max_steps = 7;  // epoch 1 ends after step 4; the run stops inside epoch 2
  o.skip_model_writes = true;
  o.sample_at_end = true;
  const FinetuneResult r = run_finetune(o, {}, nullptr);
  ASSERT_FALSE(r.interrupted);
  const FinetunePhases& p = r.phases;

  // The same batches, from the loaders the trainer uses: step s is batch s % 5 of epoch s / 5;
  // an evaluation after step s (s % 3 == 0: 0, 3, 6; the last step, 6, is one of them) reads the
  // first 2 batches of that epoch's train order and the validation loader's only batch.
  const InstructionDataset ds = load_dataset(o.data);
  const TokenizedDataset td =
      tokenize_dataset(ds, PromptTemplate::kAlpaca, BpeTokenizer::load_bundled(), 1);
  const DatasetSplits split = split_dataset(ds.size());
  const CollateOptions collate{std::min<int64_t>(1024, random_preset("tiny").maxT), false};
  const DataLoader train(td, split.train, train_loader_options(4, o.seed, collate));
  const DataLoader val(td, split.val, eval_loader_options(4, collate));
  ASSERT_EQ(train.num_batches(), 5);
  ASSERT_EQ(val.num_batches(), 1);
  Work steps, evals;
  for (int64_t s = 0; s < 7; ++s) {
    steps.add(train.batch(s / 5, s % 5));
    if (s % 3 == 0) {
      for (int64_t b = 0; b < 2; ++b) evals.add(train.batch(s / 5, b));
      evals.add(val.batch(0, 0));
    }
  }
  EXPECT_EQ(p.steps, 7);
  EXPECT_EQ(p.train_tokens, steps.tokens);
  EXPECT_EQ(p.train_target_tokens, steps.targets);
  EXPECT_EQ(p.evaluations, 3);
  EXPECT_EQ(p.eval_batches, evals.batches);
  EXPECT_EQ(p.eval_tokens, evals.tokens);
  EXPECT_EQ(p.eval_target_tokens, evals.targets);
  // Unmasked prompts: every packed position has a target (the last one, the end token).
  EXPECT_EQ(p.train_tokens, p.train_target_tokens);
  // After the epoch end (step 4) and, with sample_at_end, after the last step (6).
  EXPECT_EQ(p.samples, 2);

  // The per-step lists add up to the phase totals, and the phases fit inside the whole call.
  ASSERT_EQ(p.step_seconds.size(), 7u);
  ASSERT_EQ(p.eval_each_seconds.size(), 3u);
  const double steps_sum = std::accumulate(p.step_seconds.begin(), p.step_seconds.end(), 0.0);
  const double evals_sum =
      std::accumulate(p.eval_each_seconds.begin(), p.eval_each_seconds.end(), 0.0);
  // Same additions in a different order: only rounding of a few doubles can differ.
  EXPECT_NEAR(steps_sum, p.train_seconds, 1e-9);
  EXPECT_NEAR(evals_sum, p.eval_seconds, 1e-9);
  EXPECT_LE(p.setup_seconds + p.train_seconds + p.eval_seconds + p.sample_seconds +
                p.write_seconds + p.answers_seconds,
            p.total_seconds);
  EXPECT_EQ(p.answers_seconds, 0.0);

  // No checkpoint, no model folder; the summary says so and carries the phases.
  EXPECT_FALSE(fs::exists(dir / "run" / "checkpoints"));
  EXPECT_FALSE(fs::exists(dir / "run" / "model"));
  const json summary = json::parse(read_file(dir / "run" / "summary.json"));
  EXPECT_EQ(summary, r.summary);
  EXPECT_EQ(summary["phases"], to_json(p));
  EXPECT_EQ(summary["phases"]["train_tokens"], steps.tokens);
  EXPECT_TRUE(summary["outputs"]["model"].is_null());
  EXPECT_TRUE(summary["outputs"]["checkpoint"].is_null());
  EXPECT_EQ(summary["precision"], "fp32");
}

TEST(TrainerPhases, ByDefaultWritesAreTimedAndNoExtraSample) {
  test::TempDir dir;
  FinetuneOptions o = tiny_options(dir / "run");
  o.max_steps = 2;  // ends inside epoch 1: no epoch-end sample, and sample_at_end is off
  const FinetuneResult r = run_finetune(o, {}, nullptr);
  ASSERT_FALSE(r.interrupted);
  EXPECT_EQ(r.phases.steps, 2);
  EXPECT_EQ(r.phases.evaluations, 2);  // after step 0 and after the last step, 1
  EXPECT_EQ(r.phases.samples, 0);
  EXPECT_EQ(r.phases.sample_seconds, 0.0);
  EXPECT_TRUE(fs::is_directory(dir / "run" / "checkpoints"));
  EXPECT_TRUE(fs::is_directory(dir / "run" / "model"));
  EXPECT_GT(r.phases.write_seconds, 0.0);  // measured, whatever its size
  EXPECT_EQ(r.summary["outputs"]["model"], (dir / "run" / "model").string());
}

TEST(TrainerPhases, AnInterruptedRunStillReportsItsPhases) {
  test::TempDir dir;
  FinetuneOptions o = tiny_options(dir / "run");
  o.interrupt_after_step = 1;
  o.skip_model_writes = true;
  const FinetuneResult r = run_finetune(o, {}, nullptr);
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.phases.steps, 2);
  EXPECT_EQ(r.phases.evaluations, 1);
  EXPECT_GT(r.phases.total_seconds, 0.0);
  EXPECT_FALSE(fs::exists(dir / "run" / "checkpoints"));
}
