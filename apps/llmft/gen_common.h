// Options shared by `llmft generate` and `llmft chat` (cmd_generate.cpp). Both load their model
// with io's load_model.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "llmft/generate/generate.h"
#include "llmft/io/model_loader.h"

namespace llmft::app {

struct GenerationCliOptions {
  std::string model, prompt_template = "alpaca";
  std::string adapter;  // LoRA adapter folder (PEFT layout) run beside the model; empty: none
  int64_t max_new_tokens = 256;
  float temperature = 0.0f, top_p = 1.0f, min_p = 0.0f, repeat_penalty = 1.0f;
  int top_k = 0, repeat_last_n = 64;
  uint64_t seed = 0;
  CLI::Option* seed_option = nullptr;  // count() == 0: no --seed given
  std::vector<std::string> stop;
  bool verbose = false;
  int threads = 0;
  std::string precision = "fp32";
};

void add_generation_options(CLI::App& app, GenerationCliOptions& o);

// How the model and its adapter load (io's load_model).
ModelLoadOptions model_load_options(const GenerationCliOptions& o);

// Validated (UsageError on a bad flag value). Sampling without --seed draws a fresh seed and
// prints it on stderr, so the run can be repeated; greedy decoding needs none.
GenerateOptions to_generate_options(GenerationCliOptions& o);

// A warning on stderr when a prompt of `prompt_tokens` leaves fewer than max_new_tokens positions
// in the model's context of maxT (generation then slides its window: slower, older text is lost).
void warn_if_over_context(int64_t maxT, int64_t prompt_tokens, int64_t max_new_tokens);

// --verbose: prompt and decode speed, as llama.cpp prints them, on stderr.
void print_timings(const GenerateStats& st);

}  // namespace llmft::app
