// `llmft dpo`: direct preference optimisation of a finetuned model (SPEC §9, FACTS-phase2 §4a),
// built like the finetuning run (run_setup.h, checkpoint.h, metrics.h): the reference recipe's
// defaults, evaluation every eval_freq steps, a greedy sample after each epoch, checkpoints and
// resume, then the tuned model, the test answers beside the starting (SFT) model's, the metrics
// log, the loss plot and a summary. The frozen reference model is the starting model itself: its
// mean response log-probabilities are computed once per example, before the first step, and kept
// in the run (reference-logprobs.json), so no second model is held or run.
#pragma once

#include <atomic>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "llmft/train/options.h"
#include "llmft/train/trainer.h"

namespace llmft {

struct DpoOptions {
  // finetune's options where they apply, with the DPO recipe's values: the bundled preference
  // data, AdamW lr 5e-6, weight decay 0.01, 1 epoch, batch 8, prompt masked.
  FinetuneOptions train = recipe();
  double beta = 0.1;  // strength of the pull away from the reference

  static FinetuneOptions recipe();
  void validate() const;  // throws UsageError naming the option
};

nlohmann::json to_json(const DpoOptions& o);
DpoOptions dpo_options_from_json(const nlohmann::json& j);

// Runs DPO with `opts`, or resumes the run in `resume_dir`; as run_finetune (trainer.h).
FinetuneResult run_dpo(const DpoOptions& opts, const std::filesystem::path& resume_dir,
                       StopControl* stop);

}  // namespace llmft
