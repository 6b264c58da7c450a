#include "llmft/core/json.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>

#include "llmft/core/error.h"

namespace llmft {

std::string json_line_column(std::string_view text, size_t offset) {
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return fmt::format("line {}, column {}", line, offset - line_start + 1);
}

namespace {

bool number_char(char c) {
  return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

// Throws when the number token at text[i, end) overflows a double, as nlohmann would find.
void check_number(std::string_view text, size_t i, size_t end, std::string_view what) {
  const std::string_view tok = text.substr(i, end - i);
  // Only exponents and very long digit strings can overflow (DBL_MAX has 309 digits).
  if (tok.find_first_of("eE") == std::string_view::npos && tok.size() < 309) return;
  const std::string s(tok);
  if (!std::isinf(std::strtod(s.c_str(), nullptr))) return;
  const std::string shown = s.size() > 40 ? s.substr(0, 37) + "..." : s;
  throw Error(fmt::format("{}: number {} at {} is beyond the range of a double", what, shown,
                          json_line_column(text, i)));
}

}  // namespace

void check_json_limits(std::string_view text, std::string_view what, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        throw Error(fmt::format("{}: JSON nested deeper than {} levels at {}", what, max_depth,
                                json_line_column(text, i)),
                    "no valid input nests this deep; check where the file or reply came from");
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    } else if (number_char(c)) {
      size_t end = i + 1;
      while (end < text.size() && number_char(text[end])) ++end;
      check_number(text, i, end, what);
      i = end - 1;
    }
  }
}

}  // namespace llmft
