// GPT-2 tokenizer against tiktoken's ids (tests/data/tokenizer/*.jsonl, copied from the shared
// reference set), round trips, special tokens, long words, vocabulary loading and errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/tokenizer/bpe.h"
#include "llmft/tokenizer/utf8.h"
#include "test_util.h"

namespace llmft {
namespace {

using test::TempDir;

const BpeTokenizer& tok() { return BpeTokenizer::bundled(); }

std::vector<nlohmann::json> read_jsonl(const std::string& name) {
  std::ifstream in(test::test_data_dir() / "tokenizer" / name);
  EXPECT_TRUE(in) << name;
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

SpecialTokens mode_of(const nlohmann::json& r) {
  return r.at("mode") == "all" ? SpecialTokens::kAllow : SpecialTokens::kOrdinary;
}

std::string show(const std::vector<int32_t>& ids) { return nlohmann::json(ids).dump(); }

// Every record: ids in its own mode; without a literal <|endoftext|> both modes (and the
// default) agree; decode(encode(text)) == text.
void check_corpus(const std::string& file, size_t expected_records) {
  const auto records = read_jsonl(file);
  ASSERT_EQ(records.size(), expected_records);
  size_t passed = 0, failed = 0;
  for (const auto& r : records) {
    const std::string text = r.at("text");
    const auto expected = r.at("ids").get<std::vector<int32_t>>();
    const auto ids = tok().encode(text, mode_of(r));
    bool ok = ids == expected;
    EXPECT_EQ(show(ids), show(expected)) << file << " record " << r.at("name");
    if (text.find("<|endoftext|>") == std::string::npos) {
      EXPECT_EQ(tok().encode(text, SpecialTokens::kAllow), expected) << r.at("name");
      EXPECT_EQ(tok().encode(text), expected) << r.at("name");
    }
    const std::string back = tok().decode(ids);
    ok = ok && back == text;
    EXPECT_EQ(back, text) << file << " record " << r.at("name") << ": round trip";
    EXPECT_EQ(tok().decode_bytes(ids), text) << r.at("name");
    (ok ? passed : failed)++;
  }
  std::printf("%s: %zu/%zu records pass\n", file.c_str(), passed, records.size());
}

TEST(Tokenizer, TrickyCorpus) { check_corpus("tricky.jsonl", 1087); }
TEST(Tokenizer, InstructionDatasetCorpus) { check_corpus("instruction_dataset.jsonl", 2200); }

TEST(Tokenizer, InvalidUtf8Corpus) {
  const auto records = read_jsonl("invalid_utf8.jsonl");
  ASSERT_EQ(records.size(), 26u);
  for (const auto& r : records) {
    const std::string text = r.at("text");
    ASSERT_EQ(text, from_hex(r.at("text_utf8_hex"))) << r.at("name");
    const auto expected = r.at("ids").get<std::vector<int32_t>>();
    // Raw bytes go through the replacement rule; lone UTF-16 surrogates cannot be in UTF-8
    // input, so those records check the repaired text tiktoken saw.
    const std::string input =
        r.contains("input_bytes_hex") ? from_hex(r.at("input_bytes_hex")) : text;
    EXPECT_EQ(show(tok().encode(input, mode_of(r))), show(expected)) << r.at("name");
    EXPECT_EQ(tok().decode(expected), text) << r.at("name");
  }
}

TEST(Utf8, ValidationAndRepair) {
  EXPECT_TRUE(utf8::is_valid("plain ascii text, long enough for the 8-byte path"));
  EXPECT_TRUE(utf8::is_valid("\xC3\xA9\xEF\xBF\xBD\xF0\x9F\xA6\x99\xF4\x8F\xBF\xBF"));
  for (const char* bad : {"\xC0\x80", "\xE0\x80\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xC3",
                          "\xE2\x82", "abc\x80", "\xFF"}) {
    EXPECT_FALSE(utf8::is_valid(bad)) << bad;
  }
  // One U+FFFD per maximal invalid subpart (E2 82 is one, the lone continuation another).
  EXPECT_EQ(utf8::replace_invalid("a\xE2\x82\x80"
                                  "b"),
            "a\xE2\x82\x80"
            "b");
  EXPECT_EQ(utf8::replace_invalid("a\xE2\x82"
                                  "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(utf8::replace_invalid("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8::replace_invalid("\xF0\x9F\xA6"), "\xEF\xBF\xBD");
}

TEST(Tokenizer, KnownIds) {
  EXPECT_EQ(tok().vocab_size(), 50257);
  EXPECT_EQ(&BpeTokenizer::bundled(), &tok());
  EXPECT_EQ(tok().encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(tok().encode("<|endoftext|>", SpecialTokens::kOrdinary),
            (std::vector<int32_t>{27, 91, 437, 1659, 5239, 91, 29}));
  EXPECT_EQ(tok().encode("a<|endoftext|>b", SpecialTokens::kAllow),
            (std::vector<int32_t>{64, BpeTokenizer::kEndOfText, 65}));
  EXPECT_TRUE(tok().encode("").empty());
  EXPECT_EQ(tok().decode(std::vector<int32_t>{BpeTokenizer::kEndOfText}), "<|endoftext|>");
}

TEST(Tokenizer, DisallowedSpecialTokenRaises) {
  try {
    tok().encode("before <|endoftext|> after");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("<|endoftext|>"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("byte 7"), std::string::npos) << e.what();
  }
  const std::vector<std::string> batch = {"fine", "x<|endoftext|>"};
  EXPECT_THROW(tok().encode_batch(batch), Error);
}

TEST(Tokenizer, DecodeShowsInvalidUtf8AsReplacement) {
  const auto ids = tok().encode("🦙");  // four bytes, split over several tokens
  ASSERT_GE(ids.size(), 2u);
  const std::vector<int32_t> first(ids.begin(), ids.begin() + 1);
  const std::string head = tok().decode_bytes(first);
  ASSERT_LT(head.size(), 4u);
  EXPECT_EQ(head, std::string("🦙").substr(0, head.size()));
  EXPECT_EQ(tok().decode(first), "\xEF\xBF\xBD");  // a truncated sequence is one U+FFFD
  EXPECT_EQ(tok().decode(ids), "🦙");
  EXPECT_THROW(tok().decode(std::vector<int32_t>{50257}), Error);
  EXPECT_THROW(tok().decode(std::vector<int32_t>{-1}), Error);
}

TEST(Tokenizer, EveryTokenDecodesToItsBytesAndBack) {
  // Any token sequence round-trips through decode_bytes; each single token re-encodes to itself
  // when its bytes are one pre-tokenizer piece of valid UTF-8 that BPE does not split.
  std::vector<int32_t> all(50257);
  for (int32_t i = 0; i < 50257; ++i) all[static_cast<size_t>(i)] = i;
  std::string joined;
  for (int32_t id : all) joined += tok().decode_bytes(std::vector<int32_t>{id});
  EXPECT_EQ(tok().decode_bytes(all), joined);
  EXPECT_EQ(tok().decode_bytes(std::vector<int32_t>{0}), "!");
}

TEST(Tokenizer, LongSingleLetterWord) {
  const std::string word(1 << 20, 'a');  // 1 MiB, one pre-tokenizer piece
  const auto ids = tok().encode(word, SpecialTokens::kOrdinary);
  EXPECT_EQ(tok().decode(ids), word);
  // GPT-2 has multi-letter "a" runs (up to 8 letters), so far fewer tokens than bytes but at
  // least one token per 8 bytes; all but the tail are the same token.
  EXPECT_GE(ids.size(), word.size() / 8);
  EXPECT_LE(ids.size(), word.size() / 4);
  const size_t same = static_cast<size_t>(std::count(ids.begin(), ids.end(), ids.front()));
  EXPECT_GE(same, ids.size() - 2);
}

TEST(Tokenizer, BatchMatchesSingle) {
  const auto records = read_jsonl("instruction_dataset.jsonl");
  std::vector<std::string> texts;
  for (const auto& r : records) texts.push_back(r.at("text"));
  const auto batch = tok().encode_batch(texts, SpecialTokens::kOrdinary, 0);
  ASSERT_EQ(batch.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(batch[i], records[i].at("ids").get<std::vector<int32_t>>()) << i;
  }
  EXPECT_EQ(tok().encode_batch(std::span<const std::string>{}).size(), 0u);
}

TEST(Tokenizer, LoadsHuggingFaceFolder) {
  TempDir dir;
  const auto src = data_dir() / "gpt2";
  write_file_atomic(dir / "vocab.json", read_file(src / "encoder.json"));
  write_file_atomic(dir / "merges.txt", read_file(src / "vocab.bpe"));
  const BpeTokenizer hf = BpeTokenizer::load_folder(dir.path());
  EXPECT_EQ(hf.vocab_size(), 50257);
  const std::string text = "Hugging Face's vocab.json + merges.txt: ça marche, 日本語も。";
  EXPECT_EQ(hf.encode(text), tok().encode(text));
}

// The Error for bad vocabulary files names the file.
void expect_load_error(const TempDir& dir, const std::string& vocab, const std::string& merges,
                       const std::string& expected_fragment) {
  write_file_atomic(dir / "vocab.json", vocab);
  write_file_atomic(dir / "merges.txt", merges);
  try {
    BpeTokenizer::load_folder(dir.path());
    FAIL() << "expected an Error for " << expected_fragment;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(expected_fragment), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, BadVocabularyFilesRaise) {
  TempDir dir;
  const std::string good_vocab = read_file(data_dir() / "gpt2" / "encoder.json");
  const std::string good_merges = read_file(data_dir() / "gpt2" / "vocab.bpe");
  expect_load_error(dir, "{not json", good_merges, "vocab.json: line 1, column 3: not a JSON value: 'no'");
  expect_load_error(dir, "[1, 2]", good_merges, "vocab.json: expected a JSON object");
  expect_load_error(dir, R"({"a": "x"})", good_merges, "vocab.json: token \"a\" has id");
  expect_load_error(dir, R"({"a": 0, "<|endoftext|>": 1})", good_merges,
                    "vocab.json: no token for the single byte");
  expect_load_error(dir, good_vocab, "#version: 0.2\nĠ t\nbroken\n", "merges.txt:3: expected two");
  expect_load_error(dir, good_vocab, "#version: 0.2\nĠ zzzzzzzzzzzz\n", "merges.txt:2: merge");

  TempDir empty;
  EXPECT_THROW(BpeTokenizer::load_folder(empty.path()), Error);
  try {
    BpeTokenizer::load_files(empty / "encoder.json", empty / "vocab.bpe");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("encoder.json"), std::string::npos) << e.what();
  }
}

// ---- `llmft tokenize` end to end (the built binary) ----

TEST(TokenizeCommand, EncodesAndDecodes) {
  auto r = test::run_llmft({"tokenize"}, "Hello world");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[15496,995]\n");

  r = test::run_llmft({"tokenize", "--decode"}, "[15496, 995, 0]");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello world!");

  TempDir dir;
  write_file_atomic(dir / "in.txt", "a<|endoftext|>b");
  r = test::run_llmft({"tokenize", "--file", (dir / "in.txt").string(), "--allow-special"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[64,50256,65]\n");

  r = test::run_llmft({"tokenize", "--file", (dir / "in.txt").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty());
  EXPECT_NE(r.err.find("<|endoftext|>"), std::string::npos) << r.err;

  // A Hugging Face folder gives the same ids.
  write_file_atomic(dir / "hf" / "vocab.json", read_file(data_dir() / "gpt2" / "encoder.json"));
  write_file_atomic(dir / "hf" / "merges.txt", read_file(data_dir() / "gpt2" / "vocab.bpe"));
  r = test::run_llmft({"tokenize", "--vocab", (dir / "hf").string()}, "Hello world");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[15496,995]\n");
}

TEST(TokenizeCommand, RejectsBadInput) {
  auto r = test::run_llmft({"tokenize", "--decode"}, "not json");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("stdin: line 1, column 2: not a JSON value: 'no'"), std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("json.exception"), std::string::npos) << r.err;
  r = test::run_llmft({"tokenize", "--decode"}, "[1, 50257]");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("50257"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("out of range"), std::string::npos) << r.err;
  r = test::run_llmft({"tokenize", "--decode"}, "[1, \"x\"]");
  EXPECT_EQ(r.exit_code, 1);
  r = test::run_llmft({"tokenize", "--vocab", "/nonexistent-llmft-vocab"}, "x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nonexistent-llmft-vocab"), std::string::npos) << r.err;

  TempDir dir;
  write_file_atomic(dir / "bad.jsonl", "{\"text\": \"ok\"}\n{oops\n");
  r = test::run_llmft({"tokenize", "--jsonl", (dir / "bad.jsonl").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty());
  EXPECT_NE(r.err.find("bad.jsonl: line 2, column"), std::string::npos) << r.err;
  write_file_atomic(dir / "mode.jsonl", "{\"text\": \"ok\", \"mode\": \"weird\"}\n");
  r = test::run_llmft({"tokenize", "--jsonl", (dir / "mode.jsonl").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("weird"), std::string::npos) << r.err;
}

TEST(TokenizeCommand, JsonlMatchesCorpus) {
  // The first records of each corpus file (both modes), through the CLI, in order.
  std::string input;
  std::vector<std::vector<int32_t>> expected;
  for (const char* file : {"tricky.jsonl", "instruction_dataset.jsonl"}) {
    const auto records = read_jsonl(file);
    for (size_t i = 0; i < records.size(); i += 37) {
      input +=
          nlohmann::json{{"text", records[i].at("text")}, {"mode", records[i].at("mode")}}.dump() +
          "\n";
      expected.push_back(records[i].at("ids").get<std::vector<int32_t>>());
    }
  }
  for (const auto& r : read_jsonl("tricky.jsonl")) {
    if (r.at("mode") != "all") continue;
    input += nlohmann::json{{"text", r.at("text")}, {"mode", "all"}}.dump() + "\n";
    expected.push_back(r.at("ids").get<std::vector<int32_t>>());
  }
  TempDir dir;
  write_file_atomic(dir / "in.jsonl", input);
  const auto r = test::run_llmft({"tokenize", "--jsonl", (dir / "in.jsonl").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  size_t n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    ASSERT_LT(n, expected.size());
    const auto j = nlohmann::json::parse(line);
    ASSERT_TRUE(j.is_object() && j.size() == 1 && j.contains("ids")) << line;
    EXPECT_EQ(show(j["ids"].get<std::vector<int32_t>>()), show(expected[n])) << "line " << n + 1;
  }
  EXPECT_EQ(n, expected.size());
  // The same through stdin ("-").
  const auto r2 = test::run_llmft({"tokenize", "--jsonl", "-"}, input);
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(r2.out, r.out);
}

}  // namespace
}  // namespace llmft
