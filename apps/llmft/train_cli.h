// Options and checks shared by the training commands `llmft finetune` and `llmft dpo`.
#pragma once

#include <CLI/CLI.hpp>

#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "llmft/train/options.h"

namespace llmft::app {

// Declares an option that defines the run (refused beside --resume): records it, returns it.
using AddRunOption = std::function<CLI::Option*(CLI::Option*)>;

// --lora, --lora-rank, --lora-alpha, --lora-dropout, --lora-targets, --adapter, --merge.
void add_lora_options(CLI::App& app, FinetuneOptions& o, const AddRunOption& add);
// After parsing a new run: an --adapter brings its own settings, so --lora-* beside it is refused.
void check_lora_options(const CLI::App& app, const FinetuneOptions& o);

// The config.json of the run in `dir` that `command` started; throws Error naming the file.
nlohmann::json read_run_config(const std::filesystem::path& dir, const std::string& command);

}  // namespace llmft::app
