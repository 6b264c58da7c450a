// Options and model loading shared by `llmft generate` and `llmft chat` (cmd_generate.cpp).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "llmft/generate/generate.h"
#include "llmft/io/hf_folder.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft::app {

struct GenerationCliOptions {
  std::string model, prompt_template = "alpaca";
  int64_t max_new_tokens = 256;
  float temperature = 0.0f, top_p = 1.0f;
  int top_k = 0;
  uint64_t seed = 123;
  int threads = 0;
  std::string precision = "fp32";
};

void add_generation_options(CLI::App& app, GenerationCliOptions& o);

struct LoadedModel {
  std::filesystem::path dir;
  std::unique_ptr<HfModel> hf;
  std::unique_ptr<BpeTokenizer> tok;  // the folder's vocab.json/merges.txt, else the bundled one
};
// --model NAME|DIR through io's resolve_model, then config, weights and tokenizer.
LoadedModel load_generation_model(const GenerationCliOptions& o);
// Validated (UsageError on a bad flag value).
GenerateOptions to_generate_options(const GenerationCliOptions& o);

}  // namespace llmft::app
