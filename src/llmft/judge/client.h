// HTTP client for one LLM server (the judge's, synth's): Ollama's /api/chat and /api/generate or
// an OpenAI-compatible /v1/chat/completions and /v1/completions, streamed or not, with retries,
// backoff and Retry-After.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "llmft/core/error.h"
#include "llmft/judge/judge.h"

namespace llmft::judge {

// This entry could not be scored (bad reply, HTTP 4xx, 5xx after all retries); others may be.
class EntryError : public Error {
 public:
  using Error::Error;
};
// The server is unreachable (connection refused or timed out after all retries): stop the run.
class ServerLostError : public Error {
 public:
  using Error::Error;
};

// The JSON request body for one judge prompt (exact key order of SPEC §8).
std::string chat_request_body(const JudgeOptions& opts, const std::string& prompt);

// Assemble the reply text from a response body. Throw EntryError on invalid JSON, an "error"
// object, or a stream that ends before its end marker ("done": true / data: [DONE]).
// Chat: Ollama's /api/chat (message.content), OpenAI's /v1/chat/completions (choices[0].message
// or .delta content). Completion of a raw prompt: Ollama's /api/generate ("response"), OpenAI's
// /v1/completions (choices[0].text).
std::string parse_ollama_reply(std::string_view body, bool streamed);
std::string parse_openai_reply(std::string_view body, bool streamed);
std::string parse_ollama_generate_reply(std::string_view body, bool streamed);
std::string parse_openai_completion_reply(std::string_view body, bool streamed);

// Seconds from a Retry-After header (delta-seconds or an HTTP date); negative when absent/bad.
double parse_retry_after(const std::string& value);

class JudgeClient {
 public:
  // Reads the API key from the environment (UsageError when required and unset). `role` names the
  // server in messages ("judge server": "cannot reach the Ollama judge server at ...").
  explicit JudgeClient(const JudgeOptions& opts, std::string role = "judge server");
  // See check_judge.
  void check(long connect_timeout_s, double read_timeout_s) const;
  // Sends one prompt and returns the judge's reply text. `note` gets retry lines; `requests`
  // counts attempts; `stop` (may be null) ends the waiting between retries early.
  std::string ask(const std::string& prompt, const std::function<void(const std::string&)>& note,
                  std::atomic<int64_t>& requests, const std::atomic<bool>* stop) const;
  // POSTs a JSON body to the server root + `path` ("/api/generate"), with the retries, backoff and
  // Retry-After handling of `ask`, and returns the body of the HTTP 200 reply. Throws EntryError
  // (HTTP 4xx, or 5xx / 429 after the last retry) or ServerLostError (unreachable).
  std::string post(const char* path, const std::string& body,
                   const std::function<void(const std::string&)>& note,
                   std::atomic<int64_t>& requests, const std::atomic<bool>* stop) const;
  const JudgeOptions& options() const { return opts_; }
  // Replaces the API key by "***" in text meant for the user.
  std::string redact(std::string text) const;
  const std::string& base_url() const { return base_; }

 private:
  std::vector<std::string> headers(bool json_body) const;
  JudgeOptions opts_;
  std::string base_, key_, role_;
};

}  // namespace llmft::judge
