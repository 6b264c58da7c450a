// Stop strings (Ollama's `stop` option, OpenAI's `stop`): generation ends where the answer text
// first contains one of them, and the text shown ends just before it. Text arrives in pieces (as
// ResponseStreamer releases it), so a tail that may still become a stop string is held back.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace llmft {

class StopStrings {
 public:
  // stops: non-empty strings (UsageError otherwise); none = never stops.
  explicit StopStrings(std::vector<std::string> stops = {});
  // Appends a piece of answer text; returns what is safe to show now: everything before the first
  // stop string once one appears (then stopped() is true and later pieces are ignored), otherwise
  // all but a tail that is a prefix of some stop string.
  std::string push(std::string_view piece);
  // The held-back tail once generation ended without a stop string (empty after a stop).
  std::string finish();
  bool stopped() const { return stopped_; }
  bool empty() const { return stops_.empty(); }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace llmft
