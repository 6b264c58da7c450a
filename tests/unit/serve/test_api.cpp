// `llmft serve`'s request parsing (api.h) and reply formats (reply.h): field mapping, defaults,
// every refusal with its status, the chat-to-prompt mapping, and the streamed shapes the official
// clients read (NDJSON ending in done:true; SSE ending in data: [DONE]).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "llmft/data/template.h"
#include "llmft/serve/api.h"
#include "llmft/serve/reply.h"
#include "llmft/tokenizer/bpe.h"

using namespace llmft;
using namespace llmft::serve;
using nlohmann::json;

namespace {

const BpeTokenizer& tok() {
  static const BpeTokenizer t = BpeTokenizer::load_bundled();
  return t;
}

ServedModel model() {
  ServedModel m;
  m.name = "mine";
  m.tokenizer = &tok();
  m.config.maxT = 1024;
  return m;
}

Limits limits() {
  Limits l;
  l.max_new_tokens = 100;
  l.max_prompt_tokens = 200;
  return l;
}

GenRequest parse(Route r, const std::string& body) {
  return parse_request(r, body, model(), limits(), /*fresh_seed=*/42);
}

int status_of(Route r, const std::string& body, std::string* msg = nullptr) {
  try {
    parse(r, body);
  } catch (const HttpError& e) {
    if (msg) *msg = e.what();
    return e.status();
  }
  return 200;
}

}  // namespace

TEST(ServeApi, OllamaGenerateMapsPromptAndOptions) {
  const auto r =
      parse(Route::kOllamaGenerate, R"({"model": "mine:latest", "prompt": "Name a color.",
      "options": {"temperature": 0.5, "top_k": 7, "top_p": 0.9, "seed": 3, "num_predict": 20,
                  "stop": ["\n\n"], "num_ctx": 2048, "repeat_penalty": 1.1,
                  "repeat_last_n": 32, "min_p": 0.05}})");
  EXPECT_TRUE(r.stream);  // Ollama streams unless told otherwise
  EXPECT_EQ(r.prompt, format_prompt(PromptTemplate::kAlpaca, "Name a color.", ""));
  EXPECT_EQ(r.ids, tok().encode(r.prompt, SpecialTokens::kAllow));
  EXPECT_EQ(r.marker, "### Response:");
  EXPECT_FLOAT_EQ(r.seq.sampler.temperature, 0.5f);
  EXPECT_EQ(r.seq.sampler.top_k, 7);
  EXPECT_FLOAT_EQ(r.seq.sampler.top_p, 0.9f);
  EXPECT_EQ(r.seq.sampler.seed, 3u);
  EXPECT_FLOAT_EQ(r.seq.sampler.repeat_penalty, 1.1f);
  EXPECT_EQ(r.seq.sampler.repeat_last_n, 32);
  EXPECT_FLOAT_EQ(r.seq.sampler.min_p, 0.05f);
  EXPECT_EQ(r.seq.max_new_tokens, 20);
  EXPECT_EQ(r.stop, std::vector<std::string>{"\n\n"});
  // Defaults: greedy, the server's token limit, a fresh seed; raw: the prompt as it is.
  const auto d = parse(Route::kOllamaGenerate,
                       R"({"model": "mine", "prompt": "abc", "raw": true, "stream": false})");
  EXPECT_FALSE(d.stream);
  EXPECT_EQ(d.prompt, "abc");
  EXPECT_EQ(d.marker, "");
  EXPECT_TRUE(d.seq.sampler.greedy());
  EXPECT_FALSE(d.seq.sampler.penalizes());
  EXPECT_EQ(d.seq.sampler.min_p, 0.0f);
  EXPECT_EQ(d.seq.max_new_tokens, 100);
  EXPECT_EQ(d.seq.sampler.seed, 42u);
  // -1: as many as allowed; an empty prompt: nothing to generate.
  EXPECT_EQ(parse(Route::kOllamaGenerate,
                  R"({"model": "mine", "prompt": "a", "options": {"num_predict": -1}})")
                .seq.max_new_tokens,
            100);
  EXPECT_EQ(parse(Route::kOllamaGenerate, R"({"model": "mine", "prompt": ""})").seq.max_new_tokens,
            0);
}

