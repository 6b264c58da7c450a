// `llmft synth`: instruction data written by a local LLM, Magpie-style (SPEC §9, the reference's
// ch07/05_dataset-generation/llama3-ollama.ipynb): the model gets only its chat template's user
// header as a raw prompt and writes an instruction, then answers it in a normal chat.
// Resumable output and near-duplicate filtering (data/dedup.h); docs/datatools.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "llmft/judge/judge.h"

namespace llmft {

// Llama 3's header for a user turn, as the reference sends it: the model continues it with a
// user message, i.e. an instruction.
inline constexpr const char* kLlama3UserHeader =
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>";

struct SynthOptions {
  // Server connection: url, model, api, stream, timeouts, retries, concurrency, API key,
  // progress, on_report (the same client as `judge`; its file fields are unused).
  JudgeOptions server;
  int64_t count = 0;                   // entries wanted in the output
  std::filesystem::path output;        // Alpaca-format JSON array, written atomically
  std::string header = kLlama3UserHeader;
  double temperature = 1.0;
  double top_p = 1.0;
  uint64_t seed = 123;                 // attempt k sends seed + k (so instructions differ)
  int64_t max_instruction_tokens = 256;  // num_predict / max_tokens of the instruction request
  int64_t max_attempts = 0;            // 0: 2 * count + 10
  // Near-duplicate filter: generated instructions are compared (TF-IDF cosine, as `llmft
  // dedup`) with these datasets' instructions and with each other; the later one is dropped.
  std::vector<std::filesystem::path> dedup_against;
  bool dedup = false;                  // on when dedup_against is given, or asked for alone
  double dedup_threshold = 0.9;
  bool resume = true;                  // keep the entries an existing output file holds
};

struct SynthSummary {
  std::filesystem::path output;
  int64_t wanted = 0, resumed = 0, written = 0;  // written: entries in the output at the end
  int64_t attempts = 0;          // generation attempts this run
  int64_t requests = 0;          // HTTP requests, retries included
  int64_t empty = 0;             // attempts whose instruction or answer was empty
  int64_t failed = 0;            // attempts that failed (bad reply, HTTP error)
  int64_t duplicates = 0;        // dropped as near-duplicates
  double seconds = 0;
};

// The instruction in a raw completion: its first non-empty line, trimmed (the reference's
// extract_instruction).
std::string extract_instruction(std::string_view completion);

// The JSON bodies sent (docs/datatools.md).
std::string synth_instruction_body(const SynthOptions& o, uint64_t seed);
std::string synth_answer_body(const SynthOptions& o, const std::string& instruction, uint64_t seed);

// Generates until the output holds `count` entries (or max_attempts are spent), saving
// atomically as entries arrive; a lost server stops the run with an Error after saving, and the
// same command resumes.
SynthSummary synth_dataset(const SynthOptions& opts);

std::string format_synth_summary(const SynthSummary& s);

}  // namespace llmft
