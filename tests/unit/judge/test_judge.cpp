// llmft judge against real HTTP servers on 127.0.0.1 (fake_judge.h): prompt bytes and options,
// both APIs streamed and not, timeouts, retries, Retry-After, garbled streams, losing the server
// and resuming, concurrency, --compare. Plus the prompt, score parsing and statistics.
#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "fake_judge.h"
#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/judge/client.h"
#include "llmft/judge/judge.h"
#include "llmft/judge/prompt.h"
#include "test_util.h"

namespace llmft {
namespace {

using nlohmann::json;
using test::FakeJudge;
using test::TempDir;

struct E {
  std::string instruction, input, output, response;
};

void write_entries(const std::filesystem::path& p, const std::vector<E>& es) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (const auto& e : es) {
    a.push_back({{"instruction", e.instruction}, {"input", e.input}, {"output", e.output},
                 {"model_response", e.response}, {"extra", 7}});
  }
  write_file_atomic(p, a.dump(4));
}

std::vector<E> numbered(int n, const std::vector<std::string>& responses) {
  std::vector<E> es;
  for (int i = 0; i < n; ++i) {
    es.push_back({"Instruction " + std::to_string(i), i % 2 ? "" : "in " + std::to_string(i),
                  "out " + std::to_string(i), responses[i % responses.size()]});
  }
  return es;
}

struct Job {
  TempDir dir;
  std::vector<std::string> reports;
  JudgeOptions o;
  explicit Job(const std::string& url) {
    o.url = url;
    o.input = dir / "answers.json";
    o.output = dir / "scored.json";
    o.progress = false;
    o.connect_timeout_s = 2;
    o.read_timeout_s = 5;
    o.retry_base_s = 0.01;
    o.retry_max_s = 0.05;
    o.on_report = [this](const std::string& l) { reports.push_back(l); };
  }
  json output() const { return json::parse(read_file(o.output)); }
  bool reported(const std::string& needle) const {
    for (const auto& r : reports) {
      if (r.find(needle) != std::string::npos) return true;
    }
    return false;
  }
};

std::string all_lines(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& l : v) s += l + "\n";
  return s;
}

// ---- prompt, parsing, statistics -------------------------------------------------------------

TEST(JudgePrompt, NoInputSectionWhenInputIsEmpty) {
  EXPECT_EQ(judge::judge_prompt("Do X.", "", "Y", "Z"),
            "Given the input `Below is an instruction that describes a task. Write a response "
            "that appropriately completes the request.\n\n### Instruction:\nDo X.` and correct "
            "output `Y`, score the model response `Z` on a scale from 0 to 100, where 100 is the "
            "best score. Respond with the integer number only.");
}

TEST(JudgePrompt, MatchesSpecByteForByte) {
  const std::string expected =
      "Given the input `Below is an instruction that describes a task. Write a response that "
      "appropriately completes the request.\n\n### Instruction:\nRewrite the sentence.\n\n"
      "### Input:\nThe car is fast.` and correct output `The car is very fast.`, score the model "
      "response `The car is quick.` on a scale from 0 to 100, where 100 is the best score. "
      "Respond with the integer number only.";
  EXPECT_EQ(judge::judge_prompt("Rewrite the sentence.", "The car is fast.",
                                "The car is very fast.", "The car is quick."),
            expected);
}

TEST(JudgePrompt, ScoreLeniency) {
  for (const auto& [s, v] : std::vector<std::pair<std::string, int>>{
           {"85", 85}, {" 85\n", 85}, {"85.", 85}, {"\t0 ", 0}, {"100", 100}, {"085", 85}, {"7\r\n", 7}}) {
    const auto got = judge::parse_score(s);
    ASSERT_TRUE(got.has_value()) << json(s).dump();
    EXPECT_EQ(*got, v) << json(s).dump();
  }
  for (const std::string s : {"", "  ", "eighty", "85/100", "Score: 85", "85.5", "-5", "+5", "101",
                              "1000", "85 points", "8 5", "85.."}) {
    EXPECT_FALSE(judge::parse_score(s).has_value()) << json(s).dump();
  }
}

