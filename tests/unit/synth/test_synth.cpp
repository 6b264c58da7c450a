// llmft synth against real HTTP servers on 127.0.0.1 (fake_judge.h): the raw-completion and chat
// requests byte for byte, both APIs streamed and not, retries, garbled and empty replies that cost
// an attempt, losing the server and resuming, the near-duplicate filter, and the CLI.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "fake_judge.h"
#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "llmft/synth/synth.h"
#include "test_util.h"

namespace llmft {
namespace {

using nlohmann::json;
using test::FakeJudge;
using test::TempDir;

struct Job {
  TempDir dir;
  std::vector<std::string> reports;
  SynthOptions o;
  Job(const std::string& url, int64_t count) {
    o.server.url = url;
    o.server.progress = false;
    o.server.connect_timeout_s = 2;
    o.server.read_timeout_s = 5;
    o.server.retry_base_s = 0.01;
    o.server.retry_max_s = 0.05;
    o.server.on_report = [this](const std::string& l) { reports.push_back(l); };
    o.count = count;
    o.output = dir / "synth.json";
  }
  json output() const { return json::parse(read_file(o.output)); }
  bool reported(const std::string& needle) const {
    for (const auto& r : reports) {
      if (r.find(needle) != std::string::npos) return true;
    }
    return false;
  }
};

// Chat replies "Answer to <message>".
void answer_with_prefix(FakeJudge& srv) {
  srv.chat = [](const FakeJudge::Chat& c, const httplib::Request& req, httplib::Response& res) {
    FakeJudge::reply(req, res, c.body.value("stream", true), "Answer to " + c.response + "\n");
    return true;
  };
}

std::vector<std::string> instructions(const json& out) {
  std::vector<std::string> v;
  for (const auto& e : out) v.push_back(e["instruction"]);
  return v;
}

TEST(SynthExtract, FirstNonEmptyLineTrimmed) {
  EXPECT_EQ(extract_instruction("\n\n  What is 2+2?  \nMore text"), "What is 2+2?");
  EXPECT_EQ(extract_instruction("One line"), "One line");
  EXPECT_EQ(extract_instruction("\r\n\t\r\nx\r\n"), "x");
  EXPECT_EQ(extract_instruction(" \n \n"), "");
  EXPECT_EQ(extract_instruction(""), "");
}

TEST(SynthServer, OllamaRawHeaderThenChatExactBodies) {
  FakeJudge srv;
  answer_with_prefix(srv);
  Job j(srv.url(), 3);
  const SynthSummary s = synth_dataset(j.o);
  EXPECT_EQ(s.written, 3);
  EXPECT_EQ(s.attempts, 3);
  EXPECT_EQ(s.requests, 6);
  const json out = j.output();
  ASSERT_EQ(out.size(), 3u);
  for (int k = 0; k < 3; ++k) {
    const std::string instr = "Instruction " + std::to_string(123 + k) + ".";
    EXPECT_EQ(out[k]["instruction"], instr);
    EXPECT_EQ(out[k]["input"], "");
    EXPECT_EQ(out[k]["output"], "Answer to " + instr);  // trimmed
    EXPECT_EQ(out[k]["synth_seed"], 123 + k);
  }
  // The file is an Alpaca dataset the loader accepts, keys in order.
  EXPECT_EQ(load_dataset(j.o.output).size(), 3u);
  EXPECT_EQ(read_file(j.o.output).rfind("[\n    {\n        \"instruction\": \"Instruction 123.\",\n"
                                        "        \"input\": \"\",\n        \"output\": ",
                                        0),
            0u);
  const std::vector<std::string> sent = srv.bodies();
  const std::set<std::string> bodies(sent.begin(), sent.end());
  EXPECT_TRUE(bodies.count(
      R"({"model":"llama3","prompt":"<|begin_of_text|><|start_header_id|>user<|end_header_id|>","raw":true,)"
      R"("options":{"seed":123,"temperature":1.0,"top_p":1.0,"num_predict":256},"stream":true})"))
      << *bodies.begin();
  EXPECT_TRUE(bodies.count(
      R"({"model":"llama3","messages":[{"role":"user","content":"Instruction 124."}],)"
      R"("options":{"seed":124,"temperature":1.0,"top_p":1.0},"stream":true})"));
}

class SynthOpenAi : public ::testing::TestWithParam<bool> {};

TEST_P(SynthOpenAi, CompletionsThenChatCompletions) {
  FakeJudge srv;
  answer_with_prefix(srv);
  Job j(srv.url() + "/v1", 2);
  j.o.server.api = JudgeApi::kOpenAi;
  j.o.server.stream = GetParam();
  j.o.header = "<|user|>\n";
  j.o.seed = 7;
  const SynthSummary s = synth_dataset(j.o);
  EXPECT_EQ(s.written, 2);
  EXPECT_EQ(instructions(j.output()), (std::vector<std::string>{"Instruction 7.", "Instruction 8."}));
  EXPECT_EQ(j.output()[1]["output"], "Answer to Instruction 8.");
  const std::vector<std::string> sent = srv.bodies();
  const std::set<std::string> bodies(sent.begin(), sent.end());
  const std::string stream = GetParam() ? "true" : "false";
  EXPECT_TRUE(bodies.count(R"({"model":"llama3","prompt":"<|user|>\n","max_tokens":256,"temperature":1.0,)"
                           R"("top_p":1.0,"seed":7,"stream":)" + stream + "}"));
}

INSTANTIATE_TEST_SUITE_P(StreamedAndNot, SynthOpenAi, ::testing::Bool());

TEST(SynthServer, ServerErrorsAreRetried) {
  FakeJudge srv;
  srv.generate = [](const FakeJudge::Generate& g, const httplib::Request&, httplib::Response& res) {
    if (g.n > 2) return false;
    res.status = 503;
    res.set_content(R"({"error":"busy"})", "application/json");
    return true;
  };
  Job j(srv.url(), 2);
  const SynthSummary s = synth_dataset(j.o);
  EXPECT_EQ(s.written, 2);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(srv.generate_requests, 4);
  EXPECT_TRUE(j.reported("seed 123: HTTP 503")) << j.reports.size();  // the pool names the seed
  EXPECT_TRUE(j.reported("retrying in"));
}

TEST(SynthServer, GarbledAndEmptyRepliesCostAnAttemptAndMoreAreMade) {
  FakeJudge srv;
  srv.generate = [](const FakeJudge::Generate& g, const httplib::Request& req, httplib::Response& res) {
    if (g.seed == 124) {  // a stream without its final "done": true line
      FakeJudge::send_chunks(res, "application/x-ndjson", {R"({"response":"Half","done":false})" "\n"});
      return true;
    }
    if (g.seed == 125) {  // nothing but blank lines
      FakeJudge::reply(req, res, true, "\n  \n");
      return true;
    }
    return false;
  };
  Job j(srv.url(), 3);
  j.o.server.concurrency = 2;
  const SynthSummary s = synth_dataset(j.o);
  EXPECT_EQ(s.written, 3);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.empty, 1);
  EXPECT_EQ(s.attempts, 5);  // round 1: 123-125, round 2: 126-127
  EXPECT_EQ(instructions(j.output()),
            (std::vector<std::string>{"Instruction 123.", "Instruction 126.", "Instruction 127."}));
  EXPECT_TRUE(j.reported("seed 124: failed, left out: the streamed reply ended without \"done\": true"));
  EXPECT_TRUE(j.reported("seed 125: empty instruction, left out"));
}

TEST(SynthServer, AttemptsRunOutIsReportedNotLooped) {
  FakeJudge srv;
  srv.generate = [](const FakeJudge::Generate&, const httplib::Request& req, httplib::Response& res) {
    FakeJudge::reply(req, res, true, "");
    return true;
  };
  Job j(srv.url(), 2);
  j.o.max_attempts = 5;
  const SynthSummary s = synth_dataset(j.o);
  EXPECT_EQ(s.written, 0);
  EXPECT_EQ(s.attempts, 5);
  EXPECT_EQ(s.empty, 5);
  EXPECT_EQ(j.output(), json::array());
}

TEST(SynthServer, ServerGoesAwayThenResumeMakesOnlyTheRest) {
  TempDir keep;
  const auto out = keep / "synth.json";
  {
    FakeJudge srv;
    srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request&, httplib::Response& res) {
      if (c.n < 3) return false;
      srv.stop_listening();
      res.status = 500;
      return true;
    };
    Job j(srv.url(), 5);
    j.o.output = out;
    j.o.server.max_retries = 2;
    try {
      synth_dataset(j.o);
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      const std::string w = e.what();
      EXPECT_NE(w.find("lost the server at " + srv.url() + ": seed 125: "), std::string::npos) << w;
      EXPECT_NE(w.find("2 of 5 entries are in"), std::string::npos) << w;
      EXPECT_NE(e.hint().find("rerun the same command"), std::string::npos);
    }
    EXPECT_EQ(json::parse(read_file(out)).size(), 2u);
  }
  FakeJudge again;
  Job j(again.url(), 5);
  j.o.output = out;
  const SynthSummary s = synth_dataset(j.o);
  EXPECT_EQ(s.resumed, 2);
  EXPECT_EQ(s.written, 5);
  EXPECT_EQ(again.generate_requests, 3);
  // Seeds continue after the kept entries' largest (125 gave nothing), so nothing is made twice.
  EXPECT_EQ(instructions(j.output()),
            (std::vector<std::string>{"Instruction 123.", "Instruction 124.", "Instruction 125.",
                                      "Instruction 126.", "Instruction 127."}));
}

