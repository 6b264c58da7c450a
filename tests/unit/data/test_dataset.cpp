// Dataset loading (JSON array, JSONL), one-line errors for every bad file, the reference split and
// the prompt templates byte for byte, and the chat and prompt/completion shapes.
#include <string>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "llmft/data/template.h"
#include "test_util.h"

using namespace llmft;

namespace {

std::filesystem::path fixture(const std::string& name) {
  return test::test_data_dir() / "datasets" / name;
}

// Loads `name`, expects an Error whose one-line message contains every piece of `parts`.
void expect_load_error(const std::string& name, const std::vector<std::string>& parts) {
  SCOPED_TRACE(name);
  try {
    load_dataset(fixture(name));
    ADD_FAILURE() << "expected an Error for " << name;
  } catch (const UsageError& e) {
    ADD_FAILURE() << "a bad dataset is not a usage error: " << e.what();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_NE(msg.find(fixture(name).string()), std::string::npos) << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' in: " << msg;
    EXPECT_FALSE(e.hint().empty());
  }
}

}  // namespace

TEST(DatasetErrors, NotJsonNamesLineColumnEntryAndField) {
  // `oops` starts at line 3, column 53 (1-based); entry 1's value of "output".
  expect_load_error("not_json.json",
                    {"not_json.json: line 3, column 53", "entry 1", "field \"output\""});
}

TEST(DatasetErrors, TopLevelObjectIsNotAnArray) {
  expect_load_error("not_array.json", {"top-level JSON value is an object", "expected an array"});
}

TEST(DatasetErrors, EntryThatIsNotAnObject) {
  expect_load_error("not_object.json", {"entry 1", "is a string", "expected an object"});
}

TEST(DatasetErrors, MissingInputField) {
  expect_load_error("missing_field.json", {"entry 2", "field \"input\" is missing"});
}

TEST(DatasetErrors, NonStringField) {
  expect_load_error("non_string_field.json",
                    {"entry 1", "field \"output\" is a number, expected a string"});
}

TEST(DatasetErrors, InvalidUtf8NamesPositionEntryAndField) {
  // The Latin-1 byte 0xE9 of "caf\xE9" is line 3, column 23, byte 76 (0-based).
  expect_load_error("invalid_utf8.json", {"invalid UTF-8", "line 3, column 23", "byte 76",
                                          "entry 1", "field \"instruction\""});
}

TEST(DatasetErrors, EmptyArrayAndEmptyFile) {
  expect_load_error("empty.json", {"empty dataset"});
  expect_load_error("empty_file.json", {"empty dataset"});
}

TEST(DatasetErrors, LiteralEndOfText) {
  expect_load_error("endoftext.json",
                    {"entry 0", "field \"output\"", "contains the literal text \"<|endoftext|>\""});
}

TEST(DatasetErrors, BadJsonlLine) {
  expect_load_error("bad_line.jsonl",
                    {"bad_line.jsonl: line 3", "entry 2", "field \"output\""});
}

TEST(DatasetErrors, MissingFile) {
  EXPECT_THROW(load_dataset(fixture("does_not_exist.json")), Error);
}

TEST(DatasetErrors, TruncatedAndGarbageInputsNeverCrash) {
  // Every prefix of a valid file is either a valid dataset or one Error; never anything else.
  const std::string good = read_file(fixture("good_extra_fields.json"));
  for (size_t n = 0; n < good.size(); ++n) {
    try {
      parse_dataset(std::string_view(good).substr(0, n), "cut.json");
      ADD_FAILURE() << "prefix of " << n << " bytes accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cut.json"), std::string::npos);
    }
  }
}

TEST(Dataset, JsonlKeepsOrderExtraFieldsAndSkipsBlankLines) {
  const InstructionDataset ds = load_dataset(fixture("good.jsonl"));
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds.entries[0].instruction, "Name a color.");
  EXPECT_EQ(ds.entries[0].raw.at("model_response"), "Red.");
  EXPECT_EQ(ds.entries[1].input, "2+2");
  EXPECT_EQ(ds.entries[1].output, "4");
  EXPECT_EQ(ds.entries[2].instruction, "Caf\xC3\xA9?");  // \u00e9 decoded to UTF-8
  EXPECT_EQ(ds.entries[2].raw.at("rejected"), "No");
}

TEST(Dataset, RawObjectKeepsKeyOrderForEchoing) {
  InstructionDataset ds = load_dataset(fixture("good_extra_fields.json"));
  ASSERT_EQ(ds.size(), 2u);
  ds.entries[1].raw["model_response"] = "4.";
  EXPECT_EQ(ds.entries[1].raw.dump(),
            R"({"rejected":"No","instruction":"Add.","input":"2+2","output":"4","chosen":"Four",)"
            R"("model_response":"4."})");
}