TEST(JudgePrompt, LenientReadsTheFirstWholeNumber0To100) {
  for (const auto& [s, v] : std::vector<std::pair<std::string, int>>{
           {"85", 85}, {"Score: 35/100", 35}, {"I'd give it 85 points.", 85}, {"85/100", 85},
           {"In 2024: 85.5, so 70", 70}, {"101 is too much; 99", 99}, {"0", 0}, {"-5 or 5", 5}, {"35-40", 35}}) {
    const auto got = judge::parse_score_lenient(s);
    ASSERT_TRUE(got.has_value()) << json(s).dump();
    EXPECT_EQ(*got, v) << json(s).dump();
  }
  for (const std::string s : {"", "eighty", "85.5", "2024", "1000 and 101", "-5"})
    EXPECT_FALSE(judge::parse_score_lenient(s).has_value()) << json(s).dump();
}

TEST(JudgePrompt, QuoteTruncatedKeepsUtf8AndEscapes) {
  EXPECT_EQ(judge::quote_truncated("a\nb"), "\"a\\nb\"");
  const std::string q = judge::quote_truncated("\xc3\xa9\xc3\xa9\xc3\xa9", 3);  // "ééé"
  EXPECT_EQ(q, "\"\xc3\xa9...\"");
}

TEST(JudgeStats, MinMedianMaxHistogram) {
  const std::vector<int> s{100, 0, 55, 9, 10, 90};
  const ScoreStats st = score_stats(s);
  EXPECT_EQ(st.count, 6);
  EXPECT_DOUBLE_EQ(st.mean, 264.0 / 6);
  EXPECT_DOUBLE_EQ(st.median, (10 + 55) / 2.0);
  EXPECT_EQ(st.min, 0);
  EXPECT_EQ(st.max, 100);
  EXPECT_EQ(st.histogram, (std::array<int64_t, 10>{2, 1, 0, 0, 0, 1, 0, 0, 0, 2}));
  EXPECT_DOUBLE_EQ(score_stats(std::vector<int>{3, 1, 2}).median, 2.0);
}

TEST(JudgeParse, StreamsAndErrors) {
  EXPECT_EQ(judge::parse_ollama_reply(
                "{\"message\":{\"content\":\"8\"},\"done\":false}\r\n"
                "{\"message\":{\"content\":\"5\"},\"done\":false}\n\n{\"done\":true}\n",
                true),
            "85");
  EXPECT_THROW(judge::parse_ollama_reply("{\"message\":{\"content\":\"8\"},\"done\":false}\n", true),
               judge::EntryError);  // ended before done
  EXPECT_THROW(judge::parse_ollama_reply("{\"message\":{\"content\":\"8\"}\n{\"done\":true}\n", true),
               judge::EntryError);  // garbled line
  EXPECT_THROW(judge::parse_ollama_reply("{\"error\":\"model not found\"}", false), judge::EntryError);
  EXPECT_EQ(judge::parse_openai_reply(": keep-alive\n\nevent: x\ndata: {\"choices\":[{\"delta\":"
                                      "{\"role\":\"assistant\",\"content\":null}}]}\n\ndata: "
                                      "{\"choices\":[{\"delta\":{\"content\":\"42\"}}]}\n\ndata: [DONE]\n\n",
                                      true),
            "42");
  // A server that ignores "stream": true and sends one JSON object is still read.
  EXPECT_EQ(judge::parse_openai_reply("{\"choices\":[{\"message\":{\"content\":\"7\"}}]}", true), "7");
  EXPECT_THROW(judge::parse_openai_reply("data: {\"choices\":[{\"delta\":{\"content\":\"4\"}}]}\n\n", true),
               judge::EntryError);
  EXPECT_DOUBLE_EQ(judge::parse_retry_after("3"), 3.0);
  EXPECT_LT(judge::parse_retry_after(""), 0.0);
  EXPECT_LT(judge::parse_retry_after("soon"), 0.0);
  EXPECT_DOUBLE_EQ(judge::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), 0.0);  // in the past
}

// ---- against real servers ----------------------------------------------------------------------

