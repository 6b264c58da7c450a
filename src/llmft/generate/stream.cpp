// See stream.h.
#include "llmft/generate/stream.h"

#include "llmft/tokenizer/bpe.h"

namespace llmft {

ResponseStreamer::ResponseStreamer(const BpeTokenizer& tok, std::vector<int32_t> prompt_ids,
                                   std::string prompt_text, std::string_view marker, bool raw)
    : tok_(tok), ids_(std::move(prompt_ids)), prompt_text_(std::move(prompt_text)),
      marker_(raw ? std::string_view{} : marker), raw_(raw) {}

std::string ResponseStreamer::push(int32_t token) {
  ids_.push_back(token);
  // The cleaned text so far, then drop what might still change: an incomplete UTF-8 character
  // (decoded as U+FFFD at the very end), a trailing prefix of the marker, trailing whitespace.
  std::string text = tok_.decode(ids_);
  text = text.substr(std::min(prompt_text_.size(), text.size()));
  // A trailing U+FFFD may be a character whose remaining bytes are still to come.
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  while (text.ends_with(kReplacement)) text.resize(text.size() - kReplacement.size());
  if (raw_) return release(std::move(text));
  for (size_t k = std::min(marker_.size() - 1, text.size()); k > 0 && !marker_.empty(); --k) {
    if (text.compare(text.size() - k, k, marker_, 0, k) == 0) {
      text.resize(text.size() - k);
      break;
    }
  }
  return release(clean_response(text, 0, marker_));
}

std::string ResponseStreamer::release(std::string stable) {
  if (stable.size() <= shown_.size() || stable.compare(0, shown_.size(), shown_) != 0) return {};
  std::string delta = stable.substr(shown_.size());
  shown_ = std::move(stable);
  return delta;
}

std::string ResponseStreamer::finish() {
  const std::string all = tok_.decode(ids_);
  const std::string final_text =
      raw_ ? all.substr(std::min(prompt_text_.size(), all.size()))
           : clean_response(all, prompt_text_.size(), marker_);
  if (final_text.size() < shown_.size() || final_text.compare(0, shown_.size(), shown_) != 0)
    return {};
  std::string delta = final_text.substr(shown_.size());
  shown_ = final_text;
  return delta;
}

AnswerStream::AnswerStream(const BpeTokenizer& tok, std::vector<int32_t> prompt_ids,
                           std::string prompt_text, std::string_view marker,
                           std::vector<std::string> stops, bool raw)
    : streamer_(tok, std::move(prompt_ids), std::move(prompt_text), marker, raw),
      stop_(std::move(stops)) {}

std::string AnswerStream::push(int32_t token) {
  if (stop_.stopped()) return {};
  std::string out = stop_.push(streamer_.push(token));
  text_ += out;
  return out;
}

std::string AnswerStream::finish() {
  if (stop_.stopped()) return {};
  std::string out = stop_.push(streamer_.finish());
  out += stop_.finish();
  text_ += out;
  return out;
}

}  // namespace llmft
