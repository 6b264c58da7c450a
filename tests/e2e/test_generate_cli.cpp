// `llmft generate` and `llmft chat` on a tiny random model folder: what they print and write must
// equal the library's answers for the same model (generate_responses / answer_entries), with the
// sampling options, stop strings, prompts from stdin or a file, and chat's history and commands.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <random>

#include <fmt/format.h>

#include "llmft/core/io.h"
#include "llmft/data/conversation.h"
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
  Gpt2Config cfg;
  Gpt2 model;
  static Gpt2Config config(int64_t maxT) {
    Gpt2Config c;
    c.C = 32;
    c.L = 2;
    c.NH = 4;
    c.maxT = maxT;
    return c;
  }
  explicit TinyModel(int64_t maxT = 64) : cfg(config(maxT)), model(cfg) {
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
                            const std::string& input, int64_t max_new,
                            const SamplerOptions& sampler = {}) {
  GenerateOptions g;
  g.max_new_tokens = max_new;
  g.sampler = sampler;
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

// A 64-token context holds one turn and its answer, not two: the first turn is dropped, so each
// line is answered on its own.
TEST(GenerateCli, ChatDropsTurnsThatDoNotFitTheContext) {
  TinyModel m;
  const auto r =
      test::run_llmft({"chat", "--model", m.dir.string(), "--max-new-tokens", "8", "--verbose"},
                      "Name a color.\n\nWhat is 2+2?\n/quit\nNever answered\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string want = expected_answer(m, "Name a color.", "", 8) + "\n" +
                           expected_answer(m, "What is 2+2?", "", 8) + "\n";
  EXPECT_EQ(r.out, want);
  EXPECT_NE(r.err.find("turn 2: 0 earlier turns in the prompt (1 oldest dropped to fit the "
                       "context)"),
            std::string::npos)
      << r.err;
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

namespace {

// What a greedy answer to a conversation is, by the library (data/conversation.h + generate).
std::string expected_chat_answer(TinyModel& m, const std::vector<ChatTurn>& turns, int64_t max_new) {
  GenerateOptions g;
  g.max_new_tokens = max_new;
  const std::string prompt = format_conversation(PromptTemplate::kAlpaca, "", turns);
  return generate_responses(m.model, tokenizer(), {prompt}, g)[0];
}

// The "prompt: N tokens" counts printed by --verbose, in order.
std::vector<int64_t> prompt_counts(const std::string& err) {
  std::vector<int64_t> n;
  for (size_t pos = 0; (pos = err.find("prompt: ", pos)) != std::string::npos; pos += 8)
    n.push_back(std::stoll(err.substr(pos + 8)));
  return n;
}

}  // namespace

// With room in the context, each answer sees the earlier turns, in the template's multi-turn form.
TEST(ChatCli, KeepsTheConversationInTheTemplate) {
  TinyModel m(256);
  const auto r =
      test::run_llmft({"chat", "--model", m.dir.string(), "--max-new-tokens", "8", "--verbose"},
                      "Name a color.\nWhat is 2+2?\n/bye\nNever answered\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string a1 = expected_chat_answer(m, {{"Name a color.", ""}}, 8);
  const std::string a2 = expected_chat_answer(m, {{"Name a color.", a1}, {"What is 2+2?", ""}}, 8);
  // The history changes the answer (else this test could not tell).
  ASSERT_NE(a2, expected_answer(m, "What is 2+2?", "", 8));
  EXPECT_EQ(r.out, a1 + "\n" + a2 + "\n");
  const auto counts = prompt_counts(r.err);
  ASSERT_EQ(counts.size(), 2u) << r.err;
  const std::string p2 = format_conversation(PromptTemplate::kAlpaca, "",
                                             std::vector<ChatTurn>{{"Name a color.", a1},
                                                                   {"What is 2+2?", ""}});
  EXPECT_EQ(counts[1], static_cast<int64_t>(tokenizer().encode(p2, SpecialTokens::kAllow).size()));
  EXPECT_GT(counts[1], counts[0]);
  EXPECT_NE(r.err.find("turn 2: 1 earlier turn in the prompt\n"), std::string::npos) << r.err;
}

// Commands are never sent to the model, piped or not; their replies go to stderr.
TEST(ChatCli, SlashCommandsActOnTheChatOnly) {
  TinyModel m(256);
  const auto r = test::run_llmft(
      {"chat", "--model", m.dir.string(), "--max-new-tokens", "8", "--seed", "1"},
      "/help\nName a color.\n/reset\nName a color.\n/set temperature abc\n/set temprature 1\n"
      "/set top_k -1\n/set temperature 0.7\n/set max-new-tokens 4\n/show\n/frob\n//x\n/bye\n"
      "Never answered\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string a1 = expected_chat_answer(m, {{"Name a color.", ""}}, 8);
  // After /reset the same question gets the same (greedy) answer; "//x" sends "/x" as the third
  // turn (seed 1 + 2), sampled at temperature 0.7 with 4 new tokens.
  GenerateOptions g;
  g.max_new_tokens = 4;
  g.sampler.temperature = 0.7f;
  g.sampler.seed = 3;
  const std::string a3 = generate_responses(
      m.model, tokenizer(),
      {format_conversation(PromptTemplate::kAlpaca, "",
                           std::vector<ChatTurn>{{"Name a color.", a1}, {"/x", ""}})},
      g)[0];
  EXPECT_EQ(r.out, a1 + "\n" + a1 + "\n" + a3 + "\n");
  for (const char* s : {"/reset                forget the conversation", "conversation cleared",
                        "/set temperature: 'abc' is not a number",
                        "unknown setting 'temprature'; did you mean 'temperature'?",
                        "/set top_k: --top-k -1 is invalid: expected >= 0", "temperature = 0.7",
                        "max_new_tokens = 4",
                        "temperature 0.7, top_p 1, top_k 0, min_p 0, repeat_penalty 1, "
                        "max_new_tokens 4",
                        "1 turn remembered", "unknown command /frob; /help lists them"})
    EXPECT_NE(r.err.find(s), std::string::npos) << s << "\n" << r.err;
}

TEST(GenerateCli, StopStringsEndTheAnswerEarly) {
  TinyModel m;
  const std::string want = expected_answer(m, "Name a color.", "", 12);
  ASSERT_GE(want.size(), 8u) << want;
  const std::string stop = want.substr(want.size() / 2, 2);
  const auto r = test::run_llmft({"generate", "--model", m.dir.string(), "Name a color.",
                                  "--max-new-tokens", "12", "--stop", stop, "--stop", "@@@",
                                  "--verbose"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, want.substr(0, want.find(stop)) + "\n");
  // Generation itself stopped there: fewer than 12 new tokens.
  const size_t at = r.err.find(" new tokens in all");
  ASSERT_NE(at, std::string::npos) << r.err;
  EXPECT_LT(std::stoll(r.err.substr(r.err.rfind(' ', at - 1) + 1)), 12) << r.err;
  // The same in dataset mode.
  test::TempDir t;
  write_file_atomic(t / "data.json",
                    std::string_view(R"([{"instruction": "Name a color.", "input": "", "output": "x"}])"));
  const auto d = test::run_llmft({"generate", "--model", m.dir.string(), "--data",
                                  (t / "data.json").string(), "--output", (t / "out.json").string(),
                                  "--max-new-tokens", "12", "--stop", stop});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_EQ(nlohmann::json::parse(read_file(t / "out.json"))[0]["model_response"],
            want.substr(0, want.find(stop)));
}

TEST(GenerateCli, RepeatPenaltyAndMinPReachTheSampler) {
  TinyModel m;
  SamplerOptions pen;
  pen.repeat_penalty = 1.5f;
  const std::string want = expected_answer(m, "Name a color.", "", 16, pen);
  ASSERT_NE(want, expected_answer(m, "Name a color.", "", 16));  // the penalty changes it
  auto r = test::run_llmft({"generate", "--model", m.dir.string(), "Name a color.",
                            "--max-new-tokens", "16", "--repeat-penalty", "1.5"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, want + "\n");
  SamplerOptions mp;
  mp.temperature = 1.5f;
  mp.min_p = 0.2f;
  mp.repeat_last_n = 8;
  mp.repeat_penalty = 1.2f;
  mp.seed = 5;
  r = test::run_llmft({"generate", "--model", m.dir.string(), "Name a color.", "--max-new-tokens",
                       "16", "--temperature", "1.5", "--min-p", "0.2", "--repeat-penalty", "1.2",
                       "--repeat-last-n", "8", "--seed", "5"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, expected_answer(m, "Name a color.", "", 16, mp) + "\n");
  r = test::run_llmft({"generate", "--model", m.dir.string(), "x", "--min-p", "2"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(r.err.starts_with("llmft: error: --min-p 2 is invalid: expected a value in [0, 1]"))
      << r.err;
}

// Sampling without --seed draws a fresh seed and says which; that seed repeats the output. Greedy
// needs no seed and stays deterministic.
TEST(GenerateCli, SamplingWithoutSeedPrintsTheSeedItUsed) {
  TinyModel m;
  const std::vector<std::string> args = {"generate",      "--model", m.dir.string(),
                                         "Name a color.", "--temperature", "2",
                                         "--max-new-tokens", "16"};
  const auto a = test::run_llmft(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const std::string prefix = "sampling with seed ";
  ASSERT_TRUE(a.err.starts_with(prefix)) << a.err;
  const std::string seed = a.err.substr(prefix.size(), a.err.find(' ', prefix.size()) - prefix.size());
  const auto b = test::run_llmft(args);
  ASSERT_TRUE(b.err.starts_with(prefix)) << b.err;
  EXPECT_NE(b.err, a.err);  // another seed (the same one twice: 1 in 2^64)
  auto again = args;
  again.insert(again.end(), {"--seed", seed});
  const auto c = test::run_llmft(again);
  EXPECT_EQ(c.out, a.out);
  EXPECT_EQ(c.err, "");
  const auto g1 = test::run_llmft(
      {"generate", "--model", m.dir.string(), "Name a color.", "--max-new-tokens", "16"});
  const auto g2 = test::run_llmft(
      {"generate", "--model", m.dir.string(), "Name a color.", "--max-new-tokens", "16"});
  EXPECT_EQ(g1.out, g2.out);
  EXPECT_EQ(g1.err, "");
}

TEST(GenerateCli, ReadsThePromptFromStdinOrAFile) {
  TinyModel m;
  const std::string want = expected_answer(m, "Name a color.", "", 10) + "\n";
  auto r = test::run_llmft({"generate", "--model", m.dir.string(), "-", "--max-new-tokens", "10"},
                           "Name a color.\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, want);
  test::TempDir t;
  write_file_atomic(t / "prompt.txt", std::string_view("Name a color.\n"));
  r = test::run_llmft({"generate", "--model", m.dir.string(), "-f", (t / "prompt.txt").string(),
                       "--max-new-tokens", "10"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, want);
  r = test::run_llmft({"generate", "--model", m.dir.string(), "-"}, "\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err.substr(0, r.err.find('\n')), "llmft: error: the instruction read from stdin is empty");
}

TEST(GenerateCli, WarnsWhenTheAnswerCannotFitTheContextAndTimesWithVerbose) {
  TinyModel m;  // 64-token context
  const auto r = test::run_llmft({"generate", "--model", m.dir.string(), "Name a color.",
                                  "--max-new-tokens", "80", "--verbose"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto n = static_cast<int64_t>(
      tokenizer()
          .encode(format_prompt(PromptTemplate::kAlpaca, "Name a color.", ""), SpecialTokens::kAllow)
          .size());
  EXPECT_NE(r.err.find(fmt::format("warning: --max-new-tokens 80 is more than the {} tokens left "
                                   "in the model's 64-token context after the {}-token prompt",
                                   64 - n, n)),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.out, expected_answer(m, "Name a color.", "", 80) + "\n");
  // Within the context: no warning; --verbose counts the prompt's tokens, then 19 decode steps
  // after the one that read the prompt.
  const auto v = test::run_llmft({"generate", "--model", m.dir.string(), "Name a color.",
                                  "--max-new-tokens", "20", "--verbose"});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  EXPECT_EQ(v.err.find("warning"), std::string::npos) << v.err;
  EXPECT_TRUE(v.err.starts_with(fmt::format("prompt: {} tokens in ", n))) << v.err;
  EXPECT_NE(v.err.find(" tokens/s); decode: 19 tokens in "), std::string::npos) << v.err;
  EXPECT_NE(v.err.find("; 20 new tokens in all\n"), std::string::npos) << v.err;
}

// Ctrl-C (here the hidden --interrupt-after-answers hook) writes the answers finished so far; a
// rerun with the same --output keeps them, answers only the others and ends with the file an
// uninterrupted run writes; a finished output is not redone.
TEST(GenerateCli, DatasetRunResumesAfterCtrlC) {
  TinyModel m;
  test::TempDir t;
  std::string data = "[";
  for (int i = 0; i < 6; ++i)
    data += fmt::format("{}{{\"instruction\": \"Task {}.\", \"input\": \"\", \"output\": \"x\"}}",
                        i ? ", " : "", i);
  write_file_atomic(t / "data.json", data + "]");
  auto args = [&](const std::filesystem::path& out, std::vector<std::string> extra = {}) {
    std::vector<std::string> a = {"generate", "--model", m.dir.string(), "--data",
                                  (t / "data.json").string(), "--output", out.string(),
                                  "--batch-size", "2", "--max-new-tokens", "10"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  const auto full = test::run_llmft(args(t / "full.json"));
  ASSERT_EQ(full.exit_code, 0) << full.err;
  const std::string want = read_file(t / "full.json");

  const auto cut = test::run_llmft(args(t / "part.json", {"--interrupt-after-answers", "2"}));
  ASSERT_EQ(cut.exit_code, 130) << cut.out << cut.err;
  auto part = nlohmann::ordered_json::parse(read_file(t / "part.json"));
  ASSERT_EQ(part.size(), 6u);
  size_t kept = 0;
  for (auto& e : part) {
    if (!e.contains("model_response")) continue;
    e["model_response"] = fmt::format("kept {}", kept++);  // a rerun must not regenerate these
  }
  ASSERT_GE(kept, 2u);
  ASSERT_LT(kept, 6u);
  EXPECT_NE(cut.out.find(fmt::format("stopped: {} of 6 entries answered", kept)),
            std::string::npos)
      << cut.out;
  write_file_atomic(t / "marked.json", dump_answers(part));

  // The interrupted file, rerun: byte for byte what the uninterrupted run wrote.
  const auto again = test::run_llmft(args(t / "part.json"));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find(fmt::format("keeping {} answers of an earlier run", kept)),
            std::string::npos)
      << again.out;
  EXPECT_NE(again.out.find(fmt::format("answering the other {}", 6 - kept)), std::string::npos)
      << again.out;
  EXPECT_EQ(read_file(t / "part.json"), want);

  // The kept answers are not asked again: the marked ones survive, the rest are the real answers.
  const auto marked = test::run_llmft(args(t / "marked.json"));
  ASSERT_EQ(marked.exit_code, 0) << marked.err;
  const auto got = nlohmann::ordered_json::parse(read_file(t / "marked.json"));
  const auto ref = nlohmann::ordered_json::parse(want);
  size_t seen = 0;
  for (size_t i = 0; i < 6; ++i) {
    if (part[i].contains("model_response")) {
      EXPECT_EQ(got[i]["model_response"], fmt::format("kept {}", seen++));
    } else {
      EXPECT_EQ(got[i], ref[i]);
    }
  }

  // A finished output is not redone; --no-resume answers everything again.
  const auto done = test::run_llmft(args(t / "marked.json"));
  ASSERT_EQ(done.exit_code, 0) << done.err;
  EXPECT_NE(done.out.find("already holds all 6 answers; nothing to do"), std::string::npos)
      << done.out;
  EXPECT_EQ(read_file(t / "marked.json"), dump_answers(got));
  const auto redo = test::run_llmft(args(t / "marked.json", {"--no-resume"}));
  ASSERT_EQ(redo.exit_code, 0) << redo.err;
  EXPECT_EQ(read_file(t / "marked.json"), want);

  // An output written for other entries is never overwritten.
  write_file_atomic(t / "other.json", "[{\"instruction\": \"a\", \"input\": \"\", \"output\": "
                                      "\"b\", \"model_response\": \"c\"}]");
  const auto other = test::run_llmft(args(t / "other.json"));
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("does not hold the 6 entries"), std::string::npos) << other.err;
}
