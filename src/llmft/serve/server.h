// `llmft serve`'s HTTP side (cpp-httplib): Ollama's and OpenAI's routes over one Engine, the chat
// page at "/", limits (body size, token counts, queue, timeouts) and a draining shutdown. Every
// refusal is a JSON error with a 4xx (or 503 when busy) status. Routes: ../docs/serve.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "llmft/serve/api.h"
#include "llmft/serve/engine.h"

namespace llmft::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                   // 0: any free port (bind() says which)
  std::string api_key;               // non-empty: /api, /v1 and /llmft need "Bearer <key>"
  int64_t max_body_bytes = 1 << 20;  // larger request bodies get 413
  double timeout_s = 600;            // a request's whole life (queue + generation)
  int io_timeout_s = 30;             // reading a request, or writing to a client that stalls
  int64_t http_threads = 0;          // 0: slots + queue + 8 (each open reply holds one)
  Limits limits;
};

class Server {
 public:
  Server(const ServedModel& model, Engine& engine, const ServerOptions& opts);
  ~Server();
  // Binds to host:port; returns the port. Throws Error when it cannot.
  int bind();
  // Serves until shutdown() (blocks).
  void run();
  // From any thread: new generation requests get 503, those running finish, then run() returns.
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmft::serve
