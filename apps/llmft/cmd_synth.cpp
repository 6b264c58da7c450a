// `llmft synth`: writes an instruction dataset with a local LLM (Magpie-style, through Ollama or
// an OpenAI-compatible server), resumably. Work is in src/llmft/synth.
#include <fmt/format.h>

#include <memory>

#include "command.h"
#include "llmft/core/error.h"
#include "llmft/synth/synth.h"

namespace llmft::app {
namespace {

struct Cli {
  SynthOptions o;
  std::string api = "ollama";
  std::string api_key_env;
  bool no_resume = false;
};

int run(Cli& c) {
  SynthOptions& o = c.o;
  o.server.api = c.api == "openai" ? JudgeApi::kOpenAi : JudgeApi::kOllama;
  if (!o.server.url.starts_with("http://") && !o.server.url.starts_with("https://")) {
    throw UsageError(fmt::format("--url {}: expected an http:// or https:// URL", o.server.url),
                     "e.g. --url http://localhost:11434");
  }
  if (!c.api_key_env.empty()) {
    o.server.api_key_env = c.api_key_env;
    o.server.api_key_env_required = true;
  }
  o.resume = !c.no_resume;
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
  app.add_option("--url", o.server.url, "Server root URL")->capture_default_str();
  app.add_option("--model,-m", o.server.model, "Model name")->capture_default_str();
  app.add_option("--api", c->api,
                 "Server API: ollama (/api/generate raw, then /api/chat) or openai "
                 "(/v1/completions, then /v1/chat/completions)")
      ->check(CLI::IsMember({"ollama", "openai"}))
      ->capture_default_str();
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
  app.add_flag("--stream,!--no-stream", o.server.stream, "Ask for streamed replies")
      ->capture_default_str();
  app.add_option("--api-key-env", c->api_key_env,
                 "Environment variable with the API key for --api openai (sent as Bearer); "
                 "default: OPENAI_API_KEY when set");
  app.add_option("--connect-timeout", o.server.connect_timeout_s, "Connect timeout in seconds")
      ->capture_default_str();
  app.add_option("--read-timeout", o.server.read_timeout_s,
                 "Give up on a request after this many seconds without data")
      ->capture_default_str();
  app.add_option("--max-retries", o.server.max_retries,
                 "Retries on connection errors, timeouts, HTTP 5xx and 429")
      ->capture_default_str();
  app.add_option("--retry-base", o.server.retry_base_s,
                 "First retry delay in seconds, doubled each retry (Retry-After wins)")
      ->capture_default_str();
  app.add_option("--retry-max", o.server.retry_max_s, "Longest retry delay in seconds")
      ->capture_default_str();
  app.add_option("--concurrency,-j", o.server.concurrency, "Attempts in flight at once")
      ->capture_default_str();
  app.add_flag("--no-resume", c->no_resume,
               "Start again instead of keeping the entries an existing output file holds")
      ->capture_default_str();
  return [c] { return run(*c); };
}

const Registration reg{"synth",
                       "Generate instruction data with a local LLM (Magpie-style, Ollama / OpenAI API)",
                       setup};

}  // namespace
}  // namespace llmft::app
