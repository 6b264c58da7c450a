// A real HTTP LLM server on 127.0.0.1 (cpp-httplib) for the judge and synth tests: Ollama's
// /api/tags, /api/chat and /api/generate, and OpenAI's /v1/models, /v1/chat/completions and
// /v1/completions, streamed (chunked NDJSON / SSE) or not. By default a chat reply is the model
// response quoted in a judge prompt (so "85" scores 85), or the whole message when it is not a
// judge prompt; a completion is "\n\nInstruction <seed>.\nsecond line". Tests override `chat`
// and `generate` to misbehave.
#pragma once

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace llmft::test {

class FakeJudge {
 public:
  struct Chat {
    int n = 0;                 // 1-based number of this chat request
    nlohmann::json body;       // parsed request body
    std::string response;      // the model response quoted in a judge prompt (else the message)
    std::string content() const { return body["messages"][0]["content"]; }
  };
  // Returns true when it answered itself (set res); false falls back to the normal reply.
  using ChatHook = std::function<bool(const Chat&, const httplib::Request&, httplib::Response&)>;

  struct Generate {
    int n = 0;            // 1-based number of this completion request
    nlohmann::json body;  // parsed request body
    int64_t seed = 0;     // options.seed (Ollama) or seed (OpenAI)
  };
  using GenerateHook = std::function<bool(const Generate&, const httplib::Request&, httplib::Response&)>;

  std::vector<std::string> models{"llama3:latest", "phi3:latest"};
  ChatHook chat;
  GenerateHook generate;
  std::atomic<int> chat_requests{0};
  std::atomic<int> generate_requests{0};

  FakeJudge() {
    svr_.Get("/api/tags", [this](const httplib::Request&, httplib::Response& res) {
      nlohmann::json j{{"models", nlohmann::json::array()}};
      for (const auto& m : models) j["models"].push_back({{"name", m}, {"size", 1}});
      res.set_content(j.dump(), "application/json");
    });
    svr_.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
      record(req);
      nlohmann::json j{{"object", "list"}, {"data", nlohmann::json::array()}};
      for (const auto& m : models) j["data"].push_back({{"id", m}, {"object", "model"}});
      res.set_content(j.dump(), "application/json");
    });
    auto on_chat = [this](const httplib::Request& req, httplib::Response& res) {
      record(req);
      Chat c;
      c.n = ++chat_requests;
      c.body = nlohmann::json::parse(req.body);
      const std::string content = c.body["messages"][0]["content"];
      const std::string marker = "score the model response `";
      const size_t at = content.find(marker);
      if (at == std::string::npos) {
        c.response = content;
      } else {
        const size_t p = at + marker.size();
        c.response = content.substr(p, content.find('`', p) - p);
      }
      if (chat && chat(c, req, res)) return;
      reply(req, res, c.body.value("stream", true), c.response);
    };
    svr_.Post("/api/chat", on_chat);
    svr_.Post("/v1/chat/completions", on_chat);
    auto on_generate = [this](const httplib::Request& req, httplib::Response& res) {
      record(req);
      Generate g;
      g.n = ++generate_requests;
      g.body = nlohmann::json::parse(req.body);
      const auto& opts = req.path == "/api/generate" ? g.body["options"] : g.body;
      g.seed = opts.value("seed", int64_t{0});
      if (generate && generate(g, req, res)) return;
      reply(req, res, g.body.value("stream", true),
            "\n\nInstruction " + std::to_string(g.seed) + ".\nsecond line");
    };
    svr_.Post("/api/generate", on_generate);
    svr_.Post("/v1/completions", on_generate);
    port_ = svr_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { svr_.listen_after_bind(); });
  }
  ~FakeJudge() { stop(); }

  // Stops listening (new connections are refused) and waits for the server thread. From inside
  // a handler use stop_listening(): the server thread waits for running handlers.
  void stop() {
    stop_listening();
    if (thread_.joinable()) thread_.join();
  }
  void stop_listening() {
    std::call_once(stopped_, [this] {
      while (!svr_.is_running()) std::this_thread::yield();
      svr_.stop();
    });
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }

  std::vector<std::string> bodies() {
    std::lock_guard lk(mu_);
    return bodies_;
  }
  std::vector<std::string> auth_headers() {
    std::lock_guard lk(mu_);
    return auth_;
  }

  // The normal reply carrying `text`, in the request's API and streaming mode.
  static void reply(const httplib::Request& req, httplib::Response& res, bool stream,
                    const std::string& text) {
    if (req.path == "/api/generate" || req.path == "/v1/completions") {
      completion_reply(req, res, stream, text);
      return;
    }
    const bool ollama = req.path == "/api/chat";
    if (!stream) {
      nlohmann::json j;
      if (ollama) {
        j = {{"model", "llama3"}, {"message", {{"role", "assistant"}, {"content", text}}}, {"done", true}};
      } else {
        j = {{"id", "x"},
             {"object", "chat.completion"},
             {"choices", {{{"index", 0}, {"message", {{"role", "assistant"}, {"content", text}}},
                           {"finish_reason", "stop"}}}}};
      }
      res.set_content(j.dump(), "application/json");
      return;
    }
    std::vector<std::string> chunks;  // one piece per character, the way tokens stream
    for (size_t i = 0; i < text.size(); ++i) {
      const std::string piece = text.substr(i, 1);
      if (ollama) {
        chunks.push_back(nlohmann::json{{"model", "llama3"},
                                        {"message", {{"role", "assistant"}, {"content", piece}}},
                                        {"done", false}}
                             .dump() + "\n");
      } else {
        chunks.push_back("data: " +
                         nlohmann::json{{"choices", {{{"index", 0}, {"delta", {{"content", piece}}}}}}}
                             .dump() + "\n\n");
      }
    }
    if (ollama) {
      chunks.push_back(R"({"model":"llama3","message":{"role":"assistant","content":""},"done":true})" "\n");
    } else {
      chunks.push_back(R"(data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})" "\n\n");
      chunks.push_back("data: [DONE]\n\n");
    }
    send_chunks(res, ollama ? "application/x-ndjson" : "text/event-stream", std::move(chunks));
  }

  // A raw completion: Ollama's /api/generate ("response" pieces) or OpenAI's /v1/completions
  // (choices[0].text).
  static void completion_reply(const httplib::Request& req, httplib::Response& res, bool stream,
                               const std::string& text) {
    const bool ollama = req.path == "/api/generate";
    if (!stream) {
      const nlohmann::json j =
          ollama ? nlohmann::json{{"model", "llama3"}, {"response", text}, {"done", true}}
                 : nlohmann::json{{"object", "text_completion"},
                                  {"choices", {{{"index", 0}, {"text", text}, {"finish_reason", "stop"}}}}};
      res.set_content(j.dump(), "application/json");
      return;
    }
    std::vector<std::string> chunks;
    for (size_t i = 0; i < text.size(); i += 3) {
      const std::string piece = text.substr(i, 3);
      chunks.push_back(ollama ? nlohmann::json{{"response", piece}, {"done", false}}.dump() + "\n"
                              : "data: " + nlohmann::json{{"choices", {{{"index", 0}, {"text", piece}}}}}.dump() + "\n\n");
    }
    if (ollama) {
      chunks.push_back(R"({"response":"","done":true,"done_reason":"stop"})" "\n");
    } else {
      chunks.push_back("data: [DONE]\n\n");
    }
    send_chunks(res, ollama ? "application/x-ndjson" : "text/event-stream", std::move(chunks));
  }

  static void send_chunks(httplib::Response& res, const char* type, std::vector<std::string> chunks) {
    res.set_chunked_content_provider(type, [chunks](size_t, httplib::DataSink& sink) {
      for (const auto& c : chunks) sink.write(c.data(), c.size());
      sink.done();
      return true;
    });
  }

 private:
  void record(const httplib::Request& req) {
    std::lock_guard lk(mu_);
    if (!req.body.empty()) bodies_.push_back(req.body);
    auth_.push_back(req.get_header_value("Authorization"));
  }

  httplib::Server svr_;
  int port_ = -1;
  std::thread thread_;
  std::once_flag stopped_;
  std::mutex mu_;
  std::vector<std::string> bodies_, auth_;
};

// Blocks a handler until released (or a generous safety limit passes), so "slow server" tests
// synchronise on events rather than on sleeps.
class Gate {
 public:
  void wait() {
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, std::chrono::seconds(20), [this] { return open_; });
  }
  // Waits up to `ms` milliseconds for the gate; true when it is open.
  bool wait_for_ms(int ms) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, std::chrono::milliseconds(ms), [this] { return open_; });
  }
  void open() {
    {
      std::lock_guard lk(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

}  // namespace llmft::test
