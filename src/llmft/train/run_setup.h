// The steps of a training run (llmft finetune, train/trainer.cpp; llmft dpo, train/dpo.cpp)
// before and around its loop: the run folder (a new one, or the record of the run being resumed),
// the dataset with its split, the starting model, the console, the greedy sample.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "llmft/data/dataset.h"
#include "llmft/data/template.h"
#include "llmft/data/tokenized.h"
#include "llmft/model/adamw.h"
#include "llmft/train/checkpoint.h"
#include "llmft/train/metrics.h"
#include "llmft/train/model_source.h"
#include "llmft/train/options.h"

namespace llmft {

// The run folder and, resuming, what the run recorded there.
struct RunFolder {
  std::filesystem::path dir, config_file, metrics_file;
  bool resuming = false;
  nlohmann::json saved_config;                      // resuming: the run's config.json
  std::optional<std::filesystem::path> checkpoint;  // resuming: the checkpoint to continue from
  int64_t checkpoint_step = 0;  // resuming: the optimizer steps done at that checkpoint
  // Resuming a run that wrote its summary and is asked for no more steps: there is nothing to do.
  bool finished = false;
  // Resuming with more steps than the run recorded: saved_config holds the new length, written
  // to config.json with each checkpoint (so the record matches the newest checkpoint).
  bool extending = false;
  std::string note;  // one line for the console: a restart in place, an extension, a finished run
};

// opts.output (or runs/<date>-<time>) for a new run, which must not hold a run with a checkpoint
// (one that stopped before its first checkpoint is started again in place); or resume_dir, which
// holds the run to continue: from its newest checkpoint, from step 0 when it has none (its
// recorded options again), or not at all when it is finished. Resuming, opts' total steps may grow
// (an extension) but not shrink. Throws UsageError / Error naming the folder.
RunFolder resolve_run_folder(const FinetuneOptions& opts, const std::filesystem::path& resume_dir);

// Optimizer steps of a run: --max-steps, or --epochs whole epochs.
int64_t run_total_steps(const FinetuneOptions& opts, int64_t steps_per_epoch);
// "20 steps (0.17 of an epoch of 116 steps)", "1 step (...)", "232 steps (2 epochs of 116 steps)".
std::string describe_steps(int64_t steps, int64_t steps_per_epoch);
// Epochs completed after `steps` steps, a fraction (summary.json's "epochs").
double epochs_done(int64_t steps, int64_t steps_per_epoch);

// The dataset, its 85/10/5 split, and (once the model's tokenizer is known) its tokens.
struct RunData {
  PromptTemplate tmpl = PromptTemplate::kAlpaca;
  InstructionDataset ds;
  DatasetSplits split;
  TokenizedDataset tokens;
  std::string fingerprint;  // FNV-1a 64 of the file's bytes, hex: a resumed run checks it
};

// Loads and splits the dataset; the splits must hold a training batch and a validation entry.
// Resuming, the file must be the one the run started with (throws Error otherwise).
RunData load_data(const FinetuneOptions& opts, const RunFolder& folder);
// config.json's "data": path, fingerprint, entries and split sizes.
nlohmann::json data_record(const FinetuneOptions& opts, const RunData& data);

class ProgressBar;

// Log lines go to stdout; the progress bar (stderr) is cleared first so they print above it.
struct Console {
  ProgressBar* bar = nullptr;
  void line(const std::string& s);
};

double seconds_since(std::chrono::steady_clock::time_point t);
// --threads: the requested count, or (0) the cores divided among the ranks on this machine.
int default_threads(int requested);
// "2 threads", or for a data-parallel run "2 ranks x 1 thread".
std::string describe_threads(int threads);

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
// The header line of a LoRA run: trainable parameters, rank, alpha, dropout, targets.
std::string describe_lora(Gpt2& model, const FinetuneOptions& opts);
AdamWConfig adamw_config(const FinetuneOptions& opts);
// AdamW inside the model's backward pass (Gpt2::set_fused_update) where nothing needs the whole
// gradient at once: no LoRA (its adapters are small), no --grad-clip, one micro-batch, one
// process. The same updates with 1.1 GB less memory for gpt2-medium and no pass over a
// whole-model gradient. The trainer calls adamw.begin_step(lr) before the step's backward and no
// adamw.step() after it (when model.fused_update()), and turns it off when done.
void fuse_adamw(Gpt2& model, AdamW& adamw, const FinetuneOptions& opts);
// Before an update: a loss or gradient norm that is not finite stops the run (throws Error naming
// the step), so the weights and the last checkpoint stay as they were.
void check_finite_step(int64_t step, double loss, double grad_norm);

// What an adapter's base_model_name_or_path records: a Hugging Face name as such, a folder as its
// path.
std::string base_model_name(const FinetuneOptions& opts, const LoadedModel& source);
// The trained weights in the run folder: model/ (Hugging Face layout); with LoRA adapter/ (PEFT
// layout) instead, and model/ as well with --merge (the base merged with the adapter; a base kept
// in bf16 only is read again in fp32 to merge into). Says where each went on the console.
struct SavedModel {
  std::optional<std::filesystem::path> model_dir, adapter_dir;
};
SavedModel save_trained_model(Gpt2& model, const FinetuneOptions& opts, const LoadedModel& source,
                              const std::filesystem::path& run_dir, Console& con);

// The loop of a training run, the reference's train_model_simple (and train_model_dpo_simple):
// until st.step reaches total_steps: a step; an evaluation when its global step % eval_freq == 0
// and after the last step;
// at each epoch end (and at the last step with sample_at_end) the sample; a checkpoint at each
// epoch end, at the last step, every checkpoint_every steps, checkpoint_minutes after the last
// one, and when a stop is requested (then it returns false: interrupted). The progress bar shows
// bar_text of each step's record.
struct TrainLoop {
  const char* name;  // the progress bar's label
  int64_t total_steps, steps_per_epoch;
  std::function<StepRecord()> step;
  std::function<void(int64_t epoch, const StepRecord&)> evaluate;
  std::function<void()> sample, checkpoint;
  std::function<std::string(const StepRecord&)> bar_text;
};
// st.train_seconds grows by the loop's wall time; returns false when interrupted.
bool run_train_loop(const TrainLoop& loop, const FinetuneOptions& opts, TrainState& st,
                    const std::atomic<bool>* stop, Console& con);

// The sample after each epoch: `tokens` greedy tokens after the first validation entry's prompt
// (no stop at <|endoftext|>, as generate_text_simple), the prompt and the tokens decoded on one
// line (newlines as spaces).
// Streams for answering the test split once training is over: as many as the memory training
// gave back (`freed` bytes: its arena and the optimizer state) holds, so that answering does not
// raise the run's peak; at least 8, at most generate()'s default. A stream holds `tokens`
// (the longest prompt and its new tokens, cropped to the context).
int64_t answer_streams(int64_t freed, const Gpt2Config& cfg, Precision precision, int64_t tokens);

std::string greedy_sample(Gpt2& model, const BpeTokenizer& tok, const RunData& data,
                          int64_t tokens);

// A checkpoint of what the run trains (the model's or the adapters' parameters) with AdamW's
// state and the loop's position (st.adam_step is set from `adamw`). An extended run's config.json
// is rewritten beside it with the new length.
void write_run_checkpoint(Gpt2& model, const AdamW& adamw, TrainState& st,
                          const RunFolder& folder);

}  // namespace llmft
