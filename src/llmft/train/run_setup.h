// The steps of a training run (llmft finetune, train/trainer.cpp; llmft dpo, train/dpo.cpp)
// before and around its loop: the run folder (a new one, or the record of the run being resumed),
// the dataset with its split, the starting model, the console, the greedy sample.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "llmft/data/dataset.h"
#include "llmft/data/template.h"
#include "llmft/data/tokenized.h"
#include "llmft/model/adamw.h"
#include "llmft/train/model_source.h"
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

class ProgressBar;

// Log lines go to stdout; the progress bar (stderr) is cleared first so they print above it.
struct Console {
  ProgressBar* bar = nullptr;
  void line(const std::string& s);
};

double seconds_since(std::chrono::steady_clock::time_point t);

// A new run's model from opts.model; a resumed run's from its record (weights: the checkpoint).
LoadedModel load_starting_model(const FinetuneOptions& opts, const RunFolder& folder,
                                Console& con);
// GPT-2's initialisation for a random model (a folder's weights are in it already, a resumed
// run's come from its checkpoint); then the run's precision.
void init_model(Gpt2& model, const LoadedModel& source, const FinetuneOptions& opts);
// --lora: the adapters the run trains, attached to the model (frozen from here on): read from
// --adapter, or new with PEFT's initialisation (a resumed run's come from its checkpoint). An
// adapter's own settings replace the options, so config.json records what is trained. In bf16 the
// frozen base is then kept in bf16 only.
void attach_lora(LoadedModel& source, FinetuneOptions& opts, bool resuming);
AdamWConfig adamw_config(const FinetuneOptions& opts);

// `tokens` greedy tokens after `prompt` (no stop at <|endoftext|>, as generate_text_simple), the
// prompt and the tokens decoded on one line (newlines as spaces): the sample after each epoch.
std::string greedy_sample(Gpt2& model, const BpeTokenizer& tok, const std::string& prompt,
                          int64_t tokens);

}  // namespace llmft
