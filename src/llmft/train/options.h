// Everything `llmft finetune` can be told, with the reference recipe's values as defaults
// (SPEC §6), and the checks that reject bad values (never clamped).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace llmft {

struct FinetuneOptions {
  // What to train.
  std::string model = "gpt2-medium";  // name, HF folder, or "random:<preset>" (see docs/finetune.md)
  std::filesystem::path data;         // empty = the bundled data/instruction-data.json
  std::string prompt_template = "alpaca";  // alpaca | phi3
  bool mask_prompt = false;
  int64_t max_length = 1024;  // truncation of inputs and targets (allowed_max_length)
  bool tied = false;          // reference: untied (a copy of wte as lm_head)
  double dropout = 0.0;
  bool allow_download = true;  // fetch the named model when it is not in the hub cache
  // Fall back to a random small GPT-2 when the named model can be neither found nor downloaded.
  bool offline_fallback = true;

  // LoRA (model/lora.h): train adapters beside the frozen model instead of the model itself.
  bool lora = false;
  int64_t lora_rank = 16;
  double lora_alpha = 16;  // scale = alpha / rank, as PEFT
  double lora_dropout = 0;
  std::string lora_targets = "c_attn,attn.c_proj,c_fc,mlp.c_proj";
  std::vector<int64_t> lora_layers;  // empty: every block (set from an adapter that says otherwise)
  bool lora_rslora = false;          // scale = alpha / sqrt(rank) (from an adapter that uses it)
  std::filesystem::path adapter;     // continue training this adapter (its rank, alpha, targets)
  bool merge = false;                // also write the merged full model (model/)

  // How to train.
  int64_t batch_size = 8;   // examples per optimizer step
  int64_t grad_accum = 1;   // micro-batches per optimizer step (batch_size must divide by it)
  int64_t epochs = 2;
  int64_t max_steps = 0;    // > 0: stop after this many optimizer steps (overrides epochs)
  double lr = 5e-5;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t warmup_steps = 0;
  std::string schedule = "constant";  // constant | linear | cosine
  double grad_clip = 0;               // max global grad norm; 0 = off
  int64_t eval_freq = 5;              // evaluate every N optimizer steps (step 0 included)
  int64_t eval_batches = 5;           // batches of each loader per evaluation
  uint64_t seed = 123;
  int threads = 0;                    // 0 = all cores
  std::string precision = "fp32";     // fp32 | bf16 (matrix products; see model/precision.h)

  // Outputs.
  std::filesystem::path output;       // empty = runs/<timestamp>
  int64_t checkpoint_every = 0;       // also checkpoint every N steps (0 = only at epoch ends)
  double checkpoint_minutes = 10;     // also checkpoint after this much training time (0 = off)
  int64_t max_new_tokens = 256;       // for the test-set answers
  bool test_answers = true;
  int64_t sample_tokens = 50;         // greedy tokens printed after each epoch
  // The judge that scores the test answers after training (finetune's --judge-url,
  // --judge-model, --no-judge), kept in config.json so a resumed run judges the same way.
  // Empty: the judge's defaults (runs recorded before these fields also read as empty).
  std::string judge_url;
  std::string judge_model;
  bool judge = true;

  // Test hooks (hidden on the command line): behave as if Ctrl-C came after this step (>= 0), or
  // die by SIGKILL after it (nothing flushed beyond what a real kill -9 would leave).
  int64_t interrupt_after_step = -1;
  int64_t kill_after_step = -1;
  int64_t term_after_step = -1;  // raise SIGTERM after this step (the real handler takes it)
  bool term_after_training = false;  // raise SIGTERM once the loop is done (before the outputs)
  // Benchmark hooks (not on the command line): write no checkpoint and no model folder (a
  // gpt2-medium checkpoint is ~5 GB; such a run cannot be resumed), and print the greedy sample
  // after the last step as well when a --max-steps run ends inside an epoch (so a shortened run
  // still times one sample).
  bool skip_model_writes = false;
  bool sample_at_end = false;

  // Throws UsageError naming the option, its value and what is allowed.
  void validate() const;
  // The data file actually used.
  std::filesystem::path data_path() const;
};

nlohmann::json to_json(const FinetuneOptions& o);
// What the optimizer ran with, for a run's summary: {"lr", "schedule", "warmup_steps",
// "weight_decay", "grad_clip" (null when off)}, and the same as one line for people.
nlohmann::json optimizer_json(const FinetuneOptions& o);
std::string describe_optimizer(const FinetuneOptions& o);
// Reads what to_json wrote (a run's config.json); unknown keys are ignored, missing ones keep
// their defaults. Throws Error naming the field on a wrong type.
FinetuneOptions options_from_json(const nlohmann::json& j);

}  // namespace llmft
