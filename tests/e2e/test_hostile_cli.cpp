// Hostile inputs through the built llmft and the tokenizer loader (issue 16): each is one line
// on stderr saying what and where, exit code 1, nothing on stdout; never nlohmann's raw exception
// ("internal error: out_of_range.406"), a stack overflow, or a truncated vocabulary accepted.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/io/hf_folder.h"
#include "llmft/tokenizer/bpe.h"
#include "test_util.h"

using namespace llmft;
using test::TempDir;
namespace fs = std::filesystem;

namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

std::string load_error(const TempDir& dir, const std::string& vocab, const std::string& merges) {
  write_file_atomic(dir / "vocab.json", vocab);
  write_file_atomic(dir / "merges.txt", merges);
  try {
    BpeTokenizer::load_folder(dir.path());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(HostileCli, DataStatsOnANumberBeyondADouble) {
  TempDir dir;
  write_file_atomic(dir / "d.json",
                    "[{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\",\n  \"x\": 1e400}]");
  const auto r = test::run_llmft({"data", "stats", (dir / "d.json").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_EQ(first_line(r.err), "llmft: error: " + (dir / "d.json").string() +
                                   ": number 1e400 at line 2, column 8 is beyond the range of a double");
}

TEST(HostileCli, TokenizeJsonlLineNestedDeep) {
  TempDir dir;
  write_file_atomic(dir / "in.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\", \"mode\": " +
                                          std::string(100000, '[') + "}\n");
  const auto r = test::run_llmft({"tokenize", "--jsonl", (dir / "in.jsonl").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty()) << r.out.substr(0, 200);
  EXPECT_EQ(first_line(r.err), "llmft: error: " + (dir / "in.jsonl").string() +
                                   ":2: JSON nested deeper than 256 levels at line 1, column 278");
}

TEST(HostileCli, GenerateWithAConfigOfABillionLayers) {
  TempDir dir;
  Gpt2Config cfg;
  cfg.V = 50257, cfg.maxT = 8, cfg.C = 8, cfg.L = 1, cfg.NH = 2;
  const ParamTable table(cfg);
  std::vector<float> p(static_cast<size_t>(table.total()), 0.01f);
  write_hf_folder(dir / "m", cfg, table, p);
  auto j = nlohmann::json::parse(read_file(dir / "m" / "config.json"));
  j["n_layer"] = 1000000000;
  write_file_atomic(dir / "m" / "config.json", j.dump());
  const auto r = test::run_llmft({"generate", "--model", (dir / "m").string(), "Hi"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(first_line(r.err).find((dir / "m" / "config.json").string() +
                                   ": L=1000000000 C=8 NH=2 V=50257 maxT=8 untied makes"),
            std::string::npos)
      << r.err;
}

TEST(HostileCli, VocabularyNestedDeepOrMergesCutShort) {
  TempDir dir;
  const std::string vocab = read_file(data_dir() / "gpt2" / "encoder.json");
  const std::string merges = read_file(data_dir() / "gpt2" / "vocab.bpe");
  EXPECT_EQ(load_error(dir, "{\"a\": " + std::string(100000, '[') + "}", merges),
            (dir / "vocab.json").string() + ": JSON nested deeper than 256 levels at line 1, column 262");
  EXPECT_EQ(load_error(dir, vocab, ""),
            (dir / "merges.txt").string() + ": 0 merges, but the vocabulary has 50000 tokens beyond "
                                            "the 256 bytes: the file is empty or cut short");
  // The first 1,000 lines: every line valid, the rest missing.
  size_t cut = 0;
  for (int i = 0; i < 1000; ++i) cut = merges.find('\n', cut) + 1;
  EXPECT_EQ(load_error(dir, vocab, merges.substr(0, cut)),
            (dir / "merges.txt").string() + ": 999 merges, but the vocabulary has 50000 tokens beyond "
                                            "the 256 bytes: the file is empty or cut short");
  EXPECT_EQ(load_error(dir, vocab, merges), "");
}

// Malformed JSON anywhere: one line naming the file, line and column in our words, never
// nlohmann's "[json.exception.parse_error.101] ...".
TEST(HostileCli, MalformedJsonIsNamedInPlainWords) {
  TempDir dir;
  write_file_atomic(dir / "bad.json", "[{\"a\": 1,}");
  write_file_atomic(dir / "in.jsonl", "{\"text\": \"a\"}\n{\"text\": tru}\n");
  const std::string bad = (dir / "bad.json").string();
  const std::string jsonl = (dir / "in.jsonl").string();
  struct Case {
    std::vector<std::string> args;
    std::string stdin_text, want;
  };
  const std::vector<Case> cases = {
      {{"judge", "--input", bad, "--output", (dir / "o.json").string()}, "",
       bad + ": line 1, column 10: expected a string (an object key) but found '}'"},
      {{"tokenize", "--decode"}, "[1, 2\n",
       "stdin: line 2, column 1: the JSON ends early (an array is not closed)"},
      {{"tokenize", "--jsonl", jsonl}, "",
       jsonl + ": line 2, column 13: not a JSON value: 'tru}' (values are strings, numbers, "
               "objects, arrays, true, false or null)"},
      {{"data", "stats", bad}, "", bad + ": line 1, column 10 (byte 9) in entry 0"},
  };
  for (const Case& c : cases) {
    const auto r = test::run_llmft(c.args, c.stdin_text);
    EXPECT_EQ(r.exit_code, 1) << c.args[0];
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_EQ(first_line(r.err).rfind("llmft: error: " + c.want, 0), 0u) << r.err;
    EXPECT_EQ(r.err.find("json.exception"), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find("json.exception"), std::string::npos) << r.out;
  }
}
