// Streams an answer as tokens arrive (chat, serve): prints only text that the final
// extract_response() will keep, so the streamed text equals the final answer.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmft/generate/generate.h"

namespace llmft {

class BpeTokenizer;

class ResponseStreamer {
 public:
  // prompt_ids / prompt_text: what generation continues (as in extract_response). raw: the text
  // after the prompt as it is (a plain continuation: no marker removal, no trimming).
  ResponseStreamer(const BpeTokenizer& tok, std::vector<int32_t> prompt_ids,
                   std::string prompt_text, std::string_view marker = kAlpacaResponseMarker,
                   bool raw = false);
  // Adds one generated token; returns the new text that is safe to show now (maybe empty): held
  // back are an incomplete UTF-8 character and (unless raw) a trailing partial marker and
  // trailing whitespace.
  std::string push(int32_t token);
  // The rest of the answer once generation ended. All push() results + finish() ==
  // extract_response(...) of the same tokens.
  std::string finish();

 private:
  // The part of `stable` (the text safe to show so far) not shown yet.
  std::string release(std::string stable);
  const BpeTokenizer& tok_;
  std::vector<int32_t> ids_;
  std::string prompt_text_, marker_, shown_;
  bool raw_ = false;
};

}  // namespace llmft
