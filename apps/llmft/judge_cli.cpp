// The shared judge server options; see judge_cli.h.
#include "judge_cli.h"

#include <fmt/format.h>

#include "llmft/core/error.h"

namespace llmft::app {

void add_judge_server_options(CLI::App& app, JudgeOptions& o, JudgeServerCli& c,
                              const std::string& resume_help) {
  app.add_option("--url", o.url, "Judge server root URL")->capture_default_str();
  app.add_option("--model,-m", o.model, "Judge model name")->capture_default_str();
  app.add_option("--api", c.api, "Server API: ollama (/api/chat) or openai (/v1/chat/completions)")
      ->check(CLI::IsMember({"ollama", "openai"}))
      ->capture_default_str();
  app.add_flag("--stream,!--no-stream", o.stream, "Ask for a streamed reply")->capture_default_str();
  app.add_option("--api-key-env", c.api_key_env,
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
  app.add_option("--request-timeout", o.request_timeout_s,
                 "Give up on a request whose whole reply takes longer than this many seconds "
                 "(a server trickling bytes)")
      ->capture_default_str();
  app.add_option("--concurrency,-j", o.concurrency, "Requests in flight at once")
      ->capture_default_str();
  app.add_option("--max-failures", o.max_failures_in_a_row,
                 "Stop after this many entries in a row fail (each after its retries), keeping "
                 "what was done so a rerun resumes (0 = never stop)")
      ->capture_default_str();
  app.add_flag("--no-resume", c.no_resume, resume_help)->capture_default_str();
}

void resolve_judge_server_options(JudgeOptions& o, const JudgeServerCli& c) {
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
}

}  // namespace llmft::app
