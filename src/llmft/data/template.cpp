// Prompt templates, byte-exact with SPEC §1 (alpaca = the reference's format_input()).
#include "llmft/data/template.h"

#include <fmt/format.h>

#include "llmft/core/error.h"

namespace llmft {

PromptTemplate parse_template(std::string_view name) {
  if (name == "alpaca") return PromptTemplate::kAlpaca;
  if (name == "phi3") return PromptTemplate::kPhi3;
  throw UsageError(fmt::format("unknown prompt template \"{}\", expected alpaca or phi3", name));
}

std::string_view template_name(PromptTemplate t) {
  return t == PromptTemplate::kAlpaca ? "alpaca" : "phi3";
}

std::string format_prompt(PromptTemplate t, std::string_view instruction, std::string_view input) {
  std::string s;
  if (t == PromptTemplate::kAlpaca) {
    s = "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n";
    s += instruction;
    if (!input.empty()) {
      s += "\n\n### Input:\n";
      s += input;
    }
  } else {
    s = "<|user|>\n";
    s += instruction;
    if (!input.empty()) {
      s += "\n";
      s += input;
    }
  }
  return s;
}

std::string_view response_prefix(PromptTemplate t) {
  return t == PromptTemplate::kAlpaca ? "\n\n### Response:\n" : "\n<|assistant|>:\n";
}

std::string format_training_text(PromptTemplate t, std::string_view instruction,
                                 std::string_view input, std::string_view output) {
  std::string s = format_prompt(t, instruction, input);
  s += response_prefix(t);
  s += output;
  return s;
}

namespace {

// format_prompt of a conversation; with `ranges`, the byte ranges of the earlier answers.
std::string conversation_prompt(PromptTemplate t, const InstructionEntry& e,
                                std::vector<std::pair<size_t, size_t>>* ranges) {
  std::string p = e.system;
  for (const DialogueTurn& turn : e.history) {
    if (!p.empty()) p += "\n\n";
    p += format_prompt(t, turn.user, "");
    p += response_prefix(t);
    if (ranges) ranges->emplace_back(p.size(), p.size() + turn.assistant.size());
    p += turn.assistant;
  }
  if (!p.empty()) p += "\n\n";
  return p + format_prompt(t, e.instruction, e.input);
}

}  // namespace

std::string format_prompt(PromptTemplate t, const InstructionEntry& e) {
  if (e.system.empty() && e.history.empty()) return format_prompt(t, e.instruction, e.input);
  return conversation_prompt(t, e, nullptr);
}

std::string format_training_text(PromptTemplate t, const InstructionEntry& e) {
  std::string s = format_prompt(t, e);
  s += response_prefix(t);
  s += e.output;
  return s;
}

std::vector<std::pair<size_t, size_t>> history_answer_ranges(PromptTemplate t,
                                                             const InstructionEntry& e) {
  std::vector<std::pair<size_t, size_t>> ranges;
  if (!e.history.empty()) conversation_prompt(t, e, &ranges);
  return ranges;
}

}  // namespace llmft
