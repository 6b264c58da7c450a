// HTTP routes, limits and shutdown of `llmft serve`; see server.h.
#include "llmft/serve/server.h"

#include <fmt/format.h>
#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>

#include "llmft/core/json.h"
#include "llmft/data/template.h"
#include "llmft/generate/sampler.h"
#include "llmft/serve/chat_page.h"
#include "llmft/serve/reply.h"

namespace llmft::serve {

using nlohmann::ordered_json;

namespace {

bool openai_path(const std::string& path) { return path.starts_with("/v1/"); }

void send_error(httplib::Response& res, int status, const std::string& message, bool openai) {
  res.status = status;
  res.set_content(error_body(message, status, openai), "application/json");
}

// How often a waiting reply checks that its client is still there.
constexpr std::chrono::milliseconds kPoll{100};

}  // namespace

struct Server::Impl {
  const ServedModel& model;
  Engine& engine;
  ServerOptions opts;
  httplib::Server svr;
  int port = -1;
  std::atomic<bool> draining{false};
  std::atomic<uint64_t> next_id{0};
  uint64_t seed_base = std::random_device{}();
  // Replies still being written (drain waits for them).
  std::mutex mu;
  std::condition_variable cv;
  int64_t in_flight = 0;

  struct InFlight {
    Impl* s;
    explicit InFlight(Impl* impl) : s(impl) {
      std::lock_guard lk(s->mu);
      ++s->in_flight;
    }
    ~InFlight() {
      std::lock_guard lk(s->mu);
      --s->in_flight;
      s->cv.notify_all();
    }
  };

  Impl(const ServedModel& m, Engine& e, const ServerOptions& o) : model(m), engine(e), opts(o) {
    const int64_t threads =
        opts.http_threads > 0 ? opts.http_threads : engine.stats().slots + 16 + 8;
    svr.new_task_queue = [threads] {
      return new httplib::ThreadPool(static_cast<size_t>(threads));
    };
    svr.set_payload_max_length(static_cast<size_t>(opts.max_body_bytes));
    svr.set_read_timeout(opts.io_timeout_s, 0);
    svr.set_write_timeout(opts.io_timeout_s, 0);
    svr.set_keep_alive_timeout(5);
    routes();
  }

  void routes();
  void generate(Route route, const httplib::Request& req, httplib::Response& res);
  ordered_json model_entry() const;
};

ordered_json Server::Impl::model_entry() const {
  const Gpt2Config& c = model.config;
  return {{"name", model.name},
          {"model", model.name},
          {"modified_at", "1970-01-01T00:00:00Z"},
          {"size", model.parameters * 4},
          {"digest", ""},
          {"details",
           {{"parent_model", ""},
            {"format", "safetensors"},
            {"family", "gpt2"},
            {"families", {"gpt2"}},
            {"parameter_size", fmt::format("{:.0f}M", static_cast<double>(model.parameters) / 1e6)},
            {"quantization_level", model.precision == "bf16" ? "BF16" : "F32"}}},
          {"context_length", c.maxT}};
}

void Server::Impl::routes() {
  // API key and error bodies for everything, including routes that do not exist.
  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool api = req.path.starts_with("/api/") || req.path.starts_with("/v1/") ||
                     req.path.starts_with("/llmft/");
    if (api && !opts.api_key.empty() &&
        req.get_header_value("Authorization") != "Bearer " + opts.api_key) {
      send_error(res, 401, "missing or wrong API key (send Authorization: Bearer <key>)",
                 openai_path(req.path));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string msg;
        switch (res.status) {
          case 404:
            msg = fmt::format("no route for {} {}", req.method, req.path);
            break;
          case 413:
            msg = fmt::format("request body over {} bytes (--max-body-bytes)", opts.max_body_bytes);
            break;
          case 400:
            msg = "malformed HTTP request";
            break;
          default:
            msg = fmt::format("HTTP {}", res.status);
        }
        res.set_content(error_body(msg, res.status, openai_path(req.path)), "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  svr.set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string msg = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          msg = std::string("internal error: ") + e.what();
        } catch (...) {
        }
        send_error(res, 500, msg, openai_path(req.path));
      });