TEST(ServeApi, ChatMessagesBecomeTheTemplatesPrompt) {
  const ServedModel m = model();
  const std::string p = chat_prompt(
      m, {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "2+2?"}},
      1000);
  const auto t = PromptTemplate::kAlpaca;
  EXPECT_EQ(p, "Be brief.\n\n" + format_training_text(t, "Hi", "", "Hello.") + "\n\n" +
                   format_prompt(t, "2+2?", ""));
  // Over the budget, the oldest turns go first; the last message always stays.
  const std::string cropped =
      chat_prompt(m, {{"user", std::string(300, 'a')}, {"assistant", "ok"}, {"user", "last"}}, 60);
  EXPECT_EQ(cropped, format_prompt(t, "last", ""));
  EXPECT_THROW(chat_prompt(m, {{"user", "a"}, {"assistant", "b"}}, 100), HttpError);
  EXPECT_THROW(chat_prompt(m, {{"tool", "a"}}, 100), HttpError);
  const auto r = parse(Route::kOpenAiChat, R"({"model": "mine", "messages": [
      {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}],
      "max_tokens": 5, "stop": "END", "temperature": 1.5, "stream_options": {"include_usage": true}})");
  EXPECT_FALSE(r.stream);  // OpenAI does not stream unless told
  EXPECT_EQ(r.prompt, format_prompt(t, "Hello", ""));
  EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(r.seq.max_new_tokens, 5);
  EXPECT_TRUE(r.include_usage);
  const auto c = parse(Route::kOpenAiCompletion, R"({"model": "mine", "prompt": "Once upon"})");
  EXPECT_TRUE(c.raw);
  EXPECT_EQ(c.prompt, "Once upon");
}

TEST(ServeApi, RefusesBadRequestsWithTheirStatus) {
  std::string msg;
  const auto G = Route::kOllamaGenerate;
  EXPECT_EQ(status_of(G, "{", &msg), 400);
  EXPECT_EQ(msg, "the request body: line 1, column 2: the JSON ends early (an object is not "
                 "closed)");
  EXPECT_EQ(status_of(G, "\"x\""), 400);
  EXPECT_EQ(status_of(G, R"({"prompt": "x"})", &msg), 400);
  EXPECT_NE(msg.find("model: missing"), std::string::npos);
  EXPECT_EQ(status_of(G, R"({"model": "other", "prompt": "x"})", &msg), 404);
  EXPECT_NE(msg.find("\"mine\""), std::string::npos);
  EXPECT_EQ(status_of(G, R"({"model": "mine", "prompt": ["x"]})"), 400);
  EXPECT_EQ(status_of(G, R"({"model": "mine", "prompt": "x", "stream": "yes"})"), 400);
  EXPECT_EQ(status_of(G, R"({"model": "mine", "prompt": "x", "options": 3})"), 400);
  EXPECT_EQ(
      status_of(G, R"({"model": "mine", "prompt": "x", "options": {"temperature": 1e400}})", &msg),
      400);
  EXPECT_NE(msg.find("1e400"), std::string::npos) << msg;
  for (const char* bad :
       {R"("temperature": -0.1)", R"("temperature": 1e300)", R"("temperature": "0")",
        R"("top_k": 1.5)", R"("top_k": -1)", R"("top_p": 0)", R"("top_p": 1.01)",
        R"("num_predict": 101)", R"("num_predict": 1e19)", R"("num_predict": 18446744073709551615)",
        R"("seed": 1e30)", R"("stop": "x")", R"("stop": [""])", R"("stop": [1])"}) {
    const std::string body =
        std::string(R"({"model": "mine", "prompt": "x", "options": {)") + bad + "}}";
    EXPECT_EQ(status_of(G, body, &msg), 400) << bad;
    EXPECT_NE(msg.find("options."), std::string::npos) << msg;
  }
  EXPECT_EQ(status_of(G, std::string(R"({"model": "mine", "prompt": "a)") + "\xff" + "\"}", &msg),
            400);
  EXPECT_NE(msg.find("UTF-8"), std::string::npos) << msg;
  EXPECT_EQ(status_of(G, R"({"model": "mine", "prompt": "x", "images": ["aGk="]})"), 400);
  // A prompt over the token limit (200).
  EXPECT_EQ(status_of(G,
                      R"({"model": "mine", "raw": true, "prompt": ")" + std::string(300, 'a') +
                          std::string(300, ' ') + "\"}",
                      &msg),
            400);
  EXPECT_NE(msg.find("at most 200"), std::string::npos) << msg;
  const auto C = Route::kOpenAiChat;
  EXPECT_EQ(
      status_of(C, R"({"model": "mine", "messages": [{"role": "user", "content": "x"}], "n": 2})"),
      400);
  EXPECT_EQ(
      status_of(
          C,
          R"({"model": "mine", "messages": [{"role": "user", "content": "x"}], "temperature": 2.5})"),
      400);
  EXPECT_EQ(
      status_of(
          C,
          R"({"model": "mine", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
      400);
  EXPECT_EQ(status_of(C, R"({"model": "mine", "messages": {}})"), 400);
}

