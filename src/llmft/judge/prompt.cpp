#include "llmft/judge/prompt.h"

#include <nlohmann/json.hpp>

#include "llmft/data/template.h"

namespace llmft::judge {

std::string judge_prompt(std::string_view instruction, std::string_view input,
                         std::string_view output, std::string_view response) {
  std::string p = "Given the input `";
  p += format_prompt(PromptTemplate::kAlpaca, instruction, input);
  p += "` and correct output `";
  p += output;
  p += "`, score the model response `";
  p += response;
  p += "` on a scale from 0 to 100, where 100 is the best score. Respond with the integer number "
       "only.";
  return p;
}

std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n\v\f";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(kSpace);
  return s.substr(b, e - b + 1);
}

std::optional<int> parse_score(std::string_view reply) {
  std::string_view s = trim(reply);
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  if (s.empty() || s.size() > 3) return std::nullopt;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  if (v > 100) return std::nullopt;
  return v;
}

std::optional<int> parse_score_lenient(std::string_view reply) {
  if (const auto strict = parse_score(reply)) return strict;
  auto digit = [&](size_t i) { return i < reply.size() && reply[i] >= '0' && reply[i] <= '9'; };
  for (size_t i = 0; i < reply.size();) {
    if (!digit(i)) {
      ++i;
      continue;
    }
    size_t e = i;
    while (digit(e)) ++e;
    const bool decimal = (i > 1 && reply[i - 1] == '.' && digit(i - 2)) ||
                         (e < reply.size() && reply[e] == '.' && digit(e + 1));
    const bool negative = i > 0 && reply[i - 1] == '-' && !(i > 1 && digit(i - 2));
    if (!decimal && !negative && e - i <= 3) {
      int v = 0;
      for (size_t k = i; k < e; ++k) v = v * 10 + (reply[k] - '0');
      if (v <= 100) return v;
    }
    i = e;
  }
  return std::nullopt;
}

std::string quote_truncated(std::string_view s, size_t max_bytes) {
  std::string cut(s);
  if (cut.size() > max_bytes) {
    size_t n = max_bytes;
    // Back up over UTF-8 continuation bytes so a character is never split.
    while (n > 0 && (static_cast<unsigned char>(cut[n]) & 0xC0) == 0x80) --n;
    cut.resize(n);
    cut += "...";
  }
  return nlohmann::json(cut).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace llmft::judge
