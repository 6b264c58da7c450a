// `llmft chat`: an interactive loop. Each line read is an instruction, formatted with the template
// and answered on its own (no history), the answer streamed as tokens arrive. /quit or EOF ends.
// Works with stdin not a terminal (tests drive it through a pipe).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "command.h"
#include "gen_common.h"
#include "llmft/core/error.h"
#include "llmft/data/template.h"
#include "llmft/generate/answer.h"
#include "llmft/generate/stream.h"
#include "llmft/io/model_loader.h"

namespace llmft::app {
namespace {

void print(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

int run(const GenerationCliOptions& o) {
  const PromptTemplate tmpl = parse_template(o.prompt_template);
  GenerateOptions g = to_generate_options(o);
  g.batch_size = 1;
  LoadedModel m = load_model(o.model, model_load_options(o));
  Gpt2& model = *m.model;
  const bool tty = isatty(STDIN_FILENO) != 0;
  if (tty) std::fprintf(stderr, "llmft chat: %s. Type an instruction; /quit or Ctrl-D ends.\n",
                        m.description.c_str());
  std::string line;
  uint64_t turn = 0;
  for (;;) {
    if (tty) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "/quit" || line == "/exit") break;
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string prompt = format_prompt(tmpl, line, "");
    auto ids = m.tokenizer->encode(prompt, SpecialTokens::kAllow);
    ResponseStreamer streamer(*m.tokenizer, ids, prompt, response_marker(tmpl));
    GenerateOptions gt = g;
    gt.sampler.seed = g.sampler.seed + turn++;  // a new draw each turn, still reproducible
    gt.on_token = [&](size_t, int32_t t) { print(streamer.push(t)); };
    generate(model, {ids}, gt);
    print(streamer.finish() + "\n");
  }
  return 0;
}

Runner setup(CLI::App& app) {
  auto o = std::make_shared<GenerationCliOptions>();
  add_generation_options(app, *o);
  return [o] { return run(*o); };
}

const Registration reg{"chat", "Chat with a model in the terminal (one instruction per line)",
                       setup};

}  // namespace
}  // namespace llmft::app
