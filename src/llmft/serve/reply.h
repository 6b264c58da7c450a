// The reply side of both APIs (../docs/serve.md, facts from Ollama's api/types.go and openai.go):
// streamed pieces as NDJSON lines (Ollama) or server-sent events ending in "data: [DONE]"
// (OpenAI), or one JSON object. Every string goes out as valid UTF-8.
#pragma once

#include <cstdint>
#include <string>

#include "llmft/serve/api.h"

namespace llmft::serve {

// What a finished generation reports.
struct GenSummary {
  std::string done_reason = "stop";  // stop, length (Ollama), also OpenAI's finish_reason
  int64_t prompt_tokens = 0, new_tokens = 0;
  // Nanoseconds: arrival to end, queue + prompt until the first token, first token to end.
  int64_t total_ns = 0, prompt_ns = 0, eval_ns = 0;
};

class ReplyWriter {
 public:
  // id: a number unique in this server's life (chatcmpl-<id>, cmpl-<id>).
  ReplyWriter(const GenRequest& req, std::string model_name, uint64_t id);
  const char* content_type() const;
  // Streamed: the text to send first (OpenAI chat: the role chunk), then per piece, then at the
  // end (the final line / the finish chunk, usage and [DONE]); error(): a last line or event
  // carrying {"error": ...} for a failure after the reply began.
  std::string begin() const;
  std::string piece(const std::string& text) const;
  std::string end(const GenSummary& s) const;
  std::string error(const std::string& message) const;
  // Not streamed: the one JSON object for the whole text.
  std::string whole(const std::string& text, const GenSummary& s) const;

 private:
  std::string ollama_object(const std::string& text, const GenSummary* s) const;
  std::string openai_object(const std::string* text, const GenSummary* s, bool chunk) const;
  Route route_;
  bool include_usage_;
  std::string model_, id_;
  int64_t created_;  // seconds since the epoch
};

// {"error": message} (Ollama), {"error": {"message", "type", "code"}} (OpenAI routes).
std::string error_body(const std::string& message, int status, bool openai);

}  // namespace llmft::serve