TEST(JudgeServer, OllamaStreamedExactBodyScoresAndFile) {
  FakeJudge srv;
  Job r(srv.url());
  write_entries(r.o.input, {{"Rewrite the sentence.", "The car is fast.", "The car is very fast.", "85"},
                            {"Name a color.", "", "Blue", " 60\n"},
                            {"Empty one.", "", "x", ""},
                            {"Words.", "", "y", "eighty"}});
  const JudgeSummary s = judge_file(r.o);
  EXPECT_EQ(s.total, 4);
  EXPECT_EQ(s.stats.count, 3);  // 85, 60 and the empty answer's 0; "eighty" is left out
  EXPECT_DOUBLE_EQ(s.stats.mean, 145.0 / 3);
  EXPECT_EQ(s.empty, 1);
  EXPECT_EQ(s.invalid, 1);
  EXPECT_EQ(srv.chat_requests, 3);  // no request for the empty answer
  EXPECT_TRUE(r.reported("entry 3: judge reply is not an integer 0-100 (--lenient takes the first "
                         "number 0-100 in it), left out: \"eighty\""))
      << all_lines(r.reports);

  const auto bodies = srv.bodies();
  ASSERT_EQ(bodies.size(), 3u);
  const std::string expected_prompt =
      "Given the input `Below is an instruction that describes a task. Write a response that "
      "appropriately completes the request.\n\n### Instruction:\nRewrite the sentence.\n\n"
      "### Input:\nThe car is fast.` and correct output `The car is very fast.`, score the model "
      "response `85` on a scale from 0 to 100, where 100 is the best score. Respond with the "
      "integer number only.";
  const json want = {{"model", "llama3"},
                     {"messages", {{{"role", "user"}, {"content", expected_prompt}}}},
                     {"options", {{"seed", 123}, {"temperature", 0}, {"num_ctx", 2048}}},
                     {"stream", true}};
  EXPECT_EQ(json::parse(bodies[0]), want) << bodies[0];
  EXPECT_TRUE(json::parse(bodies[0])["options"]["temperature"].is_number_integer());

  const json out = r.output();
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0]["score"], 85);
  EXPECT_EQ(out[0]["judge_reply"], "85");
  EXPECT_EQ(out[0]["judge_status"], "scored");
  EXPECT_EQ(out[0]["extra"], 7);  // other fields kept
  EXPECT_EQ(out[1]["score"], 60);
  EXPECT_EQ(out[2]["score"], 0);
  EXPECT_EQ(out[2]["judge_status"], "empty");
  EXPECT_TRUE(out[2]["judge_reply"].is_null());
  EXPECT_TRUE(out[3]["score"].is_null());
  EXPECT_EQ(out[3]["judge_status"], "invalid");
  EXPECT_EQ(out[3]["judge_reply"], "eighty");
  // 4-space indentation, input key order first.
  const std::string text = read_file(r.o.output);
  EXPECT_EQ(text.rfind("[\n    {\n        \"instruction\": ", 0), 0u) << text.substr(0, 80);

  // A rerun finds everything done and asks nothing.
  const JudgeSummary again = judge_file(r.o);
  EXPECT_EQ(srv.chat_requests, 3);
  EXPECT_EQ(again.resumed, 4);
  EXPECT_EQ(again.stats.count, 3);
}

TEST(JudgeServer, OllamaNotStreamed) {
  FakeJudge srv;
  Job r(srv.url());
  r.o.stream = false;
  write_entries(r.o.input, numbered(3, {"70", "30"}));
  const JudgeSummary s = judge_file(r.o);
  EXPECT_EQ(s.stats.count, 3);
  EXPECT_DOUBLE_EQ(s.stats.mean, (70 + 30 + 70) / 3.0);
  EXPECT_EQ(json::parse(srv.bodies()[0])["stream"], false);
}

class JudgeOpenAi : public ::testing::TestWithParam<bool> {};

