// Preference data (data/preference.h): the reference's DPO collate worked out by hand (prompt +2
// mask, cropping, common padded length, one forked sequence per pair), and the loading errors.
#include <string>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/data/batch.h"
#include "llmft/data/dataset.h"
#include "llmft/data/preference.h"
#include "llmft/tokenizer/bpe.h"
#include "test_util.h"

using namespace llmft;

namespace {

constexpr int32_t X = kIgnoreIndex;
using Ids = std::vector<int32_t>;

PreferenceTokens pairs(const std::vector<Ids>& chosen, const std::vector<Ids>& rejected,
                       const std::vector<int64_t>& prompt_lens) {
  return {make_tokenized_dataset(chosen, prompt_lens), make_tokenized_dataset(rejected, prompt_lens)};
}

TEST(PreferenceCollate, MasksThePromptAndTwoMoreTokensAndForksEachPairAfterItsPrompt) {
  // pair 0: prompt [1 2 3], chosen response [4 5 6 7], rejected [8 9 10]
  // pair 1: prompt [11 12], chosen response [13 14 15], rejected [16 17 18 19 20]
  const auto p = pairs({{1, 2, 3, 4, 5, 6, 7}, {11, 12, 13, 14, 15}},
                       {{1, 2, 3, 8, 9, 10}, {11, 12, 16, 17, 18, 19, 20}}, {3, 2});
  const int64_t idx[] = {1, 0};
  const PreferenceBatch b = collate_preferences(p, idx, 1024);
  EXPECT_EQ(b.B, 2);
  EXPECT_EQ(b.indices, (std::vector<int64_t>{1, 0}));
  // Each text counts its tokens but the last as inputs. The reference's mask[:prompt_len + 2] =
  // False drops the targets of tokens 0 .. prompt_len + 1: the first counted target is token
  // prompt_len + 2. One sequence per pair: the rows both texts share (same input, no counted
  // target), then the chosen text's other rows, then the rejected text's.
  // Pair 1: shared [11 12] | chosen [13 14] | rejected [16 17 18 19]   (fork at 2, second at 4)
  // Pair 0: shared [1 2 3] | chosen [4 5 6] | rejected [8 9]           (fork at 3, second at 6)
  EXPECT_EQ(b.seq_offsets, (std::vector<int64_t>{0, 8, 16}));
  EXPECT_EQ(b.inputs, (Ids{11, 12, 13, 14, 16, 17, 18, 19, 1, 2, 3, 4, 5, 6, 8, 9}));
  EXPECT_EQ(b.targets, (Ids{X, X, X, 15, X, 18, 19, 20, X, X, X, X, 6, 7, X, 10}));
  ASSERT_EQ(b.forks.size(), 2u);
  EXPECT_EQ(b.forks[0].prefix, 2);
  EXPECT_EQ(b.forks[0].second, 4);
  EXPECT_EQ(b.forks[1].prefix, 3);
  EXPECT_EQ(b.forks[1].second, 6);
  // Texts interleaved: chosen 1, rejected 1, chosen 0, rejected 0.
  EXPECT_EQ(b.target_offsets, (std::vector<int64_t>{0, 1, 4, 6, 7}));
  // Padded to max(len + 1) = 8 over both sides, as tokens_seen counts chosen.numel().
  EXPECT_EQ(b.padded_tokens, 2 * 8);
}

TEST(PreferenceCollate, CropsToMaxLength) {
  const auto p = pairs({{1, 2, 3, 4, 5, 6, 7, 8}}, {{1, 2, 3, 4, 9}}, {1});
  const int64_t idx[] = {0};
  const PreferenceBatch b = collate_preferences(p, idx, 5);
  // chosen keeps tokens 0..4 (inputs 1 2 3 4, targets from token 3 on), rejected all 5. Rows 0
  // and 1 are shared; row 2 has the same input but a counted target, so each text keeps its own.
  EXPECT_EQ(b.inputs, (Ids{1, 2, 3, 4, 3, 4}));
  EXPECT_EQ(b.targets, (Ids{X, X, 4, 5, 4, 9}));
  ASSERT_EQ(b.forks.size(), 1u);
  EXPECT_EQ(b.forks[0].prefix, 2);
  EXPECT_EQ(b.forks[0].second, 4);
  EXPECT_EQ(b.padded_tokens, 5);  // min(9, 5)
}

TEST(PreferenceCollate, APairSharingNoRowBecomesTwoSequences) {
  // The texts differ from their first token: no shared prompt row, so no fork.
  const auto p = pairs({{1, 2, 3, 4}}, {{9, 2, 3, 5}}, {1});
  const int64_t idx[] = {0};
  const PreferenceBatch b = collate_preferences(p, idx, 1024);
  EXPECT_EQ(b.seq_offsets, (std::vector<int64_t>{0, 3, 6}));
  EXPECT_EQ(b.inputs, (Ids{1, 2, 3, 9, 2, 3}));
  EXPECT_EQ(b.targets, (Ids{X, X, 4, X, X, 5}));
  ASSERT_EQ(b.forks.size(), 2u);
  EXPECT_EQ(b.forks[0].second, 3);  // second == length: no fork
  EXPECT_EQ(b.forks[1].second, 3);
  EXPECT_EQ(b.target_offsets, (std::vector<int64_t>{0, 1, 2}));
}

InstructionDataset dataset(const std::string& json) {
  return parse_dataset(json, "prefs.json");
}

TEST(PreferenceTokens, RejectMissingFieldsAndEmptyAnswersNamingTheEntry) {
  const BpeTokenizer& tok = BpeTokenizer::bundled();
  const auto ok = tokenize_preferences(
      dataset(R"([{"instruction":"Say hi","input":"","output":"Hi","chosen":"Hello there",
                   "rejected":"What"}])"),
      tok, 1024);
  EXPECT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok.chosen.prompt_lens[0], ok.rejected.prompt_lens[0]);
  EXPECT_GT(ok.chosen.length(0), ok.chosen.prompt_lens[0] + 2);
  try {
    tokenize_preferences(
        dataset(R"([{"instruction":"a","input":"","output":"b","chosen":"c","rejected":"d"},
                    {"instruction":"a","input":"","output":"b","chosen":"c"}])"),
        tok, 1024);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("entry 1: missing field \"rejected\""), std::string::npos)
        << e.what();
  }
  // Cropped to 8 tokens, the alpaca prompt leaves no answer token to score (0 / 0 in the
  // reference's mean): refused up front, naming the entry.
  try {
    tokenize_preferences(dataset(R"([{"instruction":"a","input":"","output":"b","chosen":"c",
                                      "rejected":"d"}])"),
                         tok, 8);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("entry 0: the chosen answer has no token"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
