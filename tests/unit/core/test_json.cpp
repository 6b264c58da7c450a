// The JSON nesting limit every reader of outside JSON applies before parsing.
#include <string>

#include "llmft/core/error.h"
#include "llmft/core/json.h"
#include "test_util.h"

using namespace llmft;

namespace {
std::string nested(int depth, char open = '[', char close = ']') {
  return std::string(depth, open) + std::string(depth, close);
}
std::string error_of(std::string_view text) {
  try {
    check_json_limits(text, "f.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(JsonDepth, AcceptsTheLimitAndRefusesOneMore) {
  EXPECT_EQ(error_of(nested(kMaxJsonDepth)), "");
  EXPECT_EQ(error_of(nested(kMaxJsonDepth + 1)),
            "f.json: JSON nested deeper than 256 levels at line 1, column 257");
  EXPECT_EQ(error_of("{\"a\":" + nested(kMaxJsonDepth, '{', '}')), 
            "f.json: JSON nested deeper than 256 levels at line 1, column 261");
}

TEST(JsonDepth, RefusesAHundredThousandLevelsNamingTheLine) {
  EXPECT_EQ(error_of("{\n  \"shape\": " + nested(100000)),
            "f.json: JSON nested deeper than 256 levels at line 2, column 267");
}

TEST(JsonDepth, BracketsInStringsAndSiblingsDoNotCount) {
  // Brackets inside strings (also after an escaped quote) are text, and siblings do not add up.
  const std::string in_string = "[\"" + nested(1000) + "\\\"" + std::string(1000, '[') + "\"]";
  EXPECT_EQ(error_of(in_string), "");
  std::string siblings = "[";
  for (int i = 0; i < 1000; ++i) siblings += nested(200) + ",";
  siblings += "1]";
  EXPECT_EQ(error_of(siblings), "");
  // Stray closers cannot lower the count below zero and hide a deep value after them.
  EXPECT_NE(error_of(std::string(1000, ']') + nested(300)), "");
}
