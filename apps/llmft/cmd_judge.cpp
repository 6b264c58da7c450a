// `llmft judge`: scores model answers 0-100 with a judge LLM (Ollama or OpenAI-compatible) and
// prints the number scored, average, min/median/max and a histogram. Work is in src/llmft/judge.
#include <fmt/format.h>

#include <memory>

#include "command.h"
#include "judge_cli.h"
#include "llmft/core/error.h"
#include "llmft/judge/judge.h"

namespace llmft::app {
namespace {

struct Cli {
  JudgeOptions o;
  JudgeServerCli server;
  std::vector<std::string> compare;
};

int run(Cli& c) {
  JudgeOptions& o = c.o;
  resolve_judge_server_options(o, c.server);
  if (!c.compare.empty()) {
    if (!o.input.empty() || !o.output.empty()) {
      throw UsageError("--compare A B cannot be combined with --input or --output",
                       "each file is scored into <name>-scored.json next to it");
    }
    const CompareSummary s = judge_compare(o, c.compare[0], c.compare[1]);
    fmt::print("{}", format_compare(s));
    std::fflush(stdout);
    if (s.a.failed + s.b.failed > 0) {
      throw Error(fmt::format("{} entries could not be scored", s.a.failed + s.b.failed),
                  "rerun the same command to retry them");
    }
    return 0;
  }
  if (o.input.empty()) {
    throw UsageError("llmft judge needs --input FILE or --compare A B",
                     "e.g. llmft judge --input test-responses.json");
  }
  const JudgeSummary s = judge_file(o);
  fmt::print("{}", format_summary(s));
  std::fflush(stdout);
  if (s.failed > 0) {
    throw Error(fmt::format("{} of {} entries could not be scored (see the lines above)", s.failed,
                            s.total),
                "rerun the same command to retry them; scored entries are kept");
  }
  if (s.stats.count == 0 && s.total > 0) {
    throw Error(fmt::format("no entry of {} got a score", o.input.string()),
                "the judge's replies were not integers 0-100 (see the lines above)");
  }
  return 0;
}

Runner setup(CLI::App& app) {
  auto c = std::make_shared<Cli>();
  JudgeOptions& o = c->o;
  app.add_option("--input,-i", o.input,
                 "JSON array of entries with instruction, input, output and the answer field");
  app.add_option("--output,-o", o.output,
                 "Scored copy of the input (resumable); default <input>-scored.json");
  app.add_option("--compare", c->compare,
                 "Score two answer files for the same entries and count wins (A B)")
      ->expected(2);
  app.add_option("--response-field", o.response_field, "Field holding the answer to score")
      ->capture_default_str();
  app.add_flag("--lenient", o.lenient,
               "Read a reply that is not just an integer (\"Score: 35/100\") as the first whole "
               "number 0-100 in it; such scores are counted in the summary and marked "
               "\"judge_parse\": \"lenient\" in the output")
      ->capture_default_str();
  add_judge_server_options(app, o, c->server,
                           "Score everything again instead of keeping an existing output file's "
                           "scores");
  return [c] { return run(*c); };
}

const Registration reg{"judge", "Score model answers 0-100 with a judge LLM (Ollama / OpenAI API)",
                       setup};

}  // namespace
}  // namespace llmft::app
