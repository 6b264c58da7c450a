// A multi-turn conversation as one prompt of a template (`llmft chat`, `llmft serve`'s chat APIs):
// the system text, each earlier turn as a training text (instruction + response marker + answer),
// then the last user message as the instruction, separated by blank lines; cropped to a token
// budget by dropping the oldest turns first. docs/generate.md shows the format.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "llmft/data/template.h"

namespace llmft {

class BpeTokenizer;

// The last turn's assistant is the answer to come (ignored).
using ChatTurn = DialogueTurn;

// turns[first..] as one prompt (turns non-empty, first < turns.size()).
std::string format_conversation(PromptTemplate t, std::string_view system,
                                std::span<const ChatTurn> turns, size_t first = 0);

struct FittedConversation {
  std::string prompt;
  size_t dropped = 0;   // oldest turns left out to fit
  int64_t tokens = 0;   // the prompt's tokens
};

// format_conversation with the oldest turns dropped while the prompt has more than `budget`
// tokens (special tokens allowed, as generation encodes prompts). The last turn always stays, so
// the prompt may still be over the budget (generation then keeps its last tokens).
FittedConversation fit_conversation(PromptTemplate t, const BpeTokenizer& tok,
                                    std::string_view system, std::span<const ChatTurn> turns,
                                    int64_t budget);

}  // namespace llmft