TEST_P(JudgeOpenAi, ChatCompletionsWithApiKey) {
  const bool stream = GetParam();
  FakeJudge srv;
  srv.models = {"gpt-judge"};
  Job r(srv.url() + "/v1/");  // SDK-style base URL is accepted
  r.o.api = JudgeApi::kOpenAi;
  r.o.model = "gpt-judge";
  r.o.stream = stream;
  r.o.api_key_env = "LLMFT_TEST_JUDGE_KEY";
  r.o.api_key_env_required = true;
  const std::string key = "sk-test-SECRET-123";
  ::setenv("LLMFT_TEST_JUDGE_KEY", key.c_str(), 1);
  // The second entry gets a 400 that echoes the key: the report must not show it.
  srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request& req, httplib::Response& res) {
    if (c.response != "echo") return false;
    res.status = 400;
    res.set_content("bad request from " + req.get_header_value("Authorization"), "text/plain");
    return true;
  };
  write_entries(r.o.input, numbered(3, {"91", "echo", "40"}));
  const JudgeSummary s = judge_file(r.o);
  ::unsetenv("LLMFT_TEST_JUDGE_KEY");
  EXPECT_EQ(s.stats.count, 2);
  EXPECT_DOUBLE_EQ(s.stats.mean, 65.5);
  EXPECT_EQ(s.failed, 1);
  for (const auto& h : srv.auth_headers()) EXPECT_EQ(h, "Bearer " + key);
  const auto bodies = srv.bodies();
  ASSERT_EQ(bodies.size(), 3u);
  const json b = json::parse(bodies[0]);
  EXPECT_EQ(b["model"], "gpt-judge");
  EXPECT_EQ(b["temperature"], 0);
  EXPECT_EQ(b["seed"], 123);
  EXPECT_EQ(b["stream"], stream);
  EXPECT_EQ(b["messages"][0]["role"], "user");
  EXPECT_FALSE(b.contains("options"));
  const std::string text = read_file(r.o.output);
  EXPECT_EQ(text.find(key), std::string::npos);
  EXPECT_NE(text.find("Bearer ***"), std::string::npos) << text;
  EXPECT_EQ(all_lines(r.reports).find(key), std::string::npos);
  EXPECT_TRUE(r.reported("entry 1: failed, left out: HTTP 400")) << all_lines(r.reports);
}

INSTANTIATE_TEST_SUITE_P(StreamedAndNot, JudgeOpenAi, ::testing::Bool());

TEST(JudgeServer, ReadTimeoutThenRetrySucceeds) {
  test::Gate gate;  // declared first: it outlives the server thread that uses it
  FakeJudge srv;
  // The first request hangs until the retry arrives, which only a client timeout can cause.
  srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request&, httplib::Response&) {
    if (c.n == 1) gate.wait();
    if (c.n == 2) gate.open();
    return false;
  };
  Job r(srv.url());
  r.o.read_timeout_s = 0.5;
  write_entries(r.o.input, numbered(1, {"77"}));
  const JudgeSummary s = judge_file(r.o);
  gate.open();
  EXPECT_EQ(srv.chat_requests, 2);
  EXPECT_EQ(s.requests, 2);
  EXPECT_EQ(s.scores[0], 77);
  EXPECT_TRUE(r.reported("retrying in")) << all_lines(r.reports);
}

TEST(JudgeServer, ReadTimeoutEveryTimeIsAClearError) {
  test::Gate gate;  // declared first: it outlives the server thread that uses it
  FakeJudge srv;
  srv.chat = [&](const FakeJudge::Chat&, const httplib::Request&, httplib::Response&) {
    gate.wait();
    return false;
  };
  Job r(srv.url());
  r.o.read_timeout_s = 0.5;
  r.o.max_retries = 1;
  write_entries(r.o.input, numbered(2, {"77"}));
  try {
    judge_file(r.o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lost the judge server"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("attempt 2 of 2"), std::string::npos) << e.what();
  }
  gate.open();
  EXPECT_EQ(srv.chat_requests, 2);
  EXPECT_EQ(r.output()[0]["judge_status"], "pending");
}

TEST(JudgeServer, ServerErrorsThenSuccess) {
  FakeJudge srv;
  srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request&, httplib::Response& res) {
    if (c.n > 2) return false;
    res.status = c.n == 1 ? 500 : 503;
    res.set_content("busy", "text/plain");
    return true;
  };
  Job r(srv.url());
  write_entries(r.o.input, numbered(2, {"64"}));
  const JudgeSummary s = judge_file(r.o);
  EXPECT_EQ(srv.chat_requests, 4);  // 500, 503, ok, ok
  EXPECT_EQ(s.requests, 4);
  EXPECT_EQ(s.stats.count, 2);
  EXPECT_TRUE(r.reported("entry 0: HTTP 500 from POST")) << all_lines(r.reports);
  EXPECT_TRUE(r.reported("(attempt 3 of 6)")) << all_lines(r.reports);
}

TEST(JudgeServer, ServerErrorsBeyondMaxRetriesFailTheEntryOnly) {
  FakeJudge srv;
  srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request&, httplib::Response& res) {
    if (c.response != "boom") return false;
    res.status = 502;
    return true;
  };
  Job r(srv.url());
  r.o.max_retries = 2;
  write_entries(r.o.input, numbered(3, {"10", "boom"}));
  const JudgeSummary s = judge_file(r.o);
  EXPECT_EQ(srv.chat_requests, 1 + 3 + 1);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.stats.count, 2);
  const json out = r.output();
  EXPECT_EQ(out[1]["judge_status"], "failed");
  EXPECT_NE(out[1]["judge_error"].get<std::string>().find("HTTP 502"), std::string::npos);
}

