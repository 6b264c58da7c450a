// Subcommand registry. Each apps/llmft/cmd_*.cpp registers itself with
//   static const llmft::app::Registration reg{"tokenize", "Encode text to GPT-2 token ids", setup};
// where setup(CLI::App&) adds the options and returns the function to run (exit code).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace llmft::app {

using Runner = std::function<int()>;
using Setup = std::function<Runner(CLI::App&)>;

struct Command {
  std::string name, help;
  Setup setup;
};

std::vector<Command>& commands();

struct Registration {
  Registration(std::string name, std::string help, Setup setup) {
    commands().push_back({std::move(name), std::move(help), std::move(setup)});
  }
};

}  // namespace llmft::app
