// `llmft synth`: writes an instruction dataset with a local LLM (Magpie-style, through Ollama or
// an OpenAI-compatible server), resumably. Work is in src/llmft/synth.
#include <fmt/format.h>

#include <memory>

#include "command.h"
#include "judge_cli.h"
#include "llmft/core/error.h"
#include "llmft/synth/synth.h"

namespace llmft::app {
namespace {

struct Cli {
  SynthOptions o;
  JudgeServerCli server;
};

int run(Cli& c) {
  SynthOptions& o = c.o;
  resolve_judge_server_options(o.server, c.server);
  o.resume = o.server.resume;
  const SynthSummary s = synth_dataset(o);
  fmt::print("{}", format_synth_summary(s));
  std::fflush(stdout);
  if (s.written < s.wanted) {
    throw Error(fmt::format("only {} of {} entries after {} attempts", s.written, s.wanted, s.attempts),
                "rerun the same command to continue (raise --max-attempts when many attempts are "
                "left out)");
  }
  return 0;
}

Runner setup(CLI::App& app) {
  auto c = std::make_shared<Cli>();
  SynthOptions& o = c->o;
  o.server.concurrency = 1;
  app.add_option("--count,-n", o.count, "Entries wanted in the output")->required();
  app.add_option("--output,-o", o.output,
                 "Alpaca-format JSON array to write (resumable; each entry keeps its synth_seed)")
      ->required();
  app.add_option("--header", o.header,
                 "Raw prompt that makes the model write an instruction: its chat template's "
                 "user-turn header (default: Llama 3's)")
      ->capture_default_str();
  app.add_option("--temperature", o.temperature, "Sampling temperature of both requests")
      ->capture_default_str();
  app.add_option("--top-p", o.top_p, "Nucleus sampling of both requests")->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the first attempt; attempt k uses seed + k")
      ->capture_default_str();
  app.add_option("--max-instruction-tokens", o.max_instruction_tokens,
                 "Token limit of the instruction request (its first non-empty line is kept)")
      ->capture_default_str();
  app.add_option("--max-attempts", o.max_attempts,
                 "Stop after this many attempts this run (0 = 2 * count + 10)")
      ->capture_default_str();
  app.add_flag("--dedup", o.dedup,
               "Drop generated entries whose instruction is a near-duplicate of an earlier one "
               "(TF-IDF cosine as llmft dedup) and generate more")
      ->capture_default_str();
  app.add_option("--dedup-against", o.dedup_against,
                 "Also compare with these datasets' instructions (implies --dedup; repeatable)");
  app.add_option("--dedup-threshold", o.dedup_threshold, "Similarity at which an entry is dropped")
      ->capture_default_str();
  // The server options are judge's (judge_cli.h); these help texts say what synth sends.
  add_judge_server_options(app, o.server, c->server,
                           "Start again instead of keeping the entries an existing output file holds");
  app.get_option("--url")->description("Server root URL");
  app.get_option("--model")->description("Model name");
  app.get_option("--api")->description(
      "Server API: ollama (/api/generate raw, then /api/chat) or openai (/v1/completions, then "
      "/v1/chat/completions)");
  app.get_option("--concurrency")->description("Attempts in flight at once");
  return [c] { return run(*c); };
}

const Registration reg{"synth",
                       "Generate instruction data with a local LLM (Magpie-style, Ollama / OpenAI API)",
                       setup};

}  // namespace
}  // namespace llmft::app
