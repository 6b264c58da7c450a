// See conversation.h.
#include "llmft/data/conversation.h"

#include "llmft/core/error.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft {

std::string format_conversation(PromptTemplate t, std::string_view system,
                                std::span<const ChatTurn> turns, size_t first) {
  LLMFT_CHECK(first < turns.size(), "conversation of {} turns from turn {}", turns.size(), first);
  // The same text as a dataset conversation's prompt (format_prompt of an InstructionEntry).
  InstructionEntry e;
  e.system = system;
  e.history.assign(turns.begin() + static_cast<std::ptrdiff_t>(first), turns.end() - 1);
  e.instruction = turns.back().user;
  return format_prompt(t, e);
}

FittedConversation fit_conversation(PromptTemplate t, const BpeTokenizer& tok,
                                    std::string_view system, std::span<const ChatTurn> turns,
                                    int64_t budget) {
  FittedConversation f;
  for (;;) {
    f.prompt = format_conversation(t, system, turns, f.dropped);
    f.tokens = static_cast<int64_t>(tok.encode(f.prompt, SpecialTokens::kAllow).size());
    if (f.tokens <= budget || f.dropped + 1 >= turns.size()) return f;
    ++f.dropped;
  }
}

}  // namespace llmft
