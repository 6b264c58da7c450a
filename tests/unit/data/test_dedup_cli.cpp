// `llmft dedup` end to end on the bundled dataset: the printed summary, the JSON report, the
// cleaned file, and one-line errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "test_util.h"

namespace llmft {
namespace {

using nlohmann::json;

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(DedupCli, BundledDatasetReportAndClean) {
  test::TempDir d;
  const auto r = test::run_llmft({"dedup", "--data", (data_dir() / "instruction-data.json").string(),
                                  "--output", (d / "report.json").string(), "--clean",
                                  (d / "clean.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Pair counts as tests/golden/dedup_pairs.json has them at 0.9.
  EXPECT_TRUE(has(r.out, "instruction: 441 pairs >= 0.9 among 1100 non-empty texts")) << r.out;
  EXPECT_TRUE(has(r.out, "across splits: test-validation 3, train-test 38, train-validation 51")) << r.out;
  EXPECT_TRUE(has(r.out, "input: 15 pairs >= 0.9 among 325 non-empty texts")) << r.out;
  EXPECT_TRUE(has(r.out, "output: 1 pairs >= 0.9 among 1100 non-empty texts")) << r.out;
  EXPECT_TRUE(has(r.out, "  0.9510  #0 (train) / #593 (train)\n    1. Evaluate the following phrase")) << r.out;
  EXPECT_TRUE(has(r.out, "cleaned: 1085 of 1100 entries written to")) << r.out;
  const json rep = json::parse(read_file(d / "report.json"));
  EXPECT_EQ(rep["pairs"].size(), 457u);
  EXPECT_EQ(rep["removed"].size(), 15u);
  EXPECT_EQ(rep["fields"][0]["cross_split_pairs"], 92);
  const InstructionDataset clean = load_dataset(d / "clean.json");
  ASSERT_EQ(clean.size(), 1085u);
  // The first removed entry is gone and the one after it moved up.
  const size_t first_removed = rep["removed"][0];
  const InstructionDataset orig = load_dataset(data_dir() / "instruction-data.json");
  EXPECT_EQ(clean.entries[first_removed].instruction, orig.entries[first_removed + 1].instruction);
}

TEST(DedupCli, ErrorsAreOneLine) {
  const auto bad = test::test_data_dir() / "datasets" / "missing_field.json";
  const auto r = test::run_llmft({"dedup", "--data", bad.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.substr(0, r.err.find('\n')),
            "llmft: error: " + bad.string() + ": entry 2: field \"input\" is missing");
  const auto t = test::run_llmft(
      {"dedup", "--data", (data_dir() / "instruction-data.json").string(), "--threshold", "0"});
  EXPECT_EQ(t.exit_code, 2);
  EXPECT_TRUE(has(t.err, "--threshold 0 is out of range: expected a value in (0, 1]")) << t.err;
  const auto f = test::run_llmft({"dedup", "--data", (data_dir() / "instruction-data.json").string(),
                                  "--fields", "instruction", "--clean-fields", "output", "--clean", "x.json"});
  EXPECT_EQ(f.exit_code, 2);
  EXPECT_TRUE(has(f.err, "--clean-fields output: not among --fields")) << f.err;
}

}  // namespace
}  // namespace llmft
