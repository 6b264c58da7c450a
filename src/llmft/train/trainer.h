// The finetuning loop of the reference recipe: AdamW over pre-tokenized, shuffled
// batches; evaluation every eval_freq steps; a greedy sample after each epoch; then the test-set
// answers, the finetuned model as a Hugging Face folder, the metrics log, the loss plot and a
// summary, all in one run folder. Checkpoints make an interrupted run resumable, bit for bit.
#pragma once

#include <atomic>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llmft/train/options.h"

namespace llmft {

// Where one invocation's wall time went and the work it did (a resumed run counts from the
// resume). Token counts are the packed positions the model computed (no padding); target tokens
// are the positions whose target is not -100, the only rows the output head computes.
struct FinetunePhases {
  double setup_seconds = 0;    // tokenizer, data, model, resume (everything before the loop)
  double train_seconds = 0;    // training steps: collate, forward, backward, AdamW
  double eval_seconds = 0;     // evaluations (forward-only loss batches)
  double sample_seconds = 0;   // greedy samples after the epochs
  double write_seconds = 0;    // checkpoints, loss plot, model folder
  double answers_seconds = 0;  // test-set answers
  double total_seconds = 0;    // the whole call, up to summary.json
  int64_t steps = 0;
  int64_t evaluations = 0;
  int64_t eval_batches = 0;  // batches over all evaluations (train and validation loaders)
  int64_t samples = 0;
  int64_t train_tokens = 0, train_target_tokens = 0;
  int64_t eval_tokens = 0, eval_target_tokens = 0;
  std::vector<double> step_seconds;  // (steps) each training step, in order
  std::vector<double> eval_each_seconds;  // (evaluations) each evaluation, in order
};
// The totals and counts (not the per-step lists), as summary.json's "phases".
nlohmann::json to_json(const FinetunePhases& p);

// How a caller stops a run: `requested` becomes true (Ctrl-C) and the loop stops after the current
// step with a checkpoint. The run sets `after_training` when its loop is done and the outputs
// (model folder, test answers) are being written, so a signal handler can say what a stop means.
struct StopControl {
  std::atomic<bool> requested{false};
  std::atomic<bool> after_training{false};
};

struct FinetuneResult {
  std::filesystem::path run_dir;
  bool interrupted = false;   // stopped early (Ctrl-C): a checkpoint was written, resume later
  bool finished_before = false;  // --resume of a finished run: nothing was done or written
  nlohmann::json summary;     // what summary.json holds (empty when interrupted)
  FinetunePhases phases;      // filled in interrupted runs too
};

// Runs the recipe with `opts` (validated), or resumes the run in `resume_dir` (non-empty) from its
// last checkpoint (see resolve_run_folder: a run without one starts again, a finished one does
// nothing unless opts ask for more steps). Log lines go to stdout, the progress bar to stderr.
// When stop->requested becomes true (Ctrl-C) the loop finishes the current step, checkpoints and
// returns with interrupted = true.
FinetuneResult run_finetune(const FinetuneOptions& opts, const std::filesystem::path& resume_dir,
                            StopControl* stop);

}  // namespace llmft
