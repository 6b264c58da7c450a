// Near-duplicate search against the reference's definition (tests/reference/dedup_reference.py
// goldens): the analysed text of tricky Unicode, the TF-IDF cosine of every pair, the pairs of
// the bundled dataset; the pruned search against brute force; cleaning and the report.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <tuple>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "llmft/data/dedup.h"
#include "llmft/data/tfidf.h"
#include "test_util.h"

namespace llmft {
namespace {

using nlohmann::json;

std::string utf8(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xE0 | (c >> 12));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (c >> 18));
      out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

json golden(const std::string& name) { return json::parse(read_file(test::golden_dir() / name)); }

InstructionDataset unicode_dataset() {
  return load_dataset(test::test_data_dir() / "datasets" / "dedup_unicode.json");
}

DedupOptions quiet(double threshold, std::vector<std::string> fields) {
  DedupOptions o;
  o.threshold = threshold;
  o.fields = std::move(fields);
  o.progress = false;
  return o;
}

TEST(DedupText, MatchesPythonLowerAndRegexOnTrickyUnicode) {
  const json g = golden("dedup_unicode.json");
  const InstructionDataset ds = unicode_dataset();
  ASSERT_EQ(g["analyzed"].size(), ds.size());
  for (size_t i = 0; i < ds.size(); ++i) {
    EXPECT_EQ(utf8(dedup_analyzed_text(ds.entries[i].instruction)), g["analyzed"][i].get<std::string>())
        << "entry " << i << ": " << ds.entries[i].instruction;
  }
}

TEST(DedupTfidf, EveryPairScoreMatchesTheReference) {
  const json g = golden("dedup_unicode.json");
  const InstructionDataset ds = unicode_dataset();
  std::vector<std::u32string> docs;
  std::vector<int64_t> row_of(ds.size(), -1);
  for (size_t i = 0; i < ds.size(); ++i) {
    if (ds.entries[i].instruction.empty()) continue;
    row_of[i] = static_cast<int64_t>(docs.size());
    docs.push_back(dedup_analyzed_text(ds.entries[i].instruction));
  }
  const SparseRows x = char_tfidf(docs, /*threads=*/2);
  ASSERT_GT(g["pairs"].size(), 80u);
  for (const auto& p : g["pairs"]) {
    const size_t i = p[0], j = p[1];
    // Both float64 with the same operations but another summation order: rounding only.
    EXPECT_NEAR(row_dot(x, row_of[i], row_of[j]), p[2].get<double>(), 1e-12) << i << " " << j;
  }
}

// All golden pairs >= threshold, as (field, first, second) -> score.
std::map<std::tuple<std::string, size_t, size_t>, double> golden_pairs(const json& g, double t) {
  std::map<std::tuple<std::string, size_t, size_t>, double> m;
  for (const auto& [field, pairs] : g["pairs"].items()) {
    for (const auto& p : pairs) {
      if (p[2].get<double>() >= t - 1e-9) m[{field, p[0], p[1]}] = p[2];
    }
  }
  return m;
}

void expect_same_pairs(const DedupResult& r, const std::map<std::tuple<std::string, size_t, size_t>, double>& want) {
  std::map<std::tuple<std::string, size_t, size_t>, double> got;
  for (const DuplicatePair& p : r.pairs) got[{p.field, p.first, p.second}] = p.score;
  for (const auto& [k, s] : want) {
    const auto it = got.find(k);
    if (it == got.end()) {
      ADD_FAILURE() << "missing pair " << std::get<0>(k) << " " << std::get<1>(k) << " "
                    << std::get<2>(k) << " score " << s;
      continue;
    }
    // The issue asks for 1e-6; both sides are float64, so rounding-level agreement is expected.
    EXPECT_NEAR(it->second, s, 1e-9) << std::get<0>(k) << " " << std::get<1>(k) << " " << std::get<2>(k);
  }
  for (const auto& [k, s] : got) {
    EXPECT_TRUE(want.count(k)) << "extra pair " << std::get<0>(k) << " " << std::get<1>(k) << " "
                               << std::get<2>(k) << " score " << s;
  }
}

TEST(DedupSearch, UnicodeFixtureAtLowThresholds) {
  const json g = golden("dedup_unicode.json");
  json as_fields;
  as_fields["pairs"]["instruction"] = g["pairs"];
  const InstructionDataset ds = unicode_dataset();
  for (double t : {0.01, 0.2, 0.5, 0.9, 1.0}) {
    SCOPED_TRACE(t);
    expect_same_pairs(find_near_duplicates(ds, quiet(t, {"instruction"})), golden_pairs(as_fields, t));
  }
  // Identical texts meet threshold 1; the one-character entry ("x") never pairs.
  const DedupResult r = find_near_duplicates(ds, quiet(1.0, {"instruction"}));
  ASSERT_EQ(r.pairs.size(), 1u);
  EXPECT_EQ(r.pairs[0].first, 0u);
  EXPECT_EQ(r.pairs[0].second, 14u);
}

TEST(DedupSearch, BundledDatasetMatchesTheReferencePairs) {
  const json g = golden("dedup_pairs.json");
  const InstructionDataset ds = load_dataset(data_dir() / "instruction-data.json");
  for (double t : {0.75, 0.9}) {
    SCOPED_TRACE(t);
    const DedupResult r = find_near_duplicates(ds, quiet(t, {"instruction", "input", "output"}));
    expect_same_pairs(r, golden_pairs(g, t));
    ASSERT_EQ(r.fields.size(), 3u);
    EXPECT_EQ(r.fields[1].documents, 325);  // non-empty inputs
  }
}

// Texts over a 6-letter alphabet with shared stems, so similarities spread over (0, 1].
std::vector<std::u32string> random_docs(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::u32string> stems;
  for (int s = 0; s < 12; ++s) {
    std::u32string t;
    const int len = 5 + static_cast<int>(rng() % 40);
    for (int k = 0; k < len; ++k) t.push_back(U"abcde "[rng() % 6]);
    stems.push_back(t);
  }
  std::vector<std::u32string> docs;
  for (size_t i = 0; i < n; ++i) {
    std::u32string d = stems[rng() % stems.size()];
    const int edits = static_cast<int>(rng() % 6);
    for (int e = 0; e < edits && !d.empty(); ++e) d[rng() % d.size()] = U"abcdefxy"[rng() % 8];
    if (rng() % 4 == 0) d += stems[rng() % stems.size()];
    if (rng() % 10 == 0) d = docs.empty() ? d : docs[rng() % docs.size()];  // exact copies
    docs.push_back(d);
  }
  docs.push_back(U"");  // a row of zeros
  return docs;
}

TEST(DedupSearch, PrunedSearchEqualsBruteForce) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    const SparseRows x = char_tfidf(random_docs(300, seed), 2);
    for (double t : {0.2, 0.5, 0.8, 0.9, 0.97, 1.0}) {
      SCOPED_TRACE(testing::Message() << "seed " << seed << " threshold " << t);
      std::vector<std::tuple<int64_t, int64_t, double>> want;
      for (int64_t a = 0; a < x.rows(); ++a) {
        for (int64_t b = a + 1; b < x.rows(); ++b) {
          const double s = row_dot(x, a, b);
          if (s >= t - 1e-9) want.emplace_back(a, b, s);
        }
      }
      const auto got = similar_rows(x, t, /*threads=*/2);
      ASSERT_EQ(got.size(), want.size());
      for (size_t k = 0; k < got.size(); ++k) {
        EXPECT_EQ(got[k].a, std::get<0>(want[k]));
        EXPECT_EQ(got[k].b, std::get<1>(want[k]));
        EXPECT_NEAR(got[k].score, std::get<2>(want[k]), 1e-12);  // another summation order
      }
      if (t == 0.5) {
        EXPECT_GT(want.size(), 1000u);  // the data really has many similar pairs
      }
    }
  }
}

