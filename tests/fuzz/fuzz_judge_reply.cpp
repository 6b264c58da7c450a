// The judge client's reply parsers (Ollama NDJSON, OpenAI SSE; chat and completion; streamed and
// not) and Retry-After, on arbitrary bytes. A bad reply is an EntryError (an llmft::Error).
#include <string>

#include "fuzz_util.h"
#include "llmft/core/error.h"
#include "llmft/judge/client.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body = llmft::fuzz::as_text(data, size);
  using Parser = std::string (*)(std::string_view, bool);
  for (Parser p : {&llmft::judge::parse_ollama_reply, &llmft::judge::parse_openai_reply,
                   &llmft::judge::parse_ollama_generate_reply,
                   &llmft::judge::parse_openai_completion_reply}) {
    for (bool streamed : {false, true}) {
      try {
        p(body, streamed);
      } catch (const llmft::Error&) {
      }
    }
  }
  llmft::judge::parse_retry_after(std::string(body.substr(0, 64)));
  return 0;
}
