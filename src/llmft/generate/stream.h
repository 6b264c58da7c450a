// Streams an answer as tokens arrive (chat, serve): prints only text that the final
// extract_response() will keep, so the streamed text equals the final answer.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmft/generate/generate.h"
#include "llmft/generate/stop.h"

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

// A streamed answer that ends at the first stop string (generate, chat, serve): ResponseStreamer's
// text through StopStrings. Without stop strings its text is extract_response()'s.
class AnswerStream {
 public:
  AnswerStream(const BpeTokenizer& tok, std::vector<int32_t> prompt_ids, std::string prompt_text,
               std::string_view marker = kAlpacaResponseMarker,
               std::vector<std::string> stops = {}, bool raw = false);
  // Adds one generated token; returns the new text safe to show (maybe empty). Once a stop string
  // appears, stopped() is true and nothing more is returned.
  std::string push(int32_t token);
  // The rest of the answer once generation ended (empty after a stop string).
  std::string finish();
  bool stopped() const { return stop_.stopped(); }
  // Everything returned so far: after finish(), the whole answer.
  const std::string& text() const { return text_; }

 private:
  ResponseStreamer streamer_;
  StopStrings stop_;
  std::string text_;
};

}  // namespace llmft
