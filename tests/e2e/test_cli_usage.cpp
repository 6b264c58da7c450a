// Usage errors of the llmft command line: each is one "llmft: error:" line on stderr, with a
// suggestion where a name is close, and exit code 2; `llmft help [command]` prints --help's text.
#include <gtest/gtest.h>

#include "test_util.h"

using namespace llmft;

namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// Runs llmft with `args` and checks it fails as a usage error with exactly `line` on stderr.
void expect_usage_error(const std::vector<std::string>& args, const std::string& line) {
  const auto r = test::run_llmft(args);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, line + "\n");
  EXPECT_EQ(r.out, "");
}

}  // namespace

TEST(CliUsage, UnknownCommandsSuggestTheClosest) {
  expect_usage_error({"finetun"}, "llmft: error: unknown command 'finetun'; did you mean 'finetune'?");
  expect_usage_error({"genrate", "--model", "m", "hi"},
                     "llmft: error: unknown command 'genrate'; did you mean 'generate'?");
  expect_usage_error({"data", "stat", "x"},
                     "llmft: error: unknown command 'data stat'; did you mean 'data stats'?");
  const auto r = test::run_llmft({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(r.err.starts_with("llmft: error: unknown command 'frobnicate'; the commands are: "
                                "chat, data, dedup, "))
      << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;  // one line
}

TEST(CliUsage, UnknownOptionsSuggestTheClosest) {
  expect_usage_error({"finetune", "--epoch", "1"},
                     "llmft: error: unknown option --epoch; did you mean --epochs?");
  // Named as misspelt, not reported as a missing --model.
  expect_usage_error({"generate", "--modle", "M", "hi"},
                     "llmft: error: unknown option --modle; did you mean --model?");
  expect_usage_error({"generate", "--max-new=5", "--model", "M", "hi"},
                     "llmft: error: unknown option --max-new; did you mean --max-new-tokens?");
  expect_usage_error({"data", "stats", "x.json", "--bogus"},
                     "llmft: error: unknown option --bogus; see 'llmft help data stats'");
  // A value that looks like an option belongs to the option before it.
  const auto r = test::run_llmft({"tokenize", "--file", "--no-such-file"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("--no-such-file"), std::string::npos) << r.err;
}

TEST(CliUsage, MissingArgumentsNameTheCommand) {
  expect_usage_error({"generate", "hi"},
                     "llmft: error: 'generate' needs --model; see 'llmft help generate'");
  expect_usage_error({"data", "stats"},
                     "llmft: error: 'data stats' needs FILE; see 'llmft help data stats'");
  expect_usage_error({"data"}, "llmft: error: 'data' needs a command: stats");
  expect_usage_error({"finetune", "--epochs"}, "llmft: error: --epochs needs a value");
  expect_usage_error({"finetune", "--epochs", "two"},
                     "llmft: error: --epochs: 'two' is not a valid value");
  expect_usage_error({"generate", "--model", "M", "one", "two"},
                     "llmft: error: unexpected argument 'two' for 'generate'; see 'llmft help "
                     "generate'");
  const auto r = test::run_llmft({});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(r.err.starts_with("llmft: error: no command given; the commands are: chat, "))
      << r.err;
}

TEST(CliUsage, HelpCommandPrintsWhatHelpPrints) {
  const auto top = test::run_llmft({"--help"});
  ASSERT_EQ(top.exit_code, 0);
  EXPECT_NE(top.out.find("finetune"), std::string::npos);
  auto r = test::run_llmft({"help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, top.out);
  const auto gen = test::run_llmft({"generate", "--help"});
  ASSERT_EQ(gen.exit_code, 0);
  EXPECT_NE(gen.out.find("--max-new-tokens"), std::string::npos);
  r = test::run_llmft({"help", "generate"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, gen.out);
  const auto stats = test::run_llmft({"data", "stats", "--help"});
  ASSERT_EQ(stats.exit_code, 0);
  EXPECT_NE(stats.out.find("--batch-size"), std::string::npos);
  r = test::run_llmft({"help", "data", "stats"});
  EXPECT_EQ(r.out, stats.out);
  // Help wins over a mistake on the same line.
  r = test::run_llmft({"generate", "--modle", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, gen.out);
  r = test::run_llmft({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(r.out.starts_with("llmft ")) << r.out;
  expect_usage_error({"help", "genrate"},
                     "llmft: error: unknown command 'genrate'; did you mean 'generate'?");
}

TEST(CliUsage, TokenizeTakesTheTextAsAnArgument) {
  auto r = test::run_llmft({"tokenize", "Hello world"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[15496,995]\n");
  r = test::run_llmft({"tokenize"}, "Hello world");  // stdin as before
  EXPECT_EQ(r.out, "[15496,995]\n");
  r = test::run_llmft({"tokenize", "--decode", "[15496,995]"});
  EXPECT_EQ(r.out, "Hello world");
  r = test::run_llmft({"tokenize", "Hello", "--file", "x.txt"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(first_line(r.err),
            "llmft: error: give the text as an argument or with --file/--jsonl, not both");
}