TEST(SynthServer, ResumeRefusesAFileNotWrittenBySynth) {
  FakeJudge srv;
  Job j(srv.url(), 2);
  write_file_atomic(j.o.output, R"([{"instruction":"a","input":"","output":"b"}])");
  try {
    synth_dataset(j.o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("entry 0 has no \"synth_seed\""), std::string::npos) << e.what();
  }
  EXPECT_EQ(srv.generate_requests, 0);
  j.o.resume = false;
  EXPECT_EQ(synth_dataset(j.o).written, 2);
}

TEST(SynthDedup, NearDuplicatesOfEachOtherAndOfExistingDataAreReplaced) {
  FakeJudge srv;
  // Seeds 123-125 repeat one instruction (case and punctuation aside); 126 copies existing data.
  srv.generate = [](const FakeJudge::Generate& g, const httplib::Request& req, httplib::Response& res) {
    std::string text;
    if (g.seed == 123) text = "Name three primary colors.";
    if (g.seed == 124) text = "Name three primary colors?";
    if (g.seed == 125) text = "name three primary colors";
    if (g.seed == 126) text = "Explain how a rainbow forms in the sky.";
    if (text.empty()) return false;
    FakeJudge::reply(req, res, false, text);
    return true;
  };
  Job j(srv.url(), 3);
  write_file_atomic(j.dir / "existing.json",
                    R"([{"instruction":"Explain how a rainbow forms in the sky?","input":"","output":"x"}])");
  j.o.dedup_against = {j.dir / "existing.json"};
  const SynthSummary s = synth_dataset(j.o);
  EXPECT_EQ(s.written, 3);
  EXPECT_EQ(s.duplicates, 3);  // 124, 125 and 126
  EXPECT_EQ(instructions(j.output()),
            (std::vector<std::string>{"Name three primary colors.", "Instruction 127.", "Instruction 128."}));
}

TEST(SynthCli, WritesTheFileAndPrintsASummary) {
  FakeJudge srv;
  TempDir d;
  const auto r = test::run_llmft({"synth", "--url", srv.url(), "--count", "2", "--output",
                                  (d / "s.json").string(), "--concurrency", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Entries: 2 of 2 in " + (d / "s.json").string()), std::string::npos) << r.out;
  EXPECT_EQ(json::parse(read_file(d / "s.json")).size(), 2u);
  const auto bad = test::run_llmft({"synth", "--url", srv.url(), "--count", "0", "--output",
                                    (d / "s.json").string()});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_NE(bad.err.find("--count 0: expected 1 or more"), std::string::npos) << bad.err;
  const auto gone = test::run_llmft({"synth", "--url", "http://127.0.0.1:1", "--count", "1",
                                     "--output", (d / "t.json").string()});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_NE(gone.err.find("cannot reach"), std::string::npos) << gone.err;
  EXPECT_FALSE(std::filesystem::exists(d / "t.json"));
}

}  // namespace
}  // namespace llmft
