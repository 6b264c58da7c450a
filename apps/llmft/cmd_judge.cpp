// `llmft judge`: scores model answers 0-100 with a judge LLM (Ollama or OpenAI-compatible) and
// prints the number scored, average, min/median/max and a histogram. Work is in src/llmft/judge.
#include <fmt/format.h>

#include <memory>

#include "command.h"
#include "llmft/core/error.h"
#include "llmft/judge/judge.h"

namespace llmft::app {
namespace {

struct Cli {
  JudgeOptions o;
  std::string api = "ollama";
  std::string api_key_env;
  std::vector<std::string> compare;
  bool no_resume = false;
};

int run(Cli& c) {
  JudgeOptions& o = c.o;
  if (c.api == "ollama") {
    o.api = JudgeApi::kOllama;
  } else if (c.api == "openai") {
    o.api = JudgeApi::kOpenAi;
  } else {
    throw UsageError(fmt::format("--api {}: expected ollama or openai", c.api));
  }
  if (!o.url.starts_with("http://") && !o.url.starts_with("https://")) {
    throw UsageError(fmt::format("--url {}: expected an http:// or https:// URL", o.url),
                     "e.g. --url http://localhost:11434");
  }
  if (!c.api_key_env.empty()) {
    o.api_key_env = c.api_key_env;
    o.api_key_env_required = true;
  }
  o.resume = !c.no_resume;
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
  app.add_option("--url", o.url, "Judge server root URL")->capture_default_str();
  app.add_option("--model,-m", o.model, "Judge model name")->capture_default_str();
  app.add_option("--api", c->api, "Server API: ollama (/api/chat) or openai (/v1/chat/completions)")
      ->check(CLI::IsMember({"ollama", "openai"}))
      ->capture_default_str();
  app.add_flag("--stream,!--no-stream", o.stream, "Ask for a streamed reply")->capture_default_str();
  app.add_option("--response-field", o.response_field, "Field holding the answer to score")
      ->capture_default_str();
  app.add_option("--api-key-env", c->api_key_env,
                 "Environment variable with the API key for --api openai (sent as Bearer); "
                 "default: OPENAI_API_KEY when set");
  app.add_option("--connect-timeout", o.connect_timeout_s, "Connect timeout in seconds")
      ->capture_default_str();
  app.add_option("--read-timeout", o.read_timeout_s,
                 "Give up on a request after this many seconds without data")
      ->capture_default_str();
  app.add_option("--max-retries", o.max_retries,
                 "Retries on connection errors, timeouts, HTTP 5xx and 429")
      ->capture_default_str();
  app.add_option("--retry-base", o.retry_base_s,
                 "First retry delay in seconds, doubled each retry (Retry-After wins)")
      ->capture_default_str();
  app.add_option("--retry-max", o.retry_max_s, "Longest retry delay in seconds")
      ->capture_default_str();
  app.add_option("--concurrency,-j", o.concurrency, "Requests in flight at once")
      ->capture_default_str();
  app.add_flag("--no-resume", c->no_resume,
               "Score everything again instead of keeping an existing output file's scores")
      ->capture_default_str();
  return [c] { return run(*c); };
}

const Registration reg{"judge", "Score model answers 0-100 with a judge LLM (Ollama / OpenAI API)",
                       setup};

}  // namespace
}  // namespace llmft::app