  svr.Get("/", [](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Accept").find("text/html") != std::string::npos)
      res.set_content(std::string(kChatPage), "text/html; charset=utf-8");
    else
      res.set_content("Ollama is running", "text/plain; charset=utf-8");
  });
  svr.Get("/api/version", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(ordered_json{{"version", LLMFT_VERSION}}.dump(), "application/json");
  });
  svr.Get("/api/tags", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(ordered_json{{"models", {model_entry()}}}.dump(), "application/json");
  });
  svr.Get("/api/ps", [this](const httplib::Request&, httplib::Response& res) {
    ordered_json m = model_entry();
    m["expires_at"] = "2999-01-01T00:00:00Z";
    m["size_vram"] = 0;
    res.set_content(ordered_json{{"models", {m}}}.dump(), "application/json");
  });
  svr.Post("/api/show", [this](const httplib::Request& req, httplib::Response& res) {
    ordered_json body;
    try {
      body = parse_json<ordered_json>(req.body, "the request body");
    } catch (const std::exception& e) {
      return send_error(res, 400, e.what(), false);
    }
    const auto it = body.is_object() ? body.find("model") : body.end();
    const auto name_it = body.is_object() ? body.find("name") : body.end();
    const auto& named = it != body.end() ? it : name_it;
    if (named == body.end() || !named->is_string())
      return send_error(res, 400, "model: expected the model's name as a string", false);
    if (!model.matches(named->get<std::string>()))
      return send_error(res, 404,
                        fmt::format("model \"{}\" not found; this server has \"{}\"",
                                    named->get<std::string>(), model.name),
                        false);
    const Gpt2Config& c = model.config;
    ordered_json m = model_entry();
    ordered_json j{{"license", ""},
                   {"modelfile", ""},
                   {"parameters", ""},
                   {"template", format_prompt(model.prompt_template, "{{ .Prompt }}", "")},
                   {"system", ""},
                   {"details", m["details"]},
                   {"model_info",
                    {{"general.architecture", "gpt2"},
                     {"general.parameter_count", model.parameters},
                     {"gpt2.context_length", c.maxT},
                     {"gpt2.embedding_length", c.C},
                     {"gpt2.block_count", c.L},
                     {"gpt2.attention.head_count", c.NH},
                     {"gpt2.attention.layer_norm_epsilon", c.ln_eps},
                     {"gpt2.vocab_size", c.V},
                     {"tokenizer.ggml.model", "gpt2"}}},
                   {"capabilities", {"completion"}},
                   {"modified_at", m["modified_at"]}};
    res.set_content(j.dump(), "application/json");
  });
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    ordered_json m{{"id", model.name}, {"object", "model"}, {"created", 0}, {"owned_by", "llmft"}};
    res.set_content(ordered_json{{"object", "list"}, {"data", {m}}}.dump(), "application/json");
  });
  svr.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (!model.matches(req.matches[1].str()))
      return send_error(res, 404, fmt::format("model \"{}\" not found", req.matches[1].str()),
                        true);
    ordered_json m{{"id", model.name}, {"object", "model"}, {"created", 0}, {"owned_by", "llmft"}};
    res.set_content(m.dump(), "application/json");
  });
  svr.Get("/llmft/stats", [this](const httplib::Request&, httplib::Response& res) {
    const EngineStats s = engine.stats();
    res.set_content(ordered_json{{"slots", s.slots},
                                 {"active", s.active},
                                 {"queued", s.queued},
                                 {"completed", s.completed},
                                 {"cancelled", s.cancelled},
                                 {"rejected", s.rejected},
                                 {"prompt_tokens", s.prompt_tokens},
                                 {"new_tokens", s.new_tokens},
                                 {"draining", draining.load()}}
                        .dump(),
                    "application/json");
  });
  const std::pair<const char*, Route> gen_routes[] = {
      {"/api/generate", Route::kOllamaGenerate},
      {"/api/chat", Route::kOllamaChat},
      {"/v1/chat/completions", Route::kOpenAiChat},
      {"/v1/completions", Route::kOpenAiCompletion}};
  for (const auto& [path, route] : gen_routes)
    svr.Post(path, [this, r = route](const httplib::Request& req, httplib::Response& res) {
      generate(r, req, res);
    });
}

