// `llmft generate` and `llmft chat` on a tiny random model folder: what they print and write must
// equal the library's answers for the same model (generate_responses / answer_entries).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <random>

#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "llmft/data/template.h"
#include "llmft/generate/answer.h"
#include "llmft/io/hf_folder.h"
#include "llmft/tokenizer/bpe.h"
#include "test_util.h"

using namespace llmft;

namespace {

// Full GPT-2 vocabulary (the tokenizer's ids), tiny body; weights large enough that greedy
// decoding does not sit on near-ties.
struct TinyModel {
  test::TempDir tmp;
  std::filesystem::path dir = tmp / "model";
  Gpt2Config cfg = [] {
    Gpt2Config c;
    c.C = 32;
    c.L = 2;
    c.NH = 4;
    c.maxT = 64;
    return c;
  }();
  Gpt2 model{cfg};
  TinyModel() {
    std::mt19937 gen(7);
    std::normal_distribution<float> d(0.0f, 0.5f);
    for (auto& x : model.params()) x = d(gen);
    Gpt2Tensors<float> w = model.weights();
    for (BlockTensors<float>& b : w.h)
      for (auto* ln : {&b.ln_1.w, &b.ln_2.w})
        for (auto& x : *ln) x += 1.0f;
    for (auto& x : w.ln_f.w) x += 1.0f;
    write_hf_folder(dir, cfg, model.table(), model.params());
  }
};

const BpeTokenizer& tokenizer() {
  static const BpeTokenizer tok = BpeTokenizer::load_bundled();
  return tok;
}

std::string expected_answer(TinyModel& m, const std::string& instruction,
                            const std::string& input, int64_t max_new) {
  GenerateOptions g;
  g.max_new_tokens = max_new;
  const auto r = generate_responses(m.model, tokenizer(),
                                    {format_prompt(PromptTemplate::kAlpaca, instruction, input)}, g);
  return r[0];
}

}  // namespace

TEST(GenerateCli, PrintsOnlyTheResponse) {
  TinyModel m;
  const auto r = test::run_llmft({"generate", "--model", m.dir.string(), "Name a color.",
                                  "--input", "Be brief", "--max-new-tokens", "12"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string want = expected_answer(m, "Name a color.", "Be brief", 12);
  EXPECT_FALSE(want.empty());  // random weights still produce some text in 12 tokens
  EXPECT_EQ(r.out, want + "\n");
}

TEST(GenerateCli, AnswersAWholeDatasetKeepingFields) {
  TinyModel m;
  test::TempDir t;
  const std::string data = R"([
  {"instruction": "Add 2 and 3.", "input": "", "output": "5", "id": 1},
  {"instruction": "Translate to French.", "input": "cat", "output": "chat", "extra": [1, 2]},
  {"instruction": "Say \u00e9t\u00e9.", "input": "", "output": "ete"}
])";
  write_file_atomic(t / "data.json", data);
  const auto out = t / "answers.json";
  const auto r = test::run_llmft({"generate", "--model", m.dir.string(), "--data",
                                  (t / "data.json").string(), "--output", out.string(),
                                  "--batch-size", "2", "--max-new-tokens", "10"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote 3 answers"), std::string::npos) << r.out;
  const std::string text = read_file(out);
  const auto arr = nlohmann::ordered_json::parse(text);
  ASSERT_EQ(arr.size(), 3u);
  const auto ds = parse_dataset(data, "data.json");
  AnswerOptions a;
  a.gen.max_new_tokens = 10;
  a.progress = false;
  const auto want = answer_entries(m.model, tokenizer(), ds.entries, a);
  EXPECT_EQ(text, dump_answers(want));  // byte for byte, 4-space indent, ASCII escapes
  EXPECT_EQ(arr[0]["id"], 1);
  EXPECT_EQ(arr[1]["extra"], nlohmann::ordered_json::parse("[1, 2]"));
  EXPECT_EQ(arr[2]["instruction"], "Say \u00e9t\u00e9.");
  for (const auto& e : arr) {
    EXPECT_TRUE(e["model_response"].is_string());
    EXPECT_TRUE(e.contains("output"));
  }
  EXPECT_NE(text.find("\n    {\n        \"instruction\""), std::string::npos);
}

TEST(GenerateCli, ChatAnswersEachLineFromAPipe) {
  TinyModel m;
  const auto r = test::run_llmft({"chat", "--model", m.dir.string(), "--max-new-tokens", "8"},
                                 "Name a color.\n\nWhat is 2+2?\n/quit\nNever answered\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string want = expected_answer(m, "Name a color.", "", 8) + "\n" +
                           expected_answer(m, "What is 2+2?", "", 8) + "\n";
  EXPECT_EQ(r.out, want);
}

TEST(GenerateCli, RejectsBadOptions) {
  TinyModel m;
  auto r = test::run_llmft({"generate", "--model", m.dir.string(), "x", "--temperature", "-1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--temperature"), std::string::npos) << r.err;
  r = test::run_llmft({"generate", "--model", m.dir.string(), "x", "--top-p", "1.5"});
  EXPECT_EQ(r.exit_code, 2);
  r = test::run_llmft({"generate", "--model", m.dir.string()});
  EXPECT_EQ(r.exit_code, 2);
  r = test::run_llmft({"generate", "--model", m.dir.string(), "--data", "nope.json"});
  EXPECT_EQ(r.exit_code, 2);  // --data without --output
  r = test::run_llmft({"generate", "--model", m.dir.string(), "x", "--template", "llama"});
  EXPECT_EQ(r.exit_code, 2);
}

// The output path is checked before any generation: never overwrite the input, never fail late.
TEST(GenerateCli, RefusesAnUnwritableOrInputOutputBeforeWorking) {
  TinyModel m;
  test::TempDir dir;
  const auto data = dir / "data.json";
  write_file_atomic(data, std::string_view(R"([{"instruction": "Hi", "input": "", "output": "Yo"}])"));
  auto r = test::run_llmft({"generate", "--model", m.dir.string(), "--data", data.string(),
                            "--output", data.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("overwrite the input"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(data), R"([{"instruction": "Hi", "input": "", "output": "Yo"}])");
  r = test::run_llmft({"generate", "--model", m.dir.string(), "--data", data.string(),
                       "--output", dir.path().string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is a folder"), std::string::npos) << r.err;
}