TEST(Dataset, BundledFileAndReferenceSplit) {
  const InstructionDataset ds = load_dataset(data_dir() / "instruction-data.json");
  ASSERT_EQ(ds.size(), 1100u);
  const DatasetSplits s = split_dataset(ds.size());
  EXPECT_EQ(s.train.begin, 0u);
  EXPECT_EQ(s.train.size(), 935u);
  EXPECT_EQ(s.test.begin, 935u);
  EXPECT_EQ(s.test.size(), 110u);
  EXPECT_EQ(s.val.begin, 1045u);
  EXPECT_EQ(s.val.size(), 55u);
  EXPECT_EQ(s.val.end, 1100u);
  // First entry of the file (SOURCES.md: 775 empty inputs, 325 non-empty).
  EXPECT_EQ(ds.entries[0].instruction,
            "Evaluate the following phrase by transforming it into the spelling given.");
  int empty_inputs = 0;
  for (const auto& e : ds.entries) empty_inputs += e.input.empty();
  EXPECT_EQ(empty_inputs, 775);
}

TEST(Dataset, SplitSmallSizesTruncateLikePython) {
  // int(n*0.85), int(n*0.1) in double arithmetic.
  EXPECT_EQ(split_dataset(1).train.size(), 0u);
  EXPECT_EQ(split_dataset(1).val.size(), 1u);
  EXPECT_EQ(split_dataset(10).train.size(), 8u);  // 8.5
  EXPECT_EQ(split_dataset(10).test.size(), 1u);
  EXPECT_EQ(split_dataset(10).val.size(), 1u);
  EXPECT_EQ(split_dataset(20).train.size(), 17u);
  EXPECT_EQ(split_dataset(20).test.size(), 2u);
  EXPECT_EQ(split_dataset(52002).train.size(), 44201u);  // Stanford Alpaca: 44201.7
  EXPECT_EQ(split_dataset(52002).test.size(), 5200u);
  EXPECT_EQ(split_dataset(52002).val.size(), 2601u);
}

TEST(Template, AlpacaWithAndWithoutInput) {
  EXPECT_EQ(format_prompt(PromptTemplate::kAlpaca, "Add.", "2+2"),
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\nAdd.\n\n### Input:\n2+2");
  EXPECT_EQ(format_training_text(PromptTemplate::kAlpaca, "Add.", "2+2", "4"),
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\nAdd.\n\n### Input:\n2+2\n\n### "
            "Response:\n4");
  EXPECT_EQ(format_training_text(PromptTemplate::kAlpaca, "Say hi.", "", "Hi."),
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\nHi.");
}

TEST(Template, Phi3WithAndWithoutInput) {
  EXPECT_EQ(format_prompt(PromptTemplate::kPhi3, "Add.", "2+2"), "<|user|>\nAdd.\n2+2");
  EXPECT_EQ(format_training_text(PromptTemplate::kPhi3, "Add.", "2+2", "4"),
            "<|user|>\nAdd.\n2+2\n<|assistant|>:\n4");
  EXPECT_EQ(format_training_text(PromptTemplate::kPhi3, "Say hi.", "", "Hi."),
            "<|user|>\nSay hi.\n<|assistant|>:\nHi.");
}

TEST(Template, NamesAndUnknownName) {
  EXPECT_EQ(parse_template("alpaca"), PromptTemplate::kAlpaca);
  EXPECT_EQ(parse_template("phi3"), PromptTemplate::kPhi3);
  EXPECT_EQ(template_name(PromptTemplate::kPhi3), "phi3");
  EXPECT_THROW(parse_template("chatml"), UsageError);
}

TEST(DatasetErrors, InvalidUtf8InJsonl) {
  // 0xC3 followed by '(' on line 2, column 32.
  expect_load_error("invalid_utf8.jsonl",
                    {"invalid UTF-8", "line 2, column 32", "entry 1", "field \"input\""});
}

namespace {

// parse_dataset of `text` as d.json; the Error's one-line message when it throws.
std::string parse_error(const std::string& text) {
  try {
    parse_dataset(text, "d.json");
  } catch (const Error& e) {
    EXPECT_FALSE(e.hint().empty());
    return e.what();
  }
  return "no error";
}

}  // namespace

// A `messages` conversation: system first, turns alternating, the last answer is the output and
// the earlier turns come before the instruction, as `llmft chat` sends them.
TEST(DatasetShapes, MessagesMapOntoTheTemplateAsAConversation) {
  const InstructionDataset ds = parse_dataset(R"([{"messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello."},
      {"role": "user", "content": "Name a color."},
      {"role": "assistant", "content": "Blue."}]}])",
                                              "chat.json");
  ASSERT_EQ(ds.size(), 1u);
  const InstructionEntry& e = ds.entries[0];
  EXPECT_EQ(e.instruction, "Name a color.");
  EXPECT_EQ(e.input, "");
  EXPECT_EQ(e.output, "Blue.");
  EXPECT_EQ(e.system, "Be brief.");
  ASSERT_EQ(e.history.size(), 1u);
  const std::string head =
      "Below is an instruction that describes a task. Write a response that appropriately "
      "completes the request.\n\n### Instruction:\n";
  const std::string prompt = "Be brief.\n\n" + head + "Hi\n\n### Response:\nHello.\n\n" + head +
                             "Name a color.";
  EXPECT_EQ(format_prompt(PromptTemplate::kAlpaca, e), prompt);
  EXPECT_EQ(format_training_text(PromptTemplate::kAlpaca, e),
            prompt + "\n\n### Response:\nBlue.");
  // The earlier answer's bytes, for the assistant-only loss.
  const auto ranges = history_answer_ranges(PromptTemplate::kAlpaca, e);
  ASSERT_EQ(ranges.size(), 1u);
  EXPECT_EQ(prompt.substr(ranges[0].first, ranges[0].second - ranges[0].first), "Hello.");
  // The original object is kept for echoing.
  EXPECT_TRUE(e.raw.contains("messages"));
}

