// llmft prefs against real HTTP servers on 127.0.0.1 (fake_judge.h): the reference's rewrite
// prompt byte for byte, the seeded polite/impolite choice, chosen/rejected assignment, both APIs,
// a faulty server (5xx beyond the retries, a timeout then success, losing the server) with a
// resume that asks only what is missing, a refused output of another input, and the CLI.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "fake_judge.h"
#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/judge/prefs.h"
#include "test_util.h"

namespace llmft {
namespace {

using nlohmann::json;
using test::FakeJudge;
using test::TempDir;

void write_data(const std::filesystem::path& p, int n) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (int i = 0; i < n; ++i) {
    a.push_back({{"instruction", "Do " + std::to_string(i)},
                 {"input", i % 2 ? "" : "x" + std::to_string(i)},
                 {"output", "out " + std::to_string(i)}});
  }
  write_file_atomic(p, a.dump(4));
}

// The fake judge's rewrite: which way it was asked, and of which entry ("Do <i>").
std::string rewrite_of(const std::string& prompt) {
  const bool polite = prompt.find("to be more polite.") != std::string::npos;
  const size_t p = prompt.find("### Instruction:\nDo ") + 20;
  return (polite ? "Kindly, " : "Ugh, ") + prompt.substr(p, prompt.find_first_of("`\n", p) - p);
}

struct Job {
  TempDir dir;
  std::vector<std::string> reports;
  PrefsOptions o;
  explicit Job(const std::string& url, int n) {
    o.judge.url = url;
    o.judge.input = dir / "data.json";
    o.judge.output = dir / "prefs.json";
    o.judge.progress = false;
    o.judge.connect_timeout_s = 2;
    o.judge.read_timeout_s = 5;
    o.judge.retry_base_s = 0.01;
    o.judge.retry_max_s = 0.05;
    o.judge.on_report = [this](const std::string& l) { reports.push_back(l); };
    write_data(o.judge.input, n);
  }
  json output() const { return json::parse(read_file(o.judge.output)); }
};

FakeJudge::ChatHook rewriter() {
  return [](const FakeJudge::Chat& c, const httplib::Request& req, httplib::Response& res) {
    FakeJudge::reply(req, res, c.body.value("stream", true), rewrite_of(c.content()));
    return true;
  };
}

TEST(Prefs, PromptIsTheReferencesText) {
  EXPECT_EQ(prefs_prompt("Fix it.", "", "Done.", true),
            "Given the input `Below is an instruction that describes a task. Write a response that "
            "appropriately completes the request.\n\n### Instruction:\nFix it.` and correct output "
            "`Done.`, slightly rewrite the output to be more polite.Keep the modification "
            "minimal.Only return return the generated response and nothing else.");
  EXPECT_NE(prefs_prompt("a", "b", "c", false).find("### Input:\nb` and correct output `c`, "
                                                    "slightly rewrite the output to be more "
                                                    "impolite."),
            std::string::npos);
}

TEST(Prefs, ChoiceIsSeededPerEntryAndMixed) {
  std::vector<bool> a, b, c;
  for (size_t i = 0; i < 64; ++i) {
    a.push_back(prefs_polite(123, i));
    b.push_back(prefs_polite(123, i));
    c.push_back(prefs_polite(124, i));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  const auto polite = std::count(a.begin(), a.end(), true);
  EXPECT_GT(polite, 16);  // a fair coin: 32 +- 4 sd
  EXPECT_LT(polite, 48);
}

TEST(Prefs, PoliterTextBecomesChosenOverBothApisStreamedAndNot) {
  for (const auto& [api, stream] : {std::pair{JudgeApi::kOllama, true},
                                    std::pair{JudgeApi::kOpenAi, false}}) {
    FakeJudge srv;
    srv.chat = rewriter();
    Job j(srv.url(), 10);
    j.o.judge.api = api;
    j.o.judge.stream = stream;
    j.o.judge.concurrency = 3;
    const PrefsSummary s = build_preferences(j.o);
    EXPECT_EQ(s.polite + s.impolite, 10);
    EXPECT_GT(s.polite, 0);
    EXPECT_GT(s.impolite, 0);
    EXPECT_EQ(srv.chat_requests, 10);
    const json out = j.output();
    ASSERT_EQ(out.size(), 10u);
    for (size_t i = 0; i < 10; ++i) {
      const std::string original = "out " + std::to_string(i);
      const std::string n = std::to_string(i);
      if (prefs_polite(123, i)) {
        EXPECT_EQ(out[i]["politeness"], "polite");
        EXPECT_EQ(out[i]["chosen"], "Kindly, " + n);
        EXPECT_EQ(out[i]["rejected"], original);
      } else {
        EXPECT_EQ(out[i]["politeness"], "impolite");
        EXPECT_EQ(out[i]["chosen"], original);
        EXPECT_EQ(out[i]["rejected"], "Ugh, " + n);
      }
      EXPECT_EQ(out[i]["instruction"], "Do " + n);  // original fields kept, in order
    }
    // The request: the judge's model, seed 123 and temperature 0, the prompt of entry 0.
    bool seen = false;
    for (const auto& b : srv.bodies()) {
      const json body = json::parse(b);
      if (!body.contains("messages")) continue;
      const std::string want =
          prefs_prompt("Do 0", "x0", "out 0", prefs_polite(123, 0));
      if (body["messages"][0]["content"] != want) continue;
      seen = true;
      EXPECT_EQ(body["model"], "llama3");
      if (api == JudgeApi::kOllama) {
        EXPECT_EQ(body["options"]["seed"], 123);
        EXPECT_EQ(body["options"]["temperature"], 0);
      }
    }
    EXPECT_TRUE(seen);
  }
}

TEST(Prefs, FailedEntriesAreLeftOutAndTheRerunAsksOnlyThem) {
  TempDir keep;
  {
    // Entry 2 always gets HTTP 500 (beyond the retries); entry 4's first request hangs until its
    // retry arrives, which only the client's read timeout can cause. (Declared before the server,
    // whose threads use them, so they outlive it.)
    std::atomic<int> asks4{0};
    test::Gate gate;
    FakeJudge srv;
    srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request& req, httplib::Response& res) {
      const std::string p = c.content();
      if (p.find("Instruction:\nDo 2\n") != std::string::npos) {
        res.status = 500;
        return true;
      }
      if (p.find("Instruction:\nDo 4\n") != std::string::npos) {
        if (asks4++ == 0) {
          gate.wait();
        } else {
          gate.open();
        }
      }
      FakeJudge::reply(req, res, c.body.value("stream", true), rewrite_of(p));
      return true;
    };
    Job j(srv.url(), 6);
    j.o.judge.output = keep / "prefs.json";
    j.o.judge.max_retries = 2;
    j.o.judge.read_timeout_s = 0.5;
    const PrefsSummary s = build_preferences(j.o);
    EXPECT_EQ(s.failed, 1);
    EXPECT_EQ(s.polite + s.impolite, 5);
    const json out = j.output();
    EXPECT_FALSE(out[2].contains("chosen"));
    EXPECT_NE(out[2]["prefs_error"].get<std::string>().find("500"), std::string::npos);
    EXPECT_TRUE(out[4].contains("chosen"));
    EXPECT_EQ(asks4, 2);
    gate.open();
    write_data(keep / "data.json", 6);
  }
  FakeJudge again;
  again.chat = rewriter();
  Job j(again.url(), 6);
  j.o.judge.output = keep / "prefs.json";
  const PrefsSummary s = build_preferences(j.o);
  EXPECT_EQ(again.chat_requests, 1);  // entry 2 only
  EXPECT_EQ(s.resumed, 5);
  EXPECT_EQ(s.failed, 0);
  EXPECT_TRUE(j.output()[2].contains("chosen"));
}

TEST(Prefs, LosingTheServerSavesWhatIsDoneAndTheRerunFinishes) {
  TempDir keep;
  {
    FakeJudge srv;
    srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request& req, httplib::Response& res) {
      if (c.n < 4) {
        FakeJudge::reply(req, res, true, rewrite_of(c.content()));
        return true;
      }
      srv.stop_listening();
      res.status = 500;
      return true;
    };
    Job j(srv.url(), 7);
    j.o.judge.output = keep / "prefs.json";
    j.o.judge.max_retries = 1;
    try {
      build_preferences(j.o);
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("lost the judge server"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("3 of 7 entries are done"), std::string::npos)
          << e.what();
    }
  }
  FakeJudge again;
  again.chat = rewriter();
  Job j(again.url(), 7);
  j.o.judge.output = keep / "prefs.json";
  const PrefsSummary s = build_preferences(j.o);
  EXPECT_EQ(again.chat_requests, 4);
  EXPECT_EQ(s.resumed, 3);
  const json out = j.output();
  for (size_t i = 0; i < 7; ++i) EXPECT_TRUE(out[i].contains("chosen")) << i;
}