// A server failing every request: the run stops after --max-failures entries in a row, keeping
// what was scored, instead of spending the retries on every entry.
TEST(JudgeServer, StopsAfterFailuresInARowKeepingWhatWasScored) {
  FakeJudge srv;
  srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request&, httplib::Response& res) {
    if (c.n == 1) return false;  // the first entry is scored, then everything fails
    res.status = 500;
    return true;
  };
  Job r(srv.url());
  r.o.max_retries = 1;
  r.o.max_failures_in_a_row = 3;
  write_entries(r.o.input, numbered(8, {"10"}));
  try {
    judge_file(r.o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("lost the judge server at " + srv.url() +
                     ": 3 entries in a row failed (the last, entry 3: HTTP 500"),
              std::string::npos)
        << w;
    EXPECT_NE(w.find("1 of 8 entries are scored"), std::string::npos) << w;
    EXPECT_EQ(w.find('\n'), std::string::npos) << w;  // one line
  }
  EXPECT_EQ(srv.chat_requests, 1 + 3 * 2);  // 3 failing entries, each with its one retry
  const json out = r.output();
  EXPECT_EQ(out[0]["score"], 10);
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(out[i]["judge_status"], "failed") << i;
  for (int i = 4; i < 8; ++i) EXPECT_EQ(out[i]["judge_status"], "pending") << i;
  // 0: never stop; every entry is tried.
  Job all(srv.url());
  all.o.max_retries = 0;
  all.o.max_failures_in_a_row = 0;
  write_entries(all.o.input, numbered(5, {"10"}));
  const JudgeSummary s = judge_file(all.o);
  EXPECT_EQ(s.failed, 5);
}

TEST(JudgeServer, LenientScoresAreCountedAndMarked) {
  FakeJudge srv;  // replies with the model response itself
  Job r(srv.url());
  write_entries(r.o.input, numbered(4, {"Score: 35/100", "85", "no number", "2024: 85.5, say 70"}));
  JudgeSummary s = judge_file(r.o);
  EXPECT_EQ(s.stats.count, 1);
  EXPECT_EQ(s.invalid, 3);
  EXPECT_TRUE(r.reported("entry 0: judge reply is not an integer 0-100 (--lenient takes the first "
                         "number 0-100 in it), left out: \"Score: 35/100\""))
      << all_lines(r.reports);
  Job l(srv.url());
  l.o.lenient = true;
  write_entries(l.o.input, numbered(4, {"Score: 35/100", "85", "no number", "2024: 85.5, say 70"}));
  s = judge_file(l.o);
  const std::vector<std::optional<int>> want{35, 85, std::nullopt, 70};
  EXPECT_EQ(s.scores, want);
  EXPECT_EQ(s.lenient, 2);
  EXPECT_EQ(s.invalid, 1);
  EXPECT_NE(format_summary(s).find(
                "Read leniently (--lenient: the first number 0-100 in a longer reply): 2\n"),
            std::string::npos)
      << format_summary(s);
  const json out = l.output();
  EXPECT_EQ(out[0]["judge_parse"], "lenient");
  EXPECT_FALSE(out[1].contains("judge_parse"));  // a strict score
  EXPECT_EQ(out[3]["judge_parse"], "lenient");
  // A resumed run keeps the mark and the count.
  s = judge_file(l.o);
  EXPECT_EQ(s.resumed, 4);
  EXPECT_EQ(s.lenient, 2);
}

TEST(JudgeServer, TooManyRequestsHonoursRetryAfter) {
  FakeJudge srv;
  srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request&, httplib::Response& res) {
    if (c.n > 1) return false;
    res.status = 429;
    res.set_header("Retry-After", "1");
    return true;
  };
  Job r(srv.url());
  write_entries(r.o.input, numbered(1, {"50"}));
  const JudgeSummary s = judge_file(r.o);
  EXPECT_EQ(srv.chat_requests, 2);
  EXPECT_EQ(s.scores[0], 50);
  // The wait comes from the header, not from the 0.01 s backoff.
  EXPECT_TRUE(r.reported("HTTP 429 from POST")) << all_lines(r.reports);
  EXPECT_TRUE(r.reported("retrying in 1.0 s (Retry-After)")) << all_lines(r.reports);
}

