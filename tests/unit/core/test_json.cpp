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

TEST(JsonLimits, ARawNewlineEndsAString) {
  // JSONL is parsed line by line: a quote left open on one line (a broken entry) must not hide
  // the next line's number or nesting from the check (found by the dataset fuzzer).
  EXPECT_EQ(error_of("{\"a\": \"x\n3e999"),
            "f.json: number 3e999 at line 2, column 1 is beyond the range of a double");
  EXPECT_EQ(error_of("\"\n" + nested(kMaxJsonDepth + 1)),
            "f.json: JSON nested deeper than 256 levels at line 2, column 257");
  // An escaped newline stays inside the string.
  EXPECT_EQ(error_of("[\"a\\n1e999 [[[\"]"), "");
}

namespace {
std::string parse_error_of(std::string_view text) {
  try {
    parse_json(text, "f.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(JsonParse, NamesLineColumnAndTheProblemInPlainWords) {
  EXPECT_EQ(parse_error_of("[{\"a\": 1,}"),
            "f.json: line 1, column 10: expected a string (an object key) but found '}'");
  EXPECT_EQ(parse_error_of("[1, 2\n"), "f.json: line 2, column 1: the JSON ends early (an array is "
                                       "not closed)");
  EXPECT_EQ(parse_error_of("{\"a\": 1"),
            "f.json: line 1, column 8: the JSON ends early (an object is not closed)");
  EXPECT_EQ(parse_error_of("[1,\n tru]"),
            "f.json: line 2, column 5: not a JSON value: 'tru]' (values are strings, numbers, "
            "objects, arrays, true, false or null)");
  EXPECT_EQ(parse_error_of(""), "f.json: line 1, column 1: the input is empty, expected a JSON value");
  EXPECT_EQ(parse_error_of(" \n"),
            "f.json: line 2, column 1: the input is empty, expected a JSON value");
  EXPECT_EQ(parse_error_of("[1]\n[2]"),
            "f.json: line 2, column 1: unexpected text after the JSON value");
  EXPECT_EQ(parse_error_of("{\"a\" 1}"),
            "f.json: line 1, column 6: expected ':' (after an object key) but found a number");
  EXPECT_EQ(parse_error_of("[1 2]"), "f.json: line 1, column 4: expected ',' or ']' but found a number");
}

TEST(JsonParse, NeverShowsNlohmannsMessage) {
  for (const char* bad : {"[", "{", "[1,]", "{\"a\":}", "nul", "\"abc", "\"a\nb\"", "[1] x", "1.e5",
                          "[-]", "{1: 2}", "\xff"}) {
    const std::string msg = parse_error_of(bad);
    EXPECT_NE(msg, "") << bad;
    EXPECT_EQ(msg.find("json.exception"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("syntax error"), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind("f.json: line 1, column ", 0), 0u) << msg;
  }
  EXPECT_EQ(parse_json("{\"a\": [1, 2]}", "f.json")["a"][1], 2);
  EXPECT_EQ(parse_json<nlohmann::ordered_json>("{\"b\": 1, \"a\": 2}", "f").begin().key(), "b");
}