TEST(DedupSearch, ThreadCountDoesNotChangeTheResult) {
  const SparseRows x = char_tfidf(random_docs(400, 7), 1);
  const auto one = similar_rows(x, 0.7, 1);
  const auto two = similar_rows(x, 0.7, 2);
  ASSERT_EQ(one.size(), two.size());
  for (size_t k = 0; k < one.size(); ++k) {
    EXPECT_EQ(one[k].a, two[k].a);
    EXPECT_EQ(one[k].b, two[k].b);
    EXPECT_EQ(one[k].score, two[k].score);
  }
}

InstructionDataset small(std::vector<std::array<std::string, 3>> rows, const std::string& name = "d.json") {
  json a = json::array();
  for (const auto& r : rows) a.push_back({{"instruction", r[0]}, {"input", r[1]}, {"output", r[2]}});
  return parse_dataset(a.dump(), name);
}

TEST(DedupClean, LaterMembersOfPairsInTheCleanFieldsOnly) {
  const InstructionDataset ds = small({
      {"Name a fruit.", "", "An apple is a fruit."},          // 0
      {"Name a fruit.", "", "Bananas are yellow."},           // 1: instruction copy of 0
      {"Give an example of a fruit.", "", "An apple is a fruit!"},  // 2: output copy of 0
      {"Say hi.", "hello there", "Hi."},                      // 3
      {"Translate.", "Hello there!", "Hallo."},               // 4: input copy of 3
      {"Something else entirely", "", "An apple is a fruit"}, // 5: output copy of 0 and 2
  });
  const DedupResult r = find_near_duplicates(ds, quiet(0.95, {"instruction", "input", "output"}));
  std::set<std::tuple<std::string, size_t, size_t>> got;
  for (const auto& p : r.pairs) got.insert({p.field, p.first, p.second});
  const std::set<std::tuple<std::string, size_t, size_t>> want{
      {"instruction", 0, 1}, {"input", 3, 4}, {"output", 0, 2}, {"output", 0, 5}, {"output", 2, 5}};
  EXPECT_EQ(got, want);
  EXPECT_EQ(later_members(r, {"input", "output"}), (std::vector<size_t>{2, 4, 5}));
  EXPECT_EQ(later_members(r, {"instruction"}), (std::vector<size_t>{1}));
}

