// `llmft judge` end to end: the built binary against a real judge server on 127.0.0.1, checking
// the printed report, the written file, exit codes and that the API key never leaks.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "fake_judge.h"
#include "llmft/core/io.h"
#include "test_util.h"

namespace llmft {
namespace {

using nlohmann::json;
using test::FakeJudge;
using test::run_llmft;
using test::TempDir;

void write_answers(const std::filesystem::path& p, const std::vector<std::string>& responses) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (size_t i = 0; i < responses.size(); ++i) {
    a.push_back({{"instruction", "Say " + std::to_string(i)},
                 {"input", i % 2 ? "" : "x"},
                 {"output", std::to_string(i)},
                 {"model_response", responses[i]}});
  }
  write_file_atomic(p, a.dump(4));
}

TEST(JudgeCli, OllamaScoresPrintsReportAndWritesFile) {
  FakeJudge srv;
  TempDir d;
  write_answers(d / "answers.json", {"85", " 60\n", "", "eighty", "100"});
  const auto r = run_llmft({"judge", "--input", (d / "answers.json").string(), "--output",
                            (d / "scored.json").string(), "--url", srv.url()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Number of scores: 4 of 5\nAverage score: 61.25\n"
                       "Min / median / max: 0 / 72.5 / 100\nHistogram:\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("    0-9       1 ########################################\n"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("   90-100     1 ####"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Empty answers scored 0 without asking: 1\n"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("entry 3: judge reply is not an integer 0-100 (--lenient takes the first "
                       "number 0-100 in it), left out: \"eighty\""),
            std::string::npos)
      << r.err;
  EXPECT_EQ(srv.chat_requests, 4);
  const json out = json::parse(read_file(d / "scored.json"));
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out[0]["score"], 85);
  EXPECT_EQ(out[1]["judge_reply"], " 60\n");
  EXPECT_EQ(out[2]["judge_status"], "empty");
  EXPECT_TRUE(out[3]["score"].is_null());
  EXPECT_EQ(out[4]["score"], 100);
  EXPECT_EQ(read_file(d / "scored.json").rfind("[\n    {\n        \"instruction\": \"Say 0\",", 0), 0u);

  // Same command again: everything is already scored, nothing is asked.
  const auto again = run_llmft({"judge", "--input", (d / "answers.json").string(), "--output",
                                (d / "scored.json").string(), "--url", srv.url()});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(srv.chat_requests, 4);
  EXPECT_NE(again.out.find("Average score: 61.25\n"), std::string::npos);
}

TEST(JudgeCli, OpenAiKeyIsSentButNeverShown) {
  FakeJudge srv;
  srv.models = {"judge-7b"};
  srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request& req, httplib::Response& res) {
    if (c.response != "echo") return false;
    res.status = 400;  // a server that echoes the header in its error
    res.set_content("{\"error\":{\"message\":\"bad: " + req.get_header_value("Authorization") + "\"}}",
                    "application/json");
    return true;
  };
  TempDir d;
  write_answers(d / "answers.json", {"40", "echo", "80"});
  const std::string key = "sk-e2e-TOPSECRET-987";
  const auto r = run_llmft({"judge", "-i", (d / "answers.json").string(), "--url", srv.url(),
                            "--api", "openai", "--model", "judge-7b", "--api-key-env", "MY_JUDGE_KEY",
                            "--no-stream", "--max-retries", "0"},
                           "", {"MY_JUDGE_KEY=" + key});
  EXPECT_EQ(r.exit_code, 1) << r.err;  // one entry failed
  EXPECT_NE(r.out.find("Number of scores: 2 of 3\nAverage score: 60.00\n"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("entry 1: failed, left out: HTTP 400"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("rerun the same command"), std::string::npos) << r.err;
  for (const auto& h : srv.auth_headers()) EXPECT_EQ(h, "Bearer " + key);
  EXPECT_EQ(json::parse(srv.bodies()[0])["stream"], false);
  const std::string file = read_file(d / "answers-scored.json");  // the default output name
  for (const std::string* s : {&r.out, &r.err, &file}) EXPECT_EQ(s->find(key), std::string::npos) << *s;
  EXPECT_NE(r.err.find("Bearer ***"), std::string::npos) << r.err;

  const auto unset = run_llmft({"judge", "-i", (d / "answers.json").string(), "--url", srv.url(),
                                "--api", "openai", "--api-key-env", "NOT_SET_ANYWHERE"});
  EXPECT_EQ(unset.exit_code, 2);
  EXPECT_NE(unset.err.find("environment variable NOT_SET_ANYWHERE (--api-key-env) is not set"),
            std::string::npos)
      << unset.err;
}

TEST(JudgeCli, MissingModelOrServerIsOneClearLine) {
  FakeJudge srv;
  srv.models = {"mistral:latest"};
  TempDir d;
  write_answers(d / "answers.json", {"40"});
  const auto r = run_llmft({"judge", "--input", (d / "answers.json").string(), "--url", srv.url()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "llmft: error: model \"llama3\" is not on the Ollama server at " + srv.url() +
                       " (it has: mistral:latest); pull it with `ollama pull llama3`, or pass --model\n");
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(srv.chat_requests, 0);
  const std::string url = srv.url();
  srv.stop();
  const auto down = run_llmft({"judge", "--input", (d / "answers.json").string(), "--url", url});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.err.find("llmft: error: cannot reach the Ollama judge server at " + url), std::string::npos)
      << down.err;
  EXPECT_NE(down.err.find("start it with `ollama serve`"), std::string::npos) << down.err;
}

TEST(JudgeCli, CompareTwoFiles) {
  FakeJudge srv;
  TempDir d;
  write_answers(d / "a.json", {"90", "20", "50"});
  write_answers(d / "b.json", {"70", "60", "50"});
  const auto r = run_llmft({"judge", "--compare", (d / "a.json").string(), (d / "b.json").string(),
                            "--url", srv.url(), "--concurrency", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Average score: A 53.33 / B 60.00\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("A wins: 1 (33.3%), B wins: 1 (33.3%), ties: 1 (33.3%)\n"), std::string::npos)
      << r.out;
  EXPECT_TRUE(std::filesystem::exists(d / "a-scored.json"));
  EXPECT_TRUE(std::filesystem::exists(d / "b-scored.json"));

  write_answers(d / "c.json", {"1", "2"});
  const auto bad = run_llmft({"judge", "--compare", (d / "a.json").string(), (d / "c.json").string(),
                              "--url", srv.url()});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("has 3 entries but"), std::string::npos) << bad.err;
  EXPECT_EQ(srv.chat_requests, 6);
}

TEST(JudgeCli, UsageErrors) {
  EXPECT_EQ(run_llmft({"judge"}).exit_code, 2);
  EXPECT_EQ(run_llmft({"judge", "--input", "x.json", "--concurrency", "0"}).exit_code, 2);
  EXPECT_EQ(run_llmft({"judge", "--input", "x.json", "--api", "claude"}).exit_code, 2);
  const auto help = run_llmft({"judge", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("http://localhost:11434"), std::string::npos) << help.out;
}

}  // namespace
}  // namespace llmft
