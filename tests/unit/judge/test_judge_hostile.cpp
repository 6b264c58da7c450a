// A judge server that misbehaves on purpose (issue 16's hostile-input findings): replies nested
// 100,000 deep, a streamed line that is not an object, replies without end, a reply that trickles
// past the request deadline, Retry-After of three years, a redirect to another host. Each is a
// clear error for that request, never a crash, a hang or memory without bound.
#include <gtest/gtest.h>

#include <atomic>
#include <string>

#include "fake_judge.h"
#include "llmft/core/error.h"
#include "llmft/judge/client.h"
#include "llmft/judge/judge.h"

namespace llmft {
namespace {

using test::FakeJudge;

JudgeOptions options(const std::string& url) {
  JudgeOptions o;
  o.url = url;
  o.connect_timeout_s = 2;
  o.read_timeout_s = 5;
  o.max_retries = 1;
  o.retry_base_s = 0.01;
  o.retry_max_s = 0.05;
  return o;
}

// The error message of one ask(), or "" when it succeeded; `notes` collects the retry lines.
std::string ask_error(const JudgeOptions& o, std::string* notes = nullptr) {
  std::atomic<int64_t> requests{0};
  try {
    judge::JudgeClient(o).ask(
        "Score 1", [&](const std::string& l) { if (notes) *notes += l + "\n"; }, requests, nullptr);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

TEST(JudgeHostile, DeeplyNestedReplyIsAnEntryError) {
  const std::string deep = "{\"error\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  try {
    judge::parse_ollama_reply(deep, false);
    ADD_FAILURE() << "expected an error";
  } catch (const judge::EntryError& e) {
    EXPECT_EQ(std::string(e.what()), "the reply: JSON nested deeper than 256 levels at line 1, column 266");
  }
  EXPECT_THROW(judge::parse_openai_reply("data: " + deep + "\n\ndata: [DONE]\n\n", true),
               judge::EntryError);
}

TEST(JudgeHostile, StreamedLineThatIsNotAnObjectIsAnEntryError) {
  try {
    judge::parse_ollama_reply("[1]\n{\"done\":true}\n", true);
    ADD_FAILURE() << "expected an error";
  } catch (const judge::EntryError& e) {
    EXPECT_EQ(std::string(e.what()),
              "a line of the streamed reply is JSON array, expected an object: \"[1]\"");
  }
  // "done" that is not true does not end the stream, and is no crash either.
  EXPECT_THROW(judge::parse_ollama_reply("{\"done\":\"yes\"}\n", true), judge::EntryError);
}

TEST(JudgeHostile, ReplyWithoutEndStopsAtTheSizeCap) {
  std::atomic<int64_t> sent{0};  // declared first: it outlives the server thread that uses it
  FakeJudge srv;
  srv.chat = [&](const FakeJudge::Chat&, const httplib::Request&, httplib::Response& res) {
    res.set_chunked_content_provider("application/x-ndjson", [&](size_t, httplib::DataSink& sink) {
      const std::string line = R"({"message":{"content":"x"},"done":false})" "\n";
      std::string chunk;
      while (chunk.size() < (1 << 20)) chunk += line;
      while (sink.is_writable() && sink.write(chunk.data(), chunk.size())) sent += chunk.size();
      return false;  // the client hung up
    });
    return true;
  };
  const std::string err = ask_error(options(srv.url()));
  EXPECT_TRUE(has(err, "the reply is over 16777216 bytes")) << err;
  // It stopped near the cap, not after gigabytes (what the socket buffers held is extra).
  EXPECT_LT(sent.load(), int64_t{64} << 20);
  EXPECT_EQ(srv.chat_requests, 1);  // not retried
}

TEST(JudgeHostile, TricklingReplyHitsTheRequestDeadline) {
  test::Gate gate;  // declared first: it outlives the server thread that uses it
  FakeJudge srv;
  srv.chat = [&](const FakeJudge::Chat&, const httplib::Request&, httplib::Response& res) {
    res.set_chunked_content_provider("application/x-ndjson", [&](size_t, httplib::DataSink& sink) {
      // One byte at a time, never idle long enough for the read timeout, until the client leaves.
      while (sink.is_writable() && sink.write(" ", 1) && !gate.wait_for_ms(50)) {
      }
      return false;
    });
    return true;
  };
  JudgeOptions o = options(srv.url());
  o.request_timeout_s = 0.5;
  const std::string err = ask_error(o);
  gate.open();
  EXPECT_TRUE(has(err, "no complete reply within 0.5 s")) << err;
}

TEST(JudgeHostile, RetryAfterIsCapped) {
  FakeJudge srv;
  srv.chat = [&](const FakeJudge::Chat& c, const httplib::Request&, httplib::Response& res) {
    if (c.n > 1) return false;
    res.status = 429;
    res.set_header("Retry-After", "99999999");
    return true;
  };
  JudgeOptions o = options(srv.url());
  o.retry_after_max_s = 0.01;
  std::string notes;
  EXPECT_EQ(ask_error(o, &notes), "");
  EXPECT_TRUE(has(notes, "retrying in 0.0 s (Retry-After 1e+08 s, capped)")) << notes;
  EXPECT_EQ(srv.chat_requests, 2);
}

TEST(JudgeHostile, RedirectIsNotFollowed) {
  FakeJudge other;  // would receive the prompt if the redirect were followed
  FakeJudge srv;
  srv.chat = [&](const FakeJudge::Chat&, const httplib::Request&, httplib::Response& res) {
    res.status = 308;
    res.set_header("Location", other.url() + "/api/chat");
    return true;
  };
  const std::string err = ask_error(options(srv.url()));
  EXPECT_TRUE(has(err, "HTTP 308 from POST " + srv.url() + "/api/chat: redirected to \"" +
                           other.url() + "/api/chat\" (not followed)"))
      << err;
  EXPECT_EQ(other.chat_requests, 0);
}

}  // namespace
}  // namespace llmft