void Server::Impl::generate(Route route, const httplib::Request& req, httplib::Response& res) {
  const bool openai = route == Route::kOpenAiChat || route == Route::kOpenAiCompletion;
  auto guard = std::make_shared<InFlight>(this);
  if (draining) return send_error(res, 503, "the server is shutting down", openai);
  auto job = std::make_shared<Job>();
  try {
    job->req = parse_request(route, req.body, model, opts.limits,
                             stream_seed(seed_base, next_id.fetch_add(1)));
  } catch (const HttpError& e) {
    return send_error(res, e.status(), e.what(), openai);
  }
  job->deadline = job->arrived + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(opts.timeout_s));
  switch (engine.submit(job)) {
    case Engine::Admission::kAdmitted:
      break;
    case Engine::Admission::kQueueFull:
      res.set_header("Retry-After", "1");
      return send_error(res, 503, "too many requests: every slot is busy and the queue is full",
                        openai);
    case Engine::Admission::kDraining:
      return send_error(res, 503, "the server is shutting down", openai);
    case Engine::Admission::kTimedOut:
      res.set_header("Retry-After", "1");
      return send_error(
          res, 503, fmt::format("no free slot within {} s (--timeout)", opts.timeout_s), openai);
  }
  auto writer = std::make_shared<ReplyWriter>(job->req, model.name, next_id.fetch_add(1));
  const bool stream = job->req.stream;
  // One reply: pieces as they come (streamed) or gathered (not), the client checked between.
  struct State {
    bool begun = false;
    std::string all;
  };
  auto st = std::make_shared<State>();
  auto provider = [this, job, writer, st, stream, openai](size_t, httplib::DataSink& sink) {
    auto write = [&](const std::string& s) { return s.empty() || sink.write(s.data(), s.size()); };
    if (!st->begun) {
      st->begun = true;
      if (stream && !write(writer->begin())) return false;
    }
    std::string text;
    const bool done = engine.take(*job, text, kPoll);
    if (stream) {
      if (!write(writer->piece(text))) return false;
    } else {
      st->all += text;
    }
    if (done) {
      std::string last;
      if (!job->error.empty())
        last = stream ? writer->error(job->error) : error_body(job->error, 500, openai);
      else
        last = stream ? writer->end(job->summary) : writer->whole(st->all, job->summary);
      if (!write(last)) return false;
      sink.done();
      return true;
    }
    return sink.is_writable();  // false: the client left; the releaser frees the slot
  };
  auto releaser = [this, job, guard](bool) { engine.cancel(*job); };
  res.set_chunked_content_provider(stream ? writer->content_type() : "application/json",
                                   std::move(provider), std::move(releaser));
}

Server::Server(const ServedModel& model, Engine& engine, const ServerOptions& opts)
    : impl_(std::make_unique<Impl>(model, engine, opts)) {}

Server::~Server() = default;

int Server::bind() {
  Impl& s = *impl_;
  s.port = s.opts.port == 0 ? s.svr.bind_to_any_port(s.opts.host)
                            : (s.svr.bind_to_port(s.opts.host, s.opts.port) ? s.opts.port : -1);
  if (s.port < 0)
    throw Error(fmt::format("cannot listen on {}:{}", s.opts.host, s.opts.port),
                "is another server using the port? choose another with --port");
  return s.port;
}

void Server::run() { impl_->svr.listen_after_bind(); }

void Server::shutdown() {
  Impl& s = *impl_;
  s.draining = true;
  s.engine.drain();
  {
    std::unique_lock lk(s.mu);
    s.cv.wait(lk, [&] { return s.in_flight == 0; });
  }
  while (!s.svr.is_running() && s.port >= 0) std::this_thread::yield();
  s.svr.stop();
}

}  // namespace llmft::serve
