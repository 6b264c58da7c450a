// The request side of `llmft serve`'s two APIs (Ollama's /api/generate and /api/chat, OpenAI's
// /v1/chat/completions and /v1/completions; ../docs/serve.md): a JSON body becomes a validated
// GenRequest (prompt text and ids, sampling options, limits), or an HttpError with the status
// and one line saying what is wrong where. Replies are written by reply.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/data/template.h"
#include "llmft/generate/batcher.h"
#include "llmft/model/config.h"

namespace llmft {
class BpeTokenizer;
}

namespace llmft::serve {

// A request the server refuses: `status` is the HTTP code (4xx, or 503 when busy).
class HttpError : public Error {
 public:
  HttpError(int status, const std::string& what) : Error(what), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

enum class Route { kOllamaGenerate, kOllamaChat, kOpenAiChat, kOpenAiCompletion };

// The one model a server answers for.
struct ServedModel {
  std::string name;  // what requests must name (also accepted with ":latest")
  PromptTemplate prompt_template = PromptTemplate::kAlpaca;
  const BpeTokenizer* tokenizer = nullptr;
  Gpt2Config config;  // its shape (context = config.maxT)
  int64_t parameters = 0;
  std::string precision = "fp32";
  // True when `requested` names this model ("name", "name:latest").
  bool matches(std::string_view requested) const;
};

struct Limits {
  int64_t max_prompt_tokens = 1024;  // a prompt's tokens after the template
  int64_t max_new_tokens = 1024;     // num_predict / max_tokens at most (and the default)
};

struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
};

struct GenRequest {
  Route route = Route::kOllamaGenerate;
  std::string model;
  bool stream = true;
  bool include_usage = false;  // OpenAI stream_options.include_usage
  bool raw = false;            // a plain continuation: no template, the text after it as it is
  std::string prompt;          // the text the model continues
  std::string marker;          // removed from the answer (the template's response marker)
  std::vector<int32_t> ids;    // its tokens (empty: nothing to do, the reply is empty at once)
  SequenceOptions seq;         // max_new_tokens may be 0: the reply is empty at once
  std::vector<std::string> stop;
};

// Parses and checks a request body for `route`. Throws HttpError: 400 for malformed JSON, invalid
// UTF-8, wrong types, out-of-range or unsupported values and over-long prompts; 404 for another
// model's name. A request without a seed samples with `fresh_seed`.
GenRequest parse_request(Route route, std::string_view body, const ServedModel& model,
                         const Limits& limits, uint64_t fresh_seed);

// The prompt for a conversation (data/conversation.h, docs/serve.md): the system messages' text, then each earlier
// user/assistant turn as a training text of the template, then the last user message as the
// instruction, separated by blank lines. Oldest turns are dropped while the prompt has more than
// `budget` tokens. Throws HttpError(400) for an unknown role or a last message not from the user.
std::string chat_prompt(const ServedModel& model, const std::vector<ChatMessage>& messages,
                        int64_t budget);

}  // namespace llmft::serve
