// Dataset statistics for `llmft data stats`: exact duplicates (with the split of each copy) and
// the entries longer than the model's context.
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

TEST(DataStats, EntriesLongerThanTheContext) {
  const TokenizedDataset td = make_tokenized_dataset(
      {std::vector<int32_t>(10, 1), std::vector<int32_t>(11, 1), std::vector<int32_t>(30, 1)},
      {4, 5, 12});
  EXPECT_EQ(over_context(td, 10).entries, 2);  // 10 tokens fit a context of 10
  EXPECT_EQ(over_context(td, 10).prompt_only, 1);
  EXPECT_EQ(over_context(td, 30).entries, 0);
  EXPECT_EQ(over_context(td, 5).prompt_only, 2);
}

}  // namespace
}  // namespace llmft
