// Answering a whole instruction dataset (SPEC §7): every entry's prompt (template, no response)
// generated in batches, the recipe's answer extraction, and the entries written back with an added
// "model_response" field as 4-space indented JSON (json.dump(..., indent=4)), atomically.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
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

struct AnswerOptions {
  PromptTemplate prompt_template = PromptTemplate::kAlpaca;
  GenerateOptions gen;             // the recipe: greedy, max_new_tokens 256
  std::vector<std::string> stop;   // each answer ends before the first of these (none: the recipe)
  std::string field = "model_response";
  bool progress = true;            // a ProgressBar on stderr (entries, tokens/s)
  std::string label = "answering";  // the bar's label
};

// Answers each entry; returns a JSON array of the entries' original objects (key order and extra
// fields kept) each with `field` set to the answer. stats (optional) gets the generation totals.
nlohmann::ordered_json answer_entries(Gpt2& model, const BpeTokenizer& tok,
                                      std::span<const InstructionEntry> entries,
                                      const AnswerOptions& opts, GenerateStats* stats = nullptr);

// answer_entries, then writes the array to `out` (4-space indent, non-ASCII escaped as Python's
// json.dump does) via write_file_atomic. Returns the array too.
nlohmann::ordered_json answer_dataset(Gpt2& model, const BpeTokenizer& tok,
                                      std::span<const InstructionEntry> entries,
                                      const std::filesystem::path& out, const AnswerOptions& opts,
                                      GenerateStats* stats = nullptr);

// The recipe's JSON text for an answered array: indent 4, ensure_ascii, no trailing newline.
std::string dump_answers(const nlohmann::ordered_json& answered);

}  // namespace llmft