TEST(Prefs, RefusesAnOutputOfAnotherInputAndADownServer) {
  FakeJudge srv;
  srv.chat = rewriter();
  Job j(srv.url(), 3);
  write_file_atomic(j.o.judge.output, R"([{"instruction":"x","input":"","output":"y"}])");
  EXPECT_THROW(build_preferences(j.o), Error);
  EXPECT_EQ(srv.chat_requests, 0);
  std::filesystem::remove(j.o.judge.output);
  j.o.judge.model = "missing-model";
  try {
    build_preferences(j.o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing-model"), std::string::npos) << e.what();
  }
}

TEST(PrefsCli, WritesTheFileAndPrintsTheSummary) {
  FakeJudge srv;
  srv.chat = rewriter();
  TempDir d;
  write_data(d / "data.json", 5);
  const auto r = test::run_llmft({"prefs", "--data", (d / "data.json").string(), "--url",
                                  srv.url(), "--model", "llama3", "-o", (d / "p.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Preference pairs: 5 of 5"), std::string::npos) << r.out;
  const json out = json::parse(read_file(d / "p.json"));
  EXPECT_EQ(out.size(), 5u);
  // A second run has nothing left to ask.
  const auto again = test::run_llmft({"prefs", "--data", (d / "data.json").string(), "--url",
                                      srv.url(), "-o", (d / "p.json").string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(srv.chat_requests, 5);
  // Bad input: one line, exit 1; a missing option: usage, exit 2.
  write_file_atomic(d / "bad.json", R"([{"instruction": 3}])");
  const auto bad = test::run_llmft({"prefs", "--data", (d / "bad.json").string(), "--url",
                                    srv.url(), "-o", (d / "q.json").string()});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("entry 0"), std::string::npos) << bad.err;
  EXPECT_EQ(test::run_llmft({"prefs", "--data", (d / "data.json").string()}).exit_code, 2);
}

}  // namespace
}  // namespace llmft