TEST(DedupClean, SaveDatasetKeepsExtraFieldsAndReadsBack) {
  test::TempDir d;
  nlohmann::ordered_json a = nlohmann::ordered_json::array(
      {{{"instruction", "é \"q\"\nx"}, {"input", ""}, {"output", "o"}, {"extra", {1, 2}}},
       {{"instruction", "b"}, {"input", "i"}, {"output", "p"}}});
  const InstructionDataset ds = parse_dataset(a.dump(), "d.json");
  for (const char* name : {"out.json", "out.jsonl"}) {
    save_dataset(d / name, ds.entries);
    const InstructionDataset back = load_dataset(d / name);
    ASSERT_EQ(back.size(), 2u);
    EXPECT_EQ(back.entries[0].instruction, "é \"q\"\nx");
    EXPECT_EQ(back.entries[0].raw["extra"], nlohmann::ordered_json({1, 2}));
    EXPECT_EQ(back.entries[1].input, "i");
  }
  // The array form is indented as Python's json.dump(indent=4).
  EXPECT_EQ(read_file(d / "out.json").rfind("[\n    {\n        \"instruction\": ", 0), 0u);
  const std::string lines = read_file(d / "out.jsonl");
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 2);
}

TEST(DedupReport, SplitsOfEachMember) {
  // 20 entries: train 0-16, test 17-18, validation 19.
  const char* texts[20] = {
      "Name a fruit.", "Explain gravity to a child.", "Convert 5 km to miles.",
      "Write a haiku about rain.", "List three prime numbers.", "Translate hello into Spanish.",
      "Summarize the plot of Hamlet.", "Give an antonym of brave.", "Sort these words: b, a.",
      "Describe the color blue.", "What is photosynthesis?", "Rewrite in passive voice.",
      "Suggest a name for a cat.", "Calculate 12 times 7.", "Define the word ephemeral.",
      "Classify whales as fish or mammals.", "Correct the spelling: recieve.",
      "Who wrote Pride and Prejudice?", "Find the capital of Peru.", "Create a slogan for tea."};
  std::vector<std::array<std::string, 3>> rows;
  for (int i = 0; i < 20; ++i) rows.push_back({texts[i], "", "out"});
  rows[17][0] = rows[2][0];  // a test entry copies a training entry
  rows[19][0] = rows[18][0];  // validation copies test
  const InstructionDataset ds = small(rows);
  const DedupResult r = find_near_duplicates(ds, quiet(0.99, {"instruction"}));
  ASSERT_EQ(r.pairs.size(), 2u);
  const json rep = json::parse(dedup_report(ds, r, nullptr).dump());
  EXPECT_EQ(rep["splits"]["test"], json({17, 19}));
  EXPECT_EQ(rep["pairs"][0]["first"], 2);
  EXPECT_EQ(rep["pairs"][0]["second"], 17);
  EXPECT_EQ(rep["pairs"][0]["first_split"], "train");
  EXPECT_EQ(rep["pairs"][0]["second_split"], "test");
  EXPECT_EQ(rep["pairs"][0]["cross_split"], true);
  EXPECT_EQ(rep["pairs"][0]["second_text"], rows[2][0]);
  EXPECT_EQ(rep["pairs"][1]["first_split"], "test");
  EXPECT_EQ(rep["pairs"][1]["second_split"], "validation");
  EXPECT_EQ(rep["fields"][0]["cross_split_pairs"], 2);
  EXPECT_EQ(rep["fields"][0]["pairs_by_split"], json({{"test-validation", 1}, {"train-test", 1}}));
  EXPECT_FALSE(rep.contains("removed"));
  const std::string text = format_dedup_summary(ds, r, 5);
  EXPECT_NE(text.find("instruction: 2 pairs >= 0.99 among 20 non-empty texts"), std::string::npos) << text;
  EXPECT_NE(text.find("across splits: test-validation 1, train-test 1"), std::string::npos) << text;
}

TEST(DedupInput, BadOptionsAndFieldsAreClearErrors) {
  const InstructionDataset ds = parse_dataset(
      R"([{"instruction":"a","input":"","output":"b","chosen":"c c","n":3}])", "d.json");
  EXPECT_THROW(find_near_duplicates(ds, quiet(0, {"instruction"})), UsageError);
  EXPECT_THROW(find_near_duplicates(ds, quiet(1.5, {"instruction"})), UsageError);
  EXPECT_THROW(find_near_duplicates(ds, quiet(0.9, {})), UsageError);
  try {
    find_near_duplicates(ds, quiet(0.9, {"n"}));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "d.json: entry 0: field \"n\" is number, expected a string");
  }
  // Any string field can be compared; an absent one is empty.
  const DedupResult r = find_near_duplicates(ds, quiet(0.9, {"chosen", "missing"}));
  EXPECT_EQ(r.fields[0].documents, 1);
  EXPECT_EQ(r.fields[1].documents, 0);
}

}  // namespace
}  // namespace llmft
