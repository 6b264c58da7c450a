// `llmft prefs`: preference data built as the reference does (create-preference-data-ollama.ipynb,
// SPEC §9): for each entry a judge LLM rewrites the answer to be slightly more polite or more
// impolite (a seeded choice per entry); the politer text becomes `chosen`, the other `rejected`.
// Requests go through the judge's client and request pool (timeouts, retries, concurrency,
// progress), and the output is rewritten atomically as answers arrive, so a killed run resumes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "llmft/judge/judge.h"

namespace llmft {

struct PrefsOptions {
  // The server, model, API, timeouts, retries, concurrency, progress and resume settings; `input`
  // is the Alpaca dataset, `output` the preference file (required).
  JudgeOptions judge;
  uint64_t seed = 123;  // the polite/impolite choice of entry i depends on (seed, i) only
};

struct PrefsSummary {
  std::filesystem::path input, output;
  int64_t total = 0;     // entries
  int64_t resumed = 0;   // already done in the output before this run
  int64_t requests = 0;  // HTTP requests this run, retries included
  int64_t polite = 0, impolite = 0;  // done entries by the rewrite asked for
  int64_t failed = 0;    // no usable rewrite (left without chosen/rejected; a rerun retries)
};

// True when entry i is rewritten to be more polite (its rewrite becomes `chosen`).
bool prefs_polite(uint64_t seed, size_t i);

// The one user message for entry (instruction, input, output), the reference's text exactly
// (its missing spaces and doubled "return" included, so a judge answers as it did there).
std::string prefs_prompt(std::string_view instruction, std::string_view input,
                         std::string_view output, bool polite);

// Builds opts.judge.output from opts.judge.input. Throws Error (one line) on bad input, an output
// file of another input, or a server that is down or lacks the model; after losing the server
// mid-run it saves what was done first, so the same command resumes.
PrefsSummary build_preferences(const PrefsOptions& opts);

std::string format_prefs_summary(const PrefsSummary& s);

}  // namespace llmft
