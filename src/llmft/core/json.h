// Limits on JSON that comes from files and the network, checked before nlohmann parses it:
// nlohmann's recursive code (copies, comparisons, dump) overflows the stack on values nested
// 100,000 deep, and a number like 1e400 makes it throw out_of_range instead of a parse error, so
// every place that parses outside JSON calls check_json_limits first.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>

#include "llmft/core/error.h"

namespace llmft {

// No file or reply we read nests deeper than this (a dataset entry nests 2 levels, a safetensors
// header 3, an OpenAI reply 4).
inline constexpr int kMaxJsonDepth = 256;

// Throws Error "WHAT: JSON nested deeper than 256 levels at line L, column C" when arrays and
// objects in `text` nest deeper than `max_depth`, and "WHAT: number 1e400 at line L, column C is
// beyond the range of a double" for a number that overflows one. Linear; `text` need not be valid
// JSON (the parser reports that afterwards).
void check_json_limits(std::string_view text, std::string_view what,
                       int max_depth = kMaxJsonDepth);

// 1-based line and column of byte `offset` of `text`, as "line L, column C".
std::string json_line_column(std::string_view text, size_t offset);

// "line L, column C: REASON" for a parse error nlohmann found in `text`, in plain words
// ("expected a string (an object key) but found '}'", "the JSON ends early (an array is not
// closed)", "unexpected text after the JSON value"); never nlohmann's raw message.
std::string describe_json_error(std::string_view text, const nlohmann::json::parse_error& e);
// The REASON part alone, and the 0-based byte of `text` the error points at (for callers that
// report positions in a larger file).
std::string json_error_reason(std::string_view text, const nlohmann::json::parse_error& e);
size_t json_error_offset(std::string_view text, const nlohmann::json::parse_error& e);

// The one way to parse JSON from outside (files, stdin, replies, requests): checks the limits
// above, then parses; a syntax error throws Error "WHAT: line L, column C: REASON" with `hint`.
template <class Json = nlohmann::json>
Json parse_json(std::string_view text, std::string_view what, std::string hint = {}) {
  check_json_limits(text, what);
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(std::string(what) + ": " + describe_json_error(text, e), std::move(hint));
  }
}

}  // namespace llmft
