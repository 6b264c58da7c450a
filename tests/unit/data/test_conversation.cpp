// The multi-turn prompt (data/conversation.h): earlier turns as the template's training texts, the
// last message as the instruction, and cropping that drops the oldest turns first.
#include <gtest/gtest.h>

#include <vector>

#include "llmft/data/conversation.h"
#include "llmft/tokenizer/bpe.h"

using namespace llmft;

namespace {
const BpeTokenizer& tok() {
  static const BpeTokenizer t = BpeTokenizer::load_bundled();
  return t;
}
int64_t tokens(const std::string& s) {
  return static_cast<int64_t>(tok().encode(s, SpecialTokens::kAllow).size());
}
}  // namespace

TEST(Conversation, EarlierTurnsAreTrainingTextsOfTheTemplate) {
  const std::vector<ChatTurn> turns = {{"Hi", "Hello."}, {"2+2?", "4"}, {"And 3+3?", ""}};
  for (auto t : {PromptTemplate::kAlpaca, PromptTemplate::kPhi3}) {
    EXPECT_EQ(format_conversation(t, "", turns),
              format_training_text(t, "Hi", "", "Hello.") + "\n\n" +
                  format_training_text(t, "2+2?", "", "4") + "\n\n" + format_prompt(t, "And 3+3?", ""));
    EXPECT_EQ(format_conversation(t, "Be brief.", turns, 2),
              "Be brief.\n\n" + format_prompt(t, "And 3+3?", ""));
  }
  // One turn: exactly the single-instruction prompt.
  EXPECT_EQ(format_conversation(PromptTemplate::kAlpaca, "", std::vector<ChatTurn>{{"Hi", ""}}),
            format_prompt(PromptTemplate::kAlpaca, "Hi", ""));
}

TEST(Conversation, FitDropsTheOldestTurnsFirst) {
  const auto t = PromptTemplate::kAlpaca;
  const std::vector<ChatTurn> turns = {{"first question", "first answer"},
                                       {"second question", "second answer"},
                                       {"third question", ""}};
  const std::string all = format_conversation(t, "", turns);
  const std::string two = format_conversation(t, "", turns, 1);
  const std::string one = format_conversation(t, "", turns, 2);
  auto f = fit_conversation(t, tok(), "", turns, tokens(all));
  EXPECT_EQ(f.prompt, all);
  EXPECT_EQ(f.dropped, 0u);
  EXPECT_EQ(f.tokens, tokens(all));
  f = fit_conversation(t, tok(), "", turns, tokens(all) - 1);
  EXPECT_EQ(f.prompt, two);
  EXPECT_EQ(f.dropped, 1u);
  f = fit_conversation(t, tok(), "", turns, tokens(two) - 1);
  EXPECT_EQ(f.prompt, one);
  EXPECT_EQ(f.dropped, 2u);
  // The last message always stays, even over the budget.
  f = fit_conversation(t, tok(), "", turns, 1);
  EXPECT_EQ(f.prompt, one);
  EXPECT_EQ(f.tokens, tokens(one));
}
