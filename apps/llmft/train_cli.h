// Options and checks shared by the training commands `llmft finetune` and `llmft dpo`.
#pragma once

#include <CLI/CLI.hpp>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llmft/train/options.h"

namespace llmft::app {

// Declares an option that defines the run (refused beside --resume): records it, returns it.
using AddRunOption = std::function<CLI::Option*(CLI::Option*)>;

// --checkpoint-every, --checkpoint-minutes.
void add_checkpoint_options(CLI::App& app, FinetuneOptions& o, const AddRunOption& add);
// --lora, --lora-rank, --lora-alpha, --lora-dropout, --lora-targets, --adapter, --merge.
void add_lora_options(CLI::App& app, FinetuneOptions& o, const AddRunOption& add);
// After parsing a new run: an --adapter brings its own settings, so --lora-* beside it is refused.
void check_lora_options(const CLI::App& app, const FinetuneOptions& o);

// --threads, --resume and the hidden test hooks (--interrupt-after-step, --kill-after-step,
// --term-after-step).
void add_resume_options(CLI::App& app, FinetuneOptions& o, std::string& resume,
                        const std::string& resume_help);
// --resume DIR: refuses every run option given beside it but --max-steps and --epochs (which
// extend the run), reads the config.json of the `command` run in DIR (throws Error naming the
// file otherwise) and returns its "options".
nlohmann::json resume_options(const std::vector<CLI::Option*>& run_opts,
                              const std::filesystem::path& dir, const std::string& command,
                              const std::string& hint);
// What a resumed run takes from this command line: --threads, --max-steps and --epochs when
// given (--epochs alone replaces a recorded --max-steps), the test hooks, and its own folder as
// the output.
void keep_resume_settings(const CLI::App& app, const FinetuneOptions& cli,
                          const std::filesystem::path& dir, FinetuneOptions& run);

}  // namespace llmft::app
