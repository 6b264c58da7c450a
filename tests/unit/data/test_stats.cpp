// Dataset statistics for `llmft data stats`: exact duplicates (with the split of each copy) and
// the entries longer than the length limit and those that lose their whole response.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "llmft/data/dataset.h"
#include "llmft/data/stats.h"
#include "llmft/data/tokenized.h"

namespace llmft {
namespace {

TEST(DataStats, ExactDuplicatesAndTheirSplits) {
  // 20 entries: train 0-16, test 17-18, validation 19.
  nlohmann::json a = nlohmann::json::array();
  for (int i = 0; i < 20; ++i) {
    a.push_back({{"instruction", "Task " + std::to_string(i)}, {"input", ""}, {"output", "o" + std::to_string(i)}});
  }
  a[5] = a[4];                    // train copies train
  a[18] = a[3];                   // test copies train: a leak
  a[19]["instruction"] = "Task 0";  // same instruction only
  a[7]["input"] = "x";
  a[8]["input"] = "x";
  a[9]["output"] = "o1";
  const ExactDuplicates d = exact_duplicates(parse_dataset(a.dump(), "d.json"));
  EXPECT_EQ(d.entries, 2);
  EXPECT_EQ(d.cross_split, 1);
  EXPECT_EQ(d.instruction, 3);  // 5, 18, 19
  EXPECT_EQ(d.input, 1);        // 8 (empty inputs do not count)
  EXPECT_EQ(d.output, 3);       // 5, 9, 18
}

TEST(DataStats, EntriesLongerThanTheLimitAndThoseThatLoseTheirResponse) {
  // Lengths 10, 11, 30; outputs start at tokens 6, 7, 14. Target position p learns token p + 1,
  // so a limit L learns tokens 1 .. L: a response starting at token s survives when s <= L.
  const TokenizedDataset td = make_tokenized_dataset(
      {std::vector<int32_t>(10, 1), std::vector<int32_t>(11, 1), std::vector<int32_t>(30, 1)},
      {4, 5, 12}, {6, 7, 14});
  const Truncation t10 = truncation(td, 10);  // 10 tokens fit a limit of 10
  EXPECT_EQ(t10.entries, 2);
  EXPECT_EQ(t10.response_lost, 1);
  EXPECT_EQ(describe_truncation(t10, 3),
            "2 of 3 entries are longer than 10 tokens: training crops their end; 1 of them loses "
            "its whole response (trains on template tokens only)");
  EXPECT_EQ(truncation(td, 30).entries, 0);
  EXPECT_EQ(describe_truncation(truncation(td, 30), 3), "no entry is longer than 30 tokens");
  const Truncation t6 = truncation(td, 6);
  EXPECT_EQ(t6.entries, 3);
  EXPECT_EQ(t6.response_lost, 2);  // 7 > 6 and 14 > 6; the first keeps its token 6
  // Without response starts the prompt lengths stand in.
  const TokenizedDataset bare = make_tokenized_dataset({std::vector<int32_t>(30, 1)}, {12});
  EXPECT_EQ(truncation(bare, 11).response_lost, 1);
  EXPECT_EQ(truncation(bare, 12).response_lost, 0);
}

}  // namespace
}  // namespace llmft
