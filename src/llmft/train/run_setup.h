// The steps of a finetuning run before its model (train/trainer.cpp): the run folder (a new one,
// or the record of the run being resumed) and the dataset with its split.
#pragma once

#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "llmft/data/dataset.h"
#include "llmft/data/template.h"
#include "llmft/data/tokenized.h"
#include "llmft/train/options.h"

namespace llmft {

// The run folder and, resuming, what the run recorded there.
struct RunFolder {
  std::filesystem::path dir, config_file, metrics_file;
  bool resuming = false;
  nlohmann::json saved_config;                      // resuming: the run's config.json
  std::optional<std::filesystem::path> checkpoint;  // resuming: the checkpoint to continue from
};

// opts.output (or runs/<date>-<time>) for a new run, which must not hold one already; or
// resume_dir, which must hold a checkpoint. Throws UsageError / Error naming the folder.
RunFolder resolve_run_folder(const FinetuneOptions& opts, const std::filesystem::path& resume_dir);

// The dataset, its 85/10/5 split, and (once the model's tokenizer is known) its tokens.
struct RunData {
  PromptTemplate tmpl = PromptTemplate::kAlpaca;
  InstructionDataset ds;
  DatasetSplits split;
  TokenizedDataset tokens;
};

// Loads and splits the dataset; the splits must hold a training batch and a validation entry.
RunData load_data(const FinetuneOptions& opts);

}  // namespace llmft