TEST(ServeReply, OllamaStreamsLinesEndingWithDoneAndMetrics) {
  auto r = parse(Route::kOllamaChat,
                 R"({"model": "mine", "messages": [{"role": "user", "content": "x"}]})");
  ReplyWriter w(r, "mine", 1);
  EXPECT_STREQ(w.content_type(), "application/x-ndjson");
  EXPECT_EQ(w.begin(), "");
  EXPECT_EQ(w.piece(""), "");
  const std::string line = w.piece("Hi \xc3\xa9");
  ASSERT_EQ(line.back(), '\n');
  const json p = json::parse(line);
  EXPECT_EQ(p["message"]["content"], "Hi \xc3\xa9");
  EXPECT_EQ(p["message"]["role"], "assistant");
  EXPECT_EQ(p["done"], false);
  GenSummary s{"length", 7, 3, 900, 500, 400};
  const json e = json::parse(w.end(s));
  EXPECT_EQ(e["done"], true);
  EXPECT_EQ(e["done_reason"], "length");
  EXPECT_EQ(e["prompt_eval_count"], 7);
  EXPECT_EQ(e["eval_count"], 3);
  EXPECT_EQ(e["total_duration"], 900);
  EXPECT_EQ(e["eval_duration"], 400);
  EXPECT_EQ(json::parse(w.whole("all", s))["message"]["content"], "all");
  EXPECT_EQ(json::parse(w.error("boom"))["error"], "boom");
}

TEST(ServeReply, OpenAiStreamsEventsEndingWithDone) {
  auto r = parse(Route::kOpenAiChat, R"({"model": "mine", "stream": true,
      "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "x"}]})");
  ReplyWriter w(r, "mine", 5);
  EXPECT_STREQ(w.content_type(), "text/event-stream");
  auto event = [](const std::string& s) {
    EXPECT_TRUE(s.starts_with("data: ")) << s;
    EXPECT_TRUE(s.ends_with("\n\n")) << s;
    return json::parse(s.substr(6, s.find("\n\n") - 6));
  };
  const json b = event(w.begin());
  EXPECT_EQ(b["object"], "chat.completion.chunk");
  EXPECT_EQ(b["id"], "chatcmpl-5");
  EXPECT_EQ(b["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(event(w.piece("Hi"))["choices"][0]["delta"]["content"], "Hi");
  GenSummary s{"stop", 4, 2, 1, 1, 1};
  const std::string end = w.end(s);
  EXPECT_TRUE(end.ends_with("data: [DONE]\n\n"));
  const json fin = event(end);
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(fin["choices"][0]["delta"].empty());
  const size_t u = end.find("data: ", 6);
  const json usage = event(end.substr(u));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 6);
  const json whole = json::parse(w.whole("Hi", s));
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["choices"][0]["message"]["content"], "Hi");
  EXPECT_EQ(whole["usage"]["completion_tokens"], 2);
  EXPECT_EQ(json::parse(error_body("bad", 400, true))["error"]["type"], "invalid_request_error");
}
