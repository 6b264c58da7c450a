// llmft: instruction-finetune GPT-2 models. Parses the command line, runs one subcommand,
// and turns exceptions into one line on stderr (usage errors exit 2, others 1). `llmft help
// [command]` prints what `--help` prints.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <exception>

#include "command.h"
#include "llmft/core/error.h"
#include "llmft/core/progress.h"
#include "llmft/dist/dist.h"
#include "usage.h"

namespace llmft::app {
std::vector<Command>& commands() {
  static std::vector<Command> list;
  return list;
}
}  // namespace llmft::app

namespace {
// A rank of a data-parallel job that fails (exit 1) ends the job, since the others would wait for
// it; usage errors and stops (2, 128 + signal) happen on every rank alike. Alone, the process just
// returns its exit code.
int finish(int code) {
  if (code == 1 && llmft::dist::size() > 1) llmft::dist::abort(code);
  return code;
}
int run(int argc, char** argv);
}  // namespace

int main(int argc, char** argv) {
  try {
    llmft::dist::init(&argc, &argv);
    if (!llmft::dist::is_root()) {  // rank 0 alone prints (errors still go to stderr)
      if (!std::freopen("/dev/null", "w", stdout)) return 1;
      llmft::ProgressBar::silence();
    }
  } catch (const llmft::Error& e) {
    std::fprintf(stderr, "llmft: error: %s\nhint: %s\n", e.what(), e.hint().c_str());
    return 1;
  }
  return finish(run(argc, argv));
}

namespace {
int run(int argc, char** argv) {
  using namespace llmft;
  CLI::App cli{
      "llmft: finetune GPT-2 models to follow instructions, then generate answers and judge them.",
      "llmft"};
  cli.set_version_flag("--version", std::string("llmft ") + LLMFT_VERSION);
  cli.require_subcommand(1);
  cli.get_formatter()->column_width(36);
  auto& cmds = app::commands();
  std::sort(cmds.begin(), cmds.end(),
            [](const app::Command& a, const app::Command& b) { return a.name < b.name; });
  std::vector<std::pair<CLI::App*, app::Runner>> runners;
  for (auto& c : cmds) {
    CLI::App* sub = cli.add_subcommand(c.name, c.help);
    runners.emplace_back(sub, c.setup(*sub));
  }
  try {
    const std::vector<std::string> args =
        app::expand_help(std::vector<std::string>(argv + std::min(argc, 1), argv + argc));
    app::CommandPath path;
    if (const std::string bad = app::check_command_line(cli, args, path); !bad.empty()) {
      std::fprintf(stderr, "llmft: error: %s\n", bad.c_str());
      return 2;
    }
    try {
      cli.parse(std::vector<std::string>(args.rbegin(), args.rend()));  // CLI11 takes them reversed
    } catch (const CLI::Success& e) {
      return cli.exit(e);  // --help, --version
    } catch (const CLI::ParseError& e) {
      // Every usage error exits 2, whatever CLI11's own code.
      std::fprintf(stderr, "llmft: error: %s\n", app::describe_parse_error(e, path).c_str());
      return 2;
    }
    for (auto& [sub, run] : runners) {
      if (sub->parsed()) return run();
    }
    return 2;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "llmft: error: %s\n", e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "llmft: error: %s\n", e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "llmft: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llmft: internal error: %s\n", e.what());
    return 1;
  }
}
}  // namespace