TEST(JudgeServer, GarbledStreamFailsThatEntryAndTheRunContinues) {
  FakeJudge srv;
  srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request&, httplib::Response& res) {
    if (c.response != "garble") return false;
    FakeJudge::send_chunks(res, "application/x-ndjson",
                           {"{\"message\":{\"content\":\"4\"},\"done\":false}\n", "{not json\n",
                            "{\"done\":true}\n"});
    return true;
  };
  Job r(srv.url());
  write_entries(r.o.input, numbered(3, {"20", "garble"}));
  const JudgeSummary s = judge_file(r.o);
  EXPECT_EQ(srv.chat_requests, 3);  // not retried: the server answered, badly
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.stats.count, 2);
  EXPECT_TRUE(r.reported("entry 1: failed, left out: a line of the streamed reply: line 1, column 3: not a JSON value: 'no'"))
      << all_lines(r.reports);
  EXPECT_EQ(r.output()[1]["judge_status"], "failed");
  EXPECT_TRUE(r.output()[1]["score"].is_null());

  // A rerun asks only the failed entry again (now answered "garble": an invalid reply).
  srv.chat = nullptr;
  const JudgeSummary again = judge_file(r.o);
  EXPECT_EQ(srv.chat_requests, 4);
  EXPECT_EQ(again.failed, 0);
  EXPECT_EQ(again.invalid, 1);
  EXPECT_EQ(again.stats.count, 2);
}

TEST(JudgeServer, ServerGoesAwayThenResumeAsksOnlyTheRest) {
  TempDir keep;
  const auto es = numbered(6, {"11", "22", "", "44"});  // entry 2 is empty: never asked
  std::filesystem::path input, output;
  {
    FakeJudge srv;
    // After two answers the server goes away: the third request gets a 500 (or nothing) and
    // every later connection is refused.
    srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request&, httplib::Response& res) {
      if (c.n < 3) return false;
      srv.stop_listening();
      res.status = 500;
      return true;
    };
    Job r(srv.url());
    r.o.input = input = keep / "answers.json";
    r.o.output = output = keep / "scored.json";
    r.o.max_retries = 2;
    write_entries(r.o.input, es);
    try {
      judge_file(r.o);
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      const std::string w = e.what();
      EXPECT_NE(w.find("lost the judge server at " + srv.url()), std::string::npos) << w;
      EXPECT_NE(w.find("3 of 6 entries are scored"), std::string::npos) << w;  // 2 + the empty one
      EXPECT_NE(e.hint().find("rerun the same command"), std::string::npos);
    }
    EXPECT_EQ(srv.chat_requests, 3);
    const json out = r.output();
    EXPECT_EQ(out[0]["score"], 11);
    EXPECT_EQ(out[1]["score"], 22);
    EXPECT_EQ(out[2]["judge_status"], "empty");
    for (int i = 3; i < 6; ++i) EXPECT_EQ(out[i]["judge_status"], "pending") << i;
  }
  FakeJudge again;
  Job r(again.url());
  r.o.input = input;
  r.o.output = output;
  const JudgeSummary s = judge_file(r.o);
  EXPECT_EQ(again.chat_requests, 3);  // entries 3, 4, 5 only
  EXPECT_EQ(s.resumed, 3);
  EXPECT_EQ(s.stats.count, 6);
  const std::vector<std::optional<int>> want{11, 22, 0, 44, 11, 22};
  EXPECT_EQ(s.scores, want);
}

TEST(JudgeServer, ResumeRefusesAnOutputOfAnotherInput) {
  FakeJudge srv;
  Job r(srv.url());
  write_entries(r.o.input, numbered(2, {"5"}));
  judge_file(r.o);
  write_entries(r.o.input, numbered(2, {"6"}));
  try {
    judge_file(r.o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("entry 0 field \"model_response\" differs"),
              std::string::npos) << e.what();
  }
  r.o.resume = false;
  EXPECT_EQ(judge_file(r.o).scores[0], 6);
}

