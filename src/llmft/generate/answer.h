// Answering a whole instruction dataset (SPEC §7): every entry's prompt (template, no response)
// generated in batches, the recipe's answer extraction, and the entries written back with an added
// "model_response" field as 4-space indented JSON (json.dump(..., indent=4)), atomically.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmft/data/dataset.h"
#include "llmft/data/template.h"
#include "llmft/generate/generate.h"

namespace llmft {

class BpeTokenizer;

// "### Response:" for alpaca, "<|assistant|>:" for phi3.
std::string_view response_marker(PromptTemplate t);

// What answer_dataset did: answers kept from an existing output, answered now, and left
// unanswered because AnswerOptions::stop_requested was set.
struct AnswerProgress {
  size_t kept = 0, answered = 0, left = 0;
};

struct AnswerOptions {
  PromptTemplate prompt_template = PromptTemplate::kAlpaca;
  GenerateOptions gen;             // the recipe: greedy, max_new_tokens 256
  std::vector<std::string> stop;   // each answer ends before the first of these (none: the recipe)
  std::string field = "model_response";
  bool progress = true;            // a ProgressBar on stderr (entries, tokens/s)
  std::string label = "answering";  // the bar's label
  // Set (by a Ctrl-C/SIGTERM handler) to stop at the next token: the entries finished by then
  // keep their answers, the others are returned without `field`.
  const std::atomic<bool>* stop_requested = nullptr;
  // answer_dataset: keep the answers an existing `out` holds for the same entries (a run stopped
  // part way, see stop_requested) and answer only the others.
  bool resume = false;
  // Called with the answers kept from an existing output before the others are asked (resume).
  std::function<void(const AnswerProgress&)> on_resume;
};

// Answers each entry; returns a JSON array of the entries' original objects (key order and extra
// fields kept) each with `field` set to the answer (left out where opts.stop_requested cut it short).
// stats (optional) gets the generation totals (zero when stopped).
nlohmann::ordered_json answer_entries(Gpt2& model, const BpeTokenizer& tok,
                                      std::span<const InstructionEntry> entries,
                                      const AnswerOptions& opts, GenerateStats* stats = nullptr);

// answer_entries, then writes the array to `out` (4-space indent, non-ASCII escaped as Python's
// json.dump does) via write_file_atomic, also when opts.stop_requested cut it short (the unanswered entries
// without `field`). With opts.resume, an existing `out` written for the same entries keeps its
// answers and only the others are asked; one for other entries is an Error. Returns the array.
nlohmann::ordered_json answer_dataset(Gpt2& model, const BpeTokenizer& tok,
                                      std::span<const InstructionEntry> entries,
                                      const std::filesystem::path& out, const AnswerOptions& opts,
                                      GenerateStats* stats = nullptr,
                                      AnswerProgress* progress = nullptr);

// The recipe's JSON text for an answered array: indent 4, ensure_ascii, no trailing newline.
std::string dump_answers(const nlohmann::ordered_json& answered);

}  // namespace llmft
