// Pre-tokenization of the bundled dataset against tiktoken's ids (SOURCES.md figures and a
// sample of exact ids in tests/data/datasets/instruction_ids_sample.jsonl).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <sstream>

#include "llmft/core/io.h"
#include "llmft/data/loader.h"
#include "llmft/data/stats.h"
#include "llmft/data/tokenized.h"
#include "test_util.h"

using namespace llmft;

namespace {

const TokenizedDataset& bundled() {
  static const TokenizedDataset td = [] {
    const InstructionDataset ds = load_dataset(data_dir() / "instruction-data.json");
    return tokenize_dataset(ds, PromptTemplate::kAlpaca, BpeTokenizer::load_bundled(),
                            /*threads=*/2);
  }();
  return td;
}

}  // namespace

TEST(Tokenized, SampleIdsEqualTiktoken) {
  const TokenizedDataset& td = bundled();
  ASSERT_EQ(td.size(), 1100u);
  std::istringstream lines(read_file(test::test_data_dir() / "datasets" /
                                     "instruction_ids_sample.jsonl"));
  std::string line;
  int checked = 0;
  while (std::getline(lines, line)) {
    const auto rec = nlohmann::json::parse(line);
    const size_t i = rec.at("index");
    const auto expected = rec.at("full").get<std::vector<int32_t>>();
    const auto got = td.ids(i);
    EXPECT_EQ(std::vector<int32_t>(got.begin(), got.end()), expected) << "entry " << i;
    EXPECT_EQ(td.prompt_lens[i], rec.at("prompt_len").get<int64_t>()) << "entry " << i;
    ++checked;
  }
  EXPECT_EQ(checked, 7);
}

TEST(Tokenized, LengthFiguresOfTheBundledDataset) {
  // SOURCES.md: full texts min 40, median 55, max 91, total 62,025; prompts min 29, median 35,
  // max 59.
  const TokenizedDataset& td = bundled();
  const LengthStats full = length_stats(td, {0, 1100});
  EXPECT_EQ(full.total, 62025);
  EXPECT_EQ(full.min, 40);
  EXPECT_EQ(full.max, 91);
  EXPECT_DOUBLE_EQ(full.median, 55.0);
  const LengthStats prompt = length_stats(td, {0, 1100}, /*prompts=*/true);
  EXPECT_EQ(prompt.total, 42086);
  EXPECT_EQ(prompt.min, 29);
  EXPECT_EQ(prompt.max, 59);
  EXPECT_DOUBLE_EQ(prompt.median, 35.0);
}

TEST(Tokenized, ValidationLoaderPaddingInFileOrder) {
  // Val split in order, batches of 8: 3,116 real tokens padded to 3,733 (computed from tiktoken's
  // lengths with the reference collate).
  const TokenizedDataset& td = bundled();
  const EpochTokens e = epoch_tokens(DataLoader(td, {1045, 1100}, eval_loader_options(8)), 0);
  EXPECT_EQ(e.batches, 7);
  EXPECT_EQ(e.real_tokens, 3116);
  EXPECT_EQ(e.padded_tokens, 3733);
  EXPECT_EQ(e.packed_tokens, 3116);
  EXPECT_EQ(e.target_tokens, 3116);
}

// A conversation's earlier answer is a token span inside the prompt; its tokens are the answer's
// own ids. The response start is the prompt with its marker.
TEST(Tokenized, ConversationAnswerSpansAndResponseStart) {
  const InstructionDataset ds = parse_dataset(R"([{"messages": [
      {"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Hello there"},
      {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye."}]}])",
                                              "chat.json");
  const BpeTokenizer tok = BpeTokenizer::load_bundled();
  const TokenizedDataset td = tokenize_dataset(ds, PromptTemplate::kAlpaca, tok, 1);
  ASSERT_EQ(td.answer_spans.size(), 1u);
  ASSERT_EQ(td.answer_spans[0].size(), 1u);
  const auto [b, e] = td.answer_spans[0][0];
  const auto ids = td.ids(0);
  EXPECT_EQ(tok.decode(std::vector<int32_t>(ids.begin() + b, ids.begin() + e)), " Hello there");
  EXPECT_LT(e, td.prompt_lens[0]);
  EXPECT_EQ(tok.decode(std::vector<int32_t>(ids.begin() + td.response_starts[0], ids.end())),
            "Bye.");
  // Alpaca entries have no spans.
  const TokenizedDataset plain = tokenize_dataset(
      parse_dataset(R"([{"instruction": "i", "input": "", "output": "o"}])", "a.json"),
      PromptTemplate::kAlpaca, tok, 1);
  EXPECT_TRUE(plain.answer_spans.empty());
}