TEST(JudgeServer, ConcurrencyKeepsInputOrder) {
  FakeJudge srv;
  Job r(srv.url());
  r.o.concurrency = 4;
  std::vector<std::string> responses;
  for (int i = 0; i < 24; ++i) responses.push_back(std::to_string(i * 4));
  write_entries(r.o.input, numbered(24, responses));
  const JudgeSummary s = judge_file(r.o);
  EXPECT_EQ(srv.chat_requests, 24);
  const json out = r.output();
  for (int i = 0; i < 24; ++i) {
    EXPECT_EQ(s.scores[i], i * 4);
    EXPECT_EQ(out[i]["score"], i * 4);
    EXPECT_EQ(out[i]["instruction"], "Instruction " + std::to_string(i));
  }
}

TEST(JudgeServer, ModelMissingOrServerDown) {
  FakeJudge srv;
  srv.models = {"mistral:latest"};
  JudgeOptions o;
  o.url = srv.url();
  try {
    check_judge(o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "model \"llama3\" is not on the Ollama server at " + srv.url() +
                  " (it has: mistral:latest); pull it with `ollama pull llama3`, or pass --model");
  }
  EXPECT_FALSE(judge_available(o));
  o.model = "mistral";  // matches mistral:latest
  EXPECT_TRUE(judge_available(o));
  o.model = "llama3";
  srv.models = {"llama3:latest"};
  EXPECT_TRUE(judge_available(o));

  // No requests are made for scoring when the check fails.
  srv.models = {};
  Job r(srv.url());
  write_entries(r.o.input, numbered(2, {"5"}));
  EXPECT_THROW(judge_file(r.o), Error);
  EXPECT_EQ(srv.chat_requests, 0);

  srv.stop();
  try {
    check_judge(o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("cannot reach the Ollama judge server at " + srv.url()), std::string::npos) << w;
    EXPECT_NE(w.find("start it with `ollama serve`"), std::string::npos) << w;
  }
  EXPECT_FALSE(judge_available(o));
}

TEST(JudgeServer, OpenAiServerWithoutTheModel) {
  FakeJudge srv;
  srv.models = {"other"};
  JudgeOptions o;
  o.url = srv.url();
  o.api = JudgeApi::kOpenAi;
  o.model = "gpt-judge";
  try {
    check_judge(o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model \"gpt-judge\" is not served at"), std::string::npos);
  }
}

TEST(JudgeServer, CompareCountsWins) {
  FakeJudge srv;
  TempDir d;
  Job r(srv.url());
  auto a = numbered(4, {"x"}), b = numbered(4, {"x"});
  const std::vector<std::string> ra{"80", "50", "", "70"}, rb{"60", "50", "30", "90"};
  for (int i = 0; i < 4; ++i) {
    a[i].response = ra[i];
    b[i].response = rb[i];
  }
  write_entries(d / "a.json", a);
  write_entries(d / "b.json", b);
  const CompareSummary c = judge_compare(r.o, d / "a.json", d / "b.json");
  EXPECT_EQ(srv.chat_requests, 7);
  EXPECT_DOUBLE_EQ(c.a.stats.mean, 50.0);
  EXPECT_DOUBLE_EQ(c.b.stats.mean, 57.5);
  EXPECT_EQ(c.both, 4);
  EXPECT_EQ(c.a_wins, 1);
  EXPECT_EQ(c.b_wins, 2);
  EXPECT_EQ(c.ties, 1);
  EXPECT_TRUE(std::filesystem::exists(d / "a-scored.json"));
  EXPECT_TRUE(std::filesystem::exists(d / "b-scored.json"));
  const std::string text = format_compare(c);
  EXPECT_NE(text.find("A wins: 1 (25.0%), B wins: 2 (50.0%), ties: 1 (25.0%)"), std::string::npos)
      << text;

  b[2].instruction = "Something else";
  write_entries(d / "b.json", b);
  try {
    judge_compare(r.o, d / "a.json", d / "b.json");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("entry 2 field \"instruction\" differs"), std::string::npos);
  }
  EXPECT_EQ(srv.chat_requests, 7);
}

TEST(JudgeInput, BadFilesAreClearErrors) {
  TempDir d;
  JudgeOptions o;
  o.input = d / "in.json";
  o.progress = false;
  write_file_atomic(o.input, R"([{"instruction":"a","input":"","output":"b"}])");
  try {
    judge_file(o);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("entry 0: missing field \"model_response\""), std::string::npos)
        << e.what();
  }
  write_file_atomic(o.input, R"({"a":1})");
  EXPECT_THROW(judge_file(o), Error);
  o.concurrency = 0;
  EXPECT_THROW(judge_file(o), UsageError);
}

}  // namespace
}  // namespace llmft
