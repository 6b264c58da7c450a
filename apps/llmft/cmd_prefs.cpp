// `llmft prefs`: preference data (chosen / rejected answers) for `llmft dpo` from a judge LLM's
// polite and impolite rewrites, as the reference builds it. Work is in src/llmft/judge/prefs.cpp.
#include <fmt/format.h>

#include <memory>

#include "command.h"
#include "judge_cli.h"
#include "llmft/core/error.h"
#include "llmft/judge/prefs.h"

namespace llmft::app {
namespace {

struct Cli {
  PrefsOptions p;
  JudgeServerCli server;
};

Runner setup(CLI::App& app) {
  auto c = std::make_shared<Cli>();
  JudgeOptions& o = c->p.judge;
  app.add_option("--data,-i", o.input,
                 "Alpaca-format dataset (.json array or .jsonl) whose outputs are rewritten")
      ->required();
  app.add_option("--output,-o", o.output,
                 "Preference file to write (resumable): the entries with chosen, rejected and "
                 "politeness added")
      ->required();
  app.add_option("--seed", c->p.seed,
                 "Seed of the per-entry polite/impolite choice (entry i's choice depends on the "
                 "seed and i only)")
      ->capture_default_str();
  add_judge_server_options(app, o, c->server,
                           "Rewrite every entry again instead of keeping an existing output "
                           "file's pairs");
  return [c] {
    resolve_judge_server_options(c->p.judge, c->server);
    const PrefsSummary s = build_preferences(c->p);
    fmt::print("{}", format_prefs_summary(s));
    std::fflush(stdout);
    if (s.failed > 0) {
      throw Error(fmt::format("{} of {} entries got no usable rewrite (see the lines above)",
                              s.failed, s.total),
                  "rerun the same command to retry them; finished pairs are kept");
    }
    return 0;
  };
}

const Registration reg{"prefs",
                       "Build DPO preference data: a judge LLM rewrites each answer more or less "
                       "politely",
                       setup};

}  // namespace
}  // namespace llmft::app
