// Usage errors as one line each, with a suggestion where one is close: llmft checks the command
// line against its commands and options before CLI11 parses it (so a misspelt option is named as
// such, not reported as a missing one), and rewords CLI11's own messages for the rest.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace llmft::app {

// The candidate closest to `typed` (edit distance with transpositions, or a unique prefix), or ""
// when none is close enough to be a likely typo.
std::string closest(std::string_view typed, const std::vector<std::string>& candidates);

// `llmft help [command [subcommand]]` -> the same arguments with --help, as `--help` prints.
std::vector<std::string> expand_help(std::vector<std::string> args);

// What the command line names: the commands walked ("data", "stats") and the app they end at.
struct CommandPath {
  std::vector<std::string> names;
  const CLI::App* app = nullptr;
  std::string display() const;  // "data stats"; "" at the top
};

// Walks args (without the program name) through cli's commands and options. Returns the message
// of the first usage error found (an unknown command or option, a missing command), or "" when
// CLI11 should parse. A --help or -h before any `--` defers to CLI11 (help wins over mistakes).
std::string check_command_line(const CLI::App& cli, const std::vector<std::string>& args,
                               CommandPath& path);

// CLI11's message for a parse error, reworded as ours (without the "llmft: error: " prefix).
std::string describe_parse_error(const CLI::ParseError& e, const CommandPath& path);

}  // namespace llmft::app
