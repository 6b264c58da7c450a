// Options shared by `llmft generate` and `llmft chat` (cmd_generate.cpp). Both load their model
// with io's load_model.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

#include "llmft/generate/generate.h"
#include "llmft/io/model_loader.h"

namespace llmft::app {

struct GenerationCliOptions {
  std::string model, prompt_template = "alpaca";
  std::string adapter;  // LoRA adapter folder (PEFT layout) run beside the model; empty: none
  int64_t max_new_tokens = 256;
  float temperature = 0.0f, top_p = 1.0f;
  int top_k = 0;
  uint64_t seed = 123;
  int threads = 0;
  std::string precision = "fp32";
};

void add_generation_options(CLI::App& app, GenerationCliOptions& o);

// How the model and its adapter load (io's load_model).
ModelLoadOptions model_load_options(const GenerationCliOptions& o);

// Validated (UsageError on a bad flag value).
GenerateOptions to_generate_options(const GenerationCliOptions& o);

}  // namespace llmft::app