TEST(DatasetShapes, PromptCompletionStringsAndConversations) {
  const InstructionDataset ds = parse_dataset(
      "{\"prompt\": \"Add 2 and 3.\", \"completion\": \"5\"}\n"
      "{\"prompt\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"completion\": "
      "[{\"role\": \"assistant\", \"content\": \"Hello.\"}]}\n",
      "pc.jsonl");
  ASSERT_EQ(ds.size(), 2u);
  EXPECT_EQ(ds.entries[0].instruction, "Add 2 and 3.");
  EXPECT_EQ(ds.entries[0].output, "5");
  EXPECT_EQ(format_training_text(PromptTemplate::kAlpaca, ds.entries[0]),
            format_training_text(PromptTemplate::kAlpaca, "Add 2 and 3.", "", "5"));
  EXPECT_EQ(ds.entries[1].instruction, "Hi");
  EXPECT_EQ(ds.entries[1].output, "Hello.");
  EXPECT_TRUE(ds.entries[1].history.empty());
}

TEST(DatasetHostile, JsonlLineAfterAStrayQuoteIsCheckedToo) {
  // Found by the dataset fuzzer: a quote left open on line 1 hid line 2's huge number from the
  // JSON limits, and nlohmann's out_of_range escaped as an internal error.
  try {
    parse_dataset("{\"instruction\": \"a\", \"output\": \"b\"}\"\n3e999\n", "d.jsonl");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "d.jsonl: number 3e999 at line 2, column 1 is beyond the range of a double");
  }
}

TEST(DatasetShapes, BadShapesAreOneLineNamingEntryAndKeys) {
  EXPECT_EQ(parse_error(R"([{"question": "q", "answer": "a"}])"),
            "d.json: entry 0: unknown entry shape, with keys \"question\", \"answer\"");
  EXPECT_EQ(parse_error(R"([{"messages": [{"role": "user", "content": "q"}]}])"),
            "d.json: entry 0: messages does not end with an assistant message after a user "
            "message");
  EXPECT_EQ(parse_error(R"([{"messages": [{"role": "user", "content": "q"},
                                         {"role": "user", "content": "q"}]}])"),
            "d.json: entry 0: messages[1] is a \"user\" message where an assistant message was "
            "expected");
  EXPECT_EQ(parse_error(R"([{"messages": [{"role": "tool", "content": "q"}]}])"),
            "d.json: entry 0: messages[0].role is \"tool\", expected system, user or assistant");
  EXPECT_EQ(parse_error(R"([{"messages": [{"role": "user", "content": 3}]}])"),
            "d.json: entry 0: messages[0].content is a number, expected a string");
  EXPECT_EQ(parse_error(R"([{"messages": "hi"}])"),
            "d.json: entry 0: field \"messages\" is a string, expected a list of messages");
  EXPECT_EQ(parse_error(R"([{"prompt": "p", "completion": 1}])"),
            "d.json: entry 0: field \"completion\" is a number, expected a string");
  // An Alpaca entry missing a field still says which.
  EXPECT_EQ(parse_error(R"([{"instruction": "i", "output": "o"}])"),
            "d.json: entry 0: field \"input\" is missing");
}
