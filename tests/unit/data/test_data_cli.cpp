// `llmft data stats` end to end: the printed counts for the bundled dataset, and a bad file
// giving exit code 1 with one error line.
#include <string>

#include "llmft/core/io.h"
#include "test_util.h"

using namespace llmft;

namespace {

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST(DataStatsCli, BundledDatasetCounts) {
  const auto r = test::run_llmft({"data", "stats", (data_dir() / "instruction-data.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "entries  1100 (train 935, test 110, val 55; template alpaca)")) << r.out;
  // Counted with Python on data/instruction-data.json (146 repeated instructions, e.g. one
  // "Translate ..." with several inputs; no entry repeats as a whole).
  EXPECT_TRUE(has(r.out, "exact duplicates  0 entries repeat an earlier entry (0 in another split); "
                         "same instruction 146, same non-empty input 11, same output 0\n"))
      << r.out;
  // The same limit as finetune by default.
  EXPECT_TRUE(has(r.out, "length limit  1024 tokens (--max-length 1024, context 1024): no entry is "
                         "longer than 1024 tokens\n"))
      << r.out;
  // split, entries, tokens, min, median, mean, max (tiktoken lengths; SOURCES.md for "all").
  EXPECT_TRUE(has(r.out, "train       935    52760    40      56    56.4    91")) << r.out;
  EXPECT_TRUE(has(r.out, "test        110     6149    41      55    55.9    85")) << r.out;
  EXPECT_TRUE(has(r.out, "val          55     3116    42      54    56.7    76")) << r.out;
  EXPECT_TRUE(has(r.out, "all        1100    62025    40      55    56.4    91")) << r.out;
  // 935 / 8 = 116 batches; the padding figure depends on our shuffle, so only its presence.
  EXPECT_TRUE(has(r.out, "116 batches of 8")) << r.out;
  EXPECT_TRUE(has(r.out, "padding overhead")) << r.out;
}

TEST(DataStatsCli, ShortContextCountsLongEntries) {
  const auto r = test::run_llmft(
      {"data", "stats", (data_dir() / "instruction-data.json").string(), "--context", "60"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // From tiktoken's ids in tests/data/tokenizer/instruction_dataset.jsonl: 289 training texts
  // have more than 60 tokens; of those, 11 have a prompt of 55 or more tokens, so their output
  // starts after token 60 (the response marker "\n\n### Response:\n" is 6 more tokens).
  EXPECT_TRUE(has(r.out, "length limit  60 tokens (--max-length 1024, context 60): 289 of 1100 "
                         "entries are longer than 60 tokens: training crops their end; 11 of them "
                         "lose their whole response (train on template tokens only)\n"))
      << r.out;
}

// --max-length below every prompt: each entry keeps template tokens only, and says so.
TEST(DataStatsCli, ShortMaxLengthLosesEveryResponse) {
  const auto r = test::run_llmft({"data", "stats", (data_dir() / "instruction-data.json").string(),
                                  "--max-length", "10"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "length limit  10 tokens (--max-length 10, context 1024): 1100 of 1100 "
                         "entries are longer than 10 tokens: training crops their end; 1100 of "
                         "them lose their whole response (train on template tokens only)\n"))
      << r.out;
  EXPECT_TRUE(has(r.out, "max length 10)")) << r.out;
}

TEST(DataStatsCli, BadFileExitsOneWithOneLine) {
  const auto bad = test::test_data_dir() / "datasets" / "missing_field.json";
  const auto r = test::run_llmft({"data", "stats", bad.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty()) << r.out;
  const std::string first = r.err.substr(0, r.err.find('\n'));
  EXPECT_EQ(first, "llmft: error: " + bad.string() + ": entry 2: field \"input\" is missing");
  EXPECT_TRUE(has(r.err, "hint: ")) << r.err;
}

TEST(DataStatsCli, UnknownTemplateIsAUsageError) {
  const auto r = test::run_llmft(
      {"data", "stats", (data_dir() / "instruction-data.json").string(), "--template", "chatml"});
  EXPECT_EQ(r.exit_code, 2);
}

TEST(DataStatsCli, OutOfRangeValuesAreReadableUsageErrors) {
  const auto r = test::run_llmft(
      {"data", "stats", (data_dir() / "instruction-data.json").string(), "--batch-size", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--batch-size: Value 0 not in range 1 to 1048576"), std::string::npos)
      << r.err;
}
