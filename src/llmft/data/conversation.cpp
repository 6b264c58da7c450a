// See conversation.h.
#include "llmft/data/conversation.h"

#include "llmft/core/error.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft {

std::string format_conversation(PromptTemplate t, std::string_view system,
                                std::span<const ChatTurn> turns, size_t first) {
  LLMFT_CHECK(first < turns.size(), "conversation of {} turns from turn {}", turns.size(), first);
  std::string p(system);
  for (size_t k = first; k + 1 < turns.size(); ++k) {
    if (!p.empty()) p += "\n\n";
    p += format_training_text(t, turns[k].user, "", turns[k].assistant);
  }
  if (!p.empty()) p += "\n\n";
  return p + format_prompt(t, turns.back().user, "");
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
