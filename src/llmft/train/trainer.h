// The finetuning loop of the reference recipe (SPEC §6): AdamW over pre-tokenized, shuffled
// batches; evaluation every eval_freq steps; a greedy sample after each epoch; then the test-set
// answers, the finetuned model as a Hugging Face folder, the metrics log, the loss plot and a
// summary, all in one run folder. Checkpoints make an interrupted run resumable, bit for bit.
#pragma once

#include <atomic>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "llmft/train/options.h"

namespace llmft {

struct FinetuneResult {
  std::filesystem::path run_dir;
  bool interrupted = false;   // stopped early (Ctrl-C): a checkpoint was written, resume later
  nlohmann::json summary;     // what summary.json holds (empty when interrupted)
};

// Runs the recipe with `opts` (validated), or resumes the run in `resume_dir` (non-empty) from its
// last checkpoint. Log lines go to stdout, the progress bar to stderr. When `*stop` becomes true
// (Ctrl-C) the loop finishes the current step, checkpoints and returns with interrupted = true.
FinetuneResult run_finetune(const FinetuneOptions& opts, const std::filesystem::path& resume_dir,
                            const std::atomic<bool>* stop);

}  // namespace llmft
