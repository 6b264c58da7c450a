// `llmft serve`'s request parsing for its four routes, on arbitrary bytes: a bad request is an
// HttpError (4xx), never a crash or another exception.
#include "fuzz_util.h"
#include "llmft/core/error.h"
#include "llmft/serve/api.h"
#include "llmft/tokenizer/bpe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const llmft::BpeTokenizer tok = llmft::BpeTokenizer::load_bundled();
  static const llmft::serve::ServedModel model = [] {
    llmft::serve::ServedModel m;
    m.name = "m";
    m.tokenizer = &tok;
    m.config.V = 50257, m.config.maxT = 64, m.config.C = 8, m.config.L = 1, m.config.NH = 2;
    return m;
  }();
  const llmft::serve::Limits limits{48, 16};
  using llmft::serve::Route;
  for (Route r : {Route::kOllamaGenerate, Route::kOllamaChat, Route::kOpenAiChat,
                  Route::kOpenAiCompletion}) {
    try {
      llmft::serve::parse_request(r, llmft::fuzz::as_text(data, size), model, limits, 1);
    } catch (const llmft::serve::HttpError&) {
    }
  }
  return 0;
}
