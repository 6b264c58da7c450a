// The judge server options shared by `llmft judge` and `llmft prefs` (server, model, API, key,
// timeouts, retries, concurrency, resume), and their checks.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "llmft/judge/judge.h"

namespace llmft::app {

struct JudgeServerCli {
  std::string api = "ollama";
  std::string api_key_env;
  bool no_resume = false;
};

// Adds the options writing into `o` and `c`; `resume_help` says what --no-resume redoes.
void add_judge_server_options(CLI::App& app, JudgeOptions& o, JudgeServerCli& c,
                              const std::string& resume_help);
// Applies `c` to `o` and checks the URL. Throws UsageError.
void resolve_judge_server_options(JudgeOptions& o, const JudgeServerCli& c);

}  // namespace llmft::app
