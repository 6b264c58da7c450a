// Prompt templates (SPEC §1): the prompt (instruction + input) and the training text
// (prompt + response) for an entry. alpaca matches the reference's format_input() byte for byte.
#pragma once

#include <string>
#include <string_view>

#include "llmft/data/dataset.h"

namespace llmft {

enum class PromptTemplate { kAlpaca, kPhi3 };

// "alpaca" or "phi3"; anything else is a UsageError naming the value.
PromptTemplate parse_template(std::string_view name);
std::string_view template_name(PromptTemplate t);

// alpaca: "Below is an instruction ...\n\n### Instruction:\n" + instruction
//         [+ "\n\n### Input:\n" + input when input is not empty]
// phi3:   "<|user|>\n" + instruction [+ "\n" + input when input is not empty]
std::string format_prompt(PromptTemplate t, std::string_view instruction, std::string_view input);
// What follows the prompt before the answer: "\n\n### Response:\n" or "\n<|assistant|>:\n".
std::string_view response_prefix(PromptTemplate t);
// prompt + response_prefix + output: the text the model is trained on.
std::string format_training_text(PromptTemplate t, std::string_view instruction,
                                 std::string_view input, std::string_view output);

inline std::string format_prompt(PromptTemplate t, const InstructionEntry& e) {
  return format_prompt(t, e.instruction, e.input);
}
inline std::string format_training_text(PromptTemplate t, const InstructionEntry& e) {
  return format_training_text(t, e.instruction, e.input, e.output);
}

}  // namespace llmft
