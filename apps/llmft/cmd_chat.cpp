// `llmft chat`: a multi-turn conversation in the terminal or through a pipe. Each line is a user
// message, answered with the earlier turns as context (data/conversation.h: the template's
// multi-turn prompt, oldest turns dropped to fit the context), the answer streamed to stdout.
// Lines starting with '/' are commands, never sent to the model (/help lists them; "//x" sends
// "/x"); their replies go to stderr, so stdout holds only answers, piped or not.
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "command.h"
#include "gen_common.h"
#include "llmft/core/error.h"
#include "llmft/data/conversation.h"
#include "llmft/data/template.h"
#include "llmft/generate/answer.h"
#include "llmft/generate/stream.h"
#include "llmft/io/model_loader.h"
#include "llmft/tokenizer/bpe.h"
#include "usage.h"

namespace llmft::app {
namespace {

constexpr const char* kHelp =
    "/help                 this list\n"
    "/reset                forget the conversation so far (also /clear)\n"
    "/set NAME VALUE       change a setting: temperature, top_p, top_k, min_p, repeat_penalty,\n"
    "                      max_new_tokens, seed (e.g. /set temperature 0.7)\n"
    "/show                 the settings and how many turns are remembered\n"
    "/bye                  end the chat (also /quit, /exit, Ctrl-D)\n"
    "Any other line is a message; the earlier turns go with it as long as they fit in the\n"
    "model's context (the oldest are dropped first). Start a message with // to send a '/'.\n";

void print(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

void say(const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); }

struct Chat {
  GenerateOptions g;
  std::vector<ChatTurn> history;  // finished turns, oldest first
};

std::string settings(const Chat& c) {
  const SamplerOptions& s = c.g.sampler;
  return fmt::format(
      "temperature {:g}, top_p {:g}, top_k {}, min_p {:g}, repeat_penalty {:g}, max_new_tokens {}, "
      "seed {}; {} turn{} remembered",
      s.temperature, s.top_p, s.top_k, s.min_p, s.repeat_penalty, c.g.max_new_tokens, s.seed,
      c.history.size(), c.history.size() == 1 ? "" : "s");
}

// "/set NAME VALUE": the new value is checked as the command line's would be; a bad one is
// reported and the old value kept.
void set_option(Chat& c, const std::string& args) {
  std::istringstream in(args);
  std::string name, value, extra;
  in >> name >> value >> extra;
  std::replace(name.begin(), name.end(), '-', '_');
  const std::vector<std::string> names = {"temperature",    "top_p",          "top_k", "min_p",
                                          "repeat_penalty", "max_new_tokens", "seed"};
  if (name.empty() || value.empty() || !extra.empty()) {
    say("usage: /set NAME VALUE, NAME one of temperature, top_p, top_k, min_p, repeat_penalty, "
        "max_new_tokens, seed");
    return;
  }
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    const std::string near = closest(name, names);
    say(fmt::format("unknown setting '{}'{}", name,
                    near.empty() ? "; /set lists them" : fmt::format("; did you mean '{}'?", near)));
    return;
  }
  GenerateOptions g = c.g;
  try {
    size_t used = 0;
    if (name == "temperature") g.sampler.temperature = std::stof(value, &used);
    if (name == "top_p") g.sampler.top_p = std::stof(value, &used);
    if (name == "min_p") g.sampler.min_p = std::stof(value, &used);
    if (name == "repeat_penalty") g.sampler.repeat_penalty = std::stof(value, &used);
    if (name == "top_k") g.sampler.top_k = std::stoi(value, &used);
    if (name == "max_new_tokens") g.max_new_tokens = std::stoll(value, &used);
    if (name == "seed") g.sampler.seed = std::stoull(value, &used);
    if (used != value.size()) throw std::invalid_argument(value);
  } catch (const std::logic_error&) {  // invalid_argument, out_of_range
    say(fmt::format("/set {}: '{}' is not a number", name, value));
    return;
  }
  try {
    g.validate();
  } catch (const UsageError& e) {
    say(fmt::format("/set {}: {}", name, e.what()));
    return;
  }
  c.g = g;
  say(fmt::format("{} = {}", name, value));
}

// Runs a '/' command; returns false when the chat should end.
bool command(Chat& c, const std::string& line) {
  const size_t sp = line.find_first_of(" \t");
  const std::string cmd = line.substr(0, sp);
  const std::string args = sp == std::string::npos ? "" : line.substr(sp + 1);
  if (cmd == "/bye" || cmd == "/quit" || cmd == "/exit") return false;
  if (cmd == "/help" || cmd == "/?") {
    std::fputs(kHelp, stderr);
  } else if (cmd == "/reset" || cmd == "/clear") {
    c.history.clear();
    say("conversation cleared");
  } else if (cmd == "/set") {
    set_option(c, args);
  } else if (cmd == "/show") {
    say(settings(c));
  } else {
    const std::string near =
        closest(cmd, {"/help", "/reset", "/clear", "/set", "/show", "/bye", "/quit", "/exit"});
    say(fmt::format("unknown command {}{}; /help lists them", cmd,
                    near.empty() ? "" : fmt::format(" (did you mean {}?)", near)));
  }
  return true;
}

int run(GenerationCliOptions& o) {
  const PromptTemplate tmpl = parse_template(o.prompt_template);
  Chat c;
  c.g = to_generate_options(o);
  c.g.batch_size = 1;
  LoadedModel m = load_model(o.model, model_load_options(o));
  Gpt2& model = *m.model;
  const BpeTokenizer& tok = *m.tokenizer;
  const int64_t maxT = model.config().maxT;
  const bool tty = isatty(STDIN_FILENO) != 0;
  if (tty)
    std::fprintf(stderr, "llmft chat: %s. Type a message; /help for commands, /bye or Ctrl-D ends.\n",
                 m.description.c_str());
  std::string line;
  uint64_t turn = 0;
  for (;;) {
    if (tty) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (line.starts_with("//")) {
      line.erase(0, 1);
    } else if (line.starts_with("/")) {
      if (!command(c, line)) break;
      continue;
    }
    // The conversation, cropped so the answer has room: max_new_tokens left in the context.
    std::vector<ChatTurn> turns = c.history;
    turns.push_back({line, {}});
    const int64_t budget = std::max<int64_t>(1, maxT - c.g.max_new_tokens);
    const FittedConversation f = fit_conversation(tmpl, tok, "", turns, budget);
    auto ids = tok.encode(f.prompt, SpecialTokens::kAllow);
    warn_if_over_context(maxT, static_cast<int64_t>(ids.size()), c.g.max_new_tokens);
    AnswerStream stream(tok, ids, f.prompt, response_marker(tmpl), o.stop);
    GenerateOptions gt = c.g;
    gt.sampler.seed = c.g.sampler.seed + turn++;  // a new draw each turn, still reproducible
    gt.on_token = [&](size_t, int32_t t) { print(stream.push(t)); };
    gt.stop_now = [&](size_t) { return stream.stopped(); };
    GenerateStats st;
    generate(model, {ids}, gt, &st);
    print(stream.finish() + "\n");
    // Turns dropped to fit never come back (the conversation only grows), so forget them.
    c.history.erase(c.history.begin(), c.history.begin() + static_cast<std::ptrdiff_t>(f.dropped));
    c.history.push_back({line, stream.text()});
    if (o.verbose) {
      say(fmt::format("turn {}: {} earlier turn{} in the prompt{}", turn, turns.size() - 1 - f.dropped,
                      turns.size() - 1 - f.dropped == 1 ? "" : "s",
                      f.dropped ? fmt::format(" ({} oldest dropped to fit the context)", f.dropped)
                                : ""));
      print_timings(st);
    }
  }
  return 0;
}

Runner setup(CLI::App& app) {
  auto o = std::make_shared<GenerationCliOptions>();
  add_generation_options(app, *o);
  return [o] { return run(*o); };
}

const Registration reg{"chat",
                       "Chat with a model in the terminal or through a pipe (multi-turn; /help "
                       "lists the commands)",
                       setup};

}  // namespace
}  // namespace llmft::app
