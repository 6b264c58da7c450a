// The judge's prompt (SPEC §8, byte for byte) and how its reply is read as a 0-100 score.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace llmft::judge {

// The one user message sent to the judge (SPEC §8); <prompt> is the alpaca prompt (SPEC §1):
// Given the input `<prompt>` and correct output `<output>`, score the model response
// `<response>` on a scale from 0 to 100, where 100 is the best score. Respond with the integer
// number only.
std::string judge_prompt(std::string_view instruction, std::string_view input,
                         std::string_view output, std::string_view response);

// Reads a judge reply as a score. Accepted after trimming ASCII whitespace: 1-3 decimal digits
// with value 0..100, optionally followed by one '.' ("85", " 85\n", "85.", "085").
// Rejected: anything else ("eighty", "85/100", "Score: 85", "85.5", "-5", "+5", "101", "").
std::optional<int> parse_score(std::string_view reply);

// `--lenient`: parse_score, or else the first whole number 0..100 in the reply ("Score: 35/100"
// -> 35, "I'd say 85 points" -> 85). Negative numbers, decimals ("85.5") and numbers over 100
// ("2024") are passed over. nullopt when there is none.
std::optional<int> parse_score_lenient(std::string_view reply);

// `s` trimmed of ASCII whitespace at both ends.
std::string_view trim(std::string_view s);

// A reply for a one-line report: at most `max_bytes` bytes (cut on a UTF-8 boundary, "..."
// appended when cut), quoted and escaped as a JSON string, so newlines show as \n.
std::string quote_truncated(std::string_view s, size_t max_bytes = 80);

}  // namespace llmft::judge
