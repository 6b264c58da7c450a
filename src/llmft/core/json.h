// Limits on JSON that comes from files and the network, checked before nlohmann parses it:
// nlohmann's recursive code (copies, comparisons, dump) overflows the stack on values nested
// 100,000 deep, and a number like 1e400 makes it throw out_of_range instead of a parse error, so
// every place that parses outside JSON calls check_json_limits first.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

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

}  // namespace llmft
