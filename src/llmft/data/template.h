// Prompt templates (SPEC §1): the prompt (instruction + input) and the training text
// (prompt + response) for an entry. alpaca matches the reference's format_input() byte for byte.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

// An entry's prompt. A conversation's (system or history not empty) is the system text, each
// earlier turn as a training text (user message + response marker + answer), then the last user
// message as the instruction, separated by blank lines (what `llmft chat` sends).
std::string format_prompt(PromptTemplate t, const InstructionEntry& e);
// format_prompt(t, e) + response_prefix(t) + e.output.
std::string format_training_text(PromptTemplate t, const InstructionEntry& e);
// The byte ranges [begin, end) of a conversation's earlier answers inside format_prompt(t, e), in
// order (none for an entry without history): the assistant's text that a prompt-masked loss
// still learns.
std::vector<std::pair<size_t, size_t>> history_answer_ranges(PromptTemplate t,
                                                             const InstructionEntry& e);

}  // namespace llmft
