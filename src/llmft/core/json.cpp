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
      } else if (c == '"' || c == '\n') {
        // A raw newline cannot be inside a JSON string, so it ends one here: a JSONL file is
        // parsed line by line, and a stray quote on one line must not hide the next line's
        // numbers and brackets from this check.
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

namespace {

// nlohmann's name for a token ("string literal", "'}'", "end of input") in plain words.
std::string token_words(std::string_view t) {
  if (t == "string literal") return "a string";
  if (t == "number literal") return "a number";
  if (t == "true literal" || t == "false literal" || t == "null literal") {
    return std::string(t.substr(0, t.find(' ')));
  }
  if (t == "'[', '{', or a literal") return "a value";
  if (t == "end of input") return "the end of the input";
  return std::string(t);
}

std::string_view between(std::string_view s, std::string_view open, std::string_view close) {
  const size_t a = s.find(open);
  if (a == std::string_view::npos) return {};
  const size_t b = s.find(close, a + open.size());
  return s.substr(a + open.size(), b == std::string_view::npos ? std::string_view::npos
                                                                : b - a - open.size());
}

}  // namespace

size_t json_error_offset(std::string_view text, const nlohmann::json::parse_error& e) {
  // e.byte counts the bytes read when the error was found: the offending byte is the last one.
  const size_t offset = e.byte > 0 ? e.byte - 1 : 0;
  return offset > text.size() ? text.size() : offset;
}

std::string describe_json_error(std::string_view text, const nlohmann::json::parse_error& e) {
  return json_line_column(text, json_error_offset(text, e)) + ": " + json_error_reason(text, e);
}

std::string json_error_reason(std::string_view text, const nlohmann::json::parse_error& e) {
  const size_t offset = json_error_offset(text, e);
  const std::string_view msg = e.what();
  bool blank = true;
  for (char c : text) blank = blank && (c == ' ' || c == '\t' || c == '\n' || c == '\r');
  if (blank) return "the input is empty, expected a JSON value";
  // "syntax error while parsing CONTEXT - DETAIL"
  const std::string_view context = between(msg, "while parsing ", " - ");
  const size_t dash = msg.find(" - ");
  const std::string_view detail = dash == std::string_view::npos ? msg : msg.substr(dash + 3);
  std::string in;  // what was being read, for "(...)"
  bool in_array = context == "array", in_object = context.substr(0, 6) == "object";
  if (context == "object key") in = " (an object key)";
  if (context == "object separator") in = " (after an object key)";
  if (detail.substr(0, 23) == "unexpected end of input") {
    if (in_array) return "the JSON ends early (an array is not closed)";
    if (in_object) return "the JSON ends early (an object is not closed)";
    return "the JSON ends early (a value is missing)";
  }
  // A whole value and then more: "[1] x", "{} {}".
  if (offset > 0 && nlohmann::json::accept(text.substr(0, offset))) {
    return "unexpected text after the JSON value";
  }
  if (detail.substr(0, 15) == "invalid string:") {
    std::string why(between(detail, "invalid string: ", "; last read"));
    return "invalid string: " + why;
  }
  if (detail.substr(0, 15) == "invalid literal" || detail.substr(0, 14) == "invalid number") {
    std::string_view read = between(detail, "last read: '", "'");
    // What nlohmann read may start at earlier tokens ("1,\n tru"): show the last word only.
    const size_t cut = read.find_last_of(" \t\r\n,:[{");
    if (cut != std::string_view::npos && cut + 1 < read.size()) read = read.substr(cut + 1);
    if (read.size() > 20) read = read.substr(read.size() - 20);
    const bool number = detail.substr(0, 14) == "invalid number";
    return fmt::format("{} '{}'{}", number ? "invalid number" : "not a JSON value:",
                       read,
                       number ? "" : " (values are strings, numbers, objects, arrays, true, "
                                     "false or null)");
  }
  if (detail.substr(0, 11) == "unexpected ") {
    const size_t semi = detail.find("; expected ");
    const std::string_view found = detail.substr(11, semi == std::string_view::npos
                                                         ? std::string_view::npos
                                                         : semi - 11);
    std::string expected =
        semi == std::string_view::npos ? "" : token_words(detail.substr(semi + 11));
    if (in_array && expected == "']'") expected = "',' or ']'";
    if (in_object && context == "object" && expected == "'}'") expected = "',' or '}'";
    if (expected.empty()) return "unexpected " + token_words(found);
    return fmt::format("expected {}{} but found {}", expected, in, token_words(found));
  }
  return "not valid JSON";
}

}  // namespace llmft
