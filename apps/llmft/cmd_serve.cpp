// `llmft serve`: the model behind Ollama's and OpenAI's HTTP APIs, with a chat page at "/".
// Library: src/llmft/serve/ (routes, engine), generate/batcher.h (continuous batching).
#include <fmt/format.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "command.h"
#include "llmft/core/error.h"
#include "llmft/data/template.h"
#include "llmft/io/model_loader.h"
#include "llmft/model/precision.h"
#include "llmft/serve/server.h"

namespace llmft::app {
namespace {

struct Options {
  std::string model, name, prompt_template = "alpaca", host = "127.0.0.1", precision = "fp32";
  std::string adapter;  // LoRA adapter folder run beside the model
  std::string api_key_env;
  int port = 8080;
  int threads = 0;
  int64_t parallel = 4, queue = 16, max_tokens = 1024, max_prompt_tokens = 0;
  int64_t max_body_bytes = 1 << 20;
  double timeout = 600;
};

bool loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1";
}

// "gpt2-medium" -> "gpt2-medium"; a folder -> its name; "random:tiny" -> "random-tiny".
std::string default_name(const std::string& spec) {
  std::string n = std::filesystem::path(spec).filename().string();
  if (n.empty()) n = std::filesystem::path(spec).parent_path().filename().string();
  for (char& c : n)
    if (c == ':') c = '-';
  return n.empty() ? "llmft" : n;
}

void check(const Options& o) {
  auto positive = [](int64_t v, const char* flag) {
    if (v < 1) throw UsageError(fmt::format("{} {} is invalid: expected >= 1", flag, v));
  };
  positive(o.parallel, "--parallel");
  positive(o.max_tokens, "--max-tokens");
  positive(o.max_body_bytes, "--max-body-bytes");
  if (o.queue < 0) throw UsageError(fmt::format("--queue {} is invalid: expected >= 0", o.queue));
  if (o.max_prompt_tokens < 0)
    throw UsageError(
        fmt::format("--max-prompt-tokens {} is invalid: expected >= 0", o.max_prompt_tokens));
  if (o.port < 0 || o.port > 65535)
    throw UsageError(fmt::format("--port {} is invalid: expected 0..65535", o.port));
  if (!(o.timeout > 0))
    throw UsageError(fmt::format("--timeout {} is invalid: expected > 0", o.timeout));
  if (o.threads < 0)
    throw UsageError(fmt::format("--threads {} is invalid: expected >= 0", o.threads));
}

int run(const Options& o) {
  check(o);
  // SIGTERM and SIGINT are taken by one thread (sigwait) that drains the server: block them in
  // every thread, which inherit this mask. A client gone mid-write must not kill the process.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  std::string api_key;
  if (!o.api_key_env.empty()) {
    const char* k = std::getenv(o.api_key_env.c_str());
    if (!k || !*k)
      throw UsageError(
          fmt::format("--api-key-env {}: the variable is unset or empty", o.api_key_env),
          fmt::format("export {}=<a secret> first", o.api_key_env));
    api_key = k;
  }
  const Precision precision = parse_precision(o.precision);
  const PromptTemplate tmpl = parse_template(o.prompt_template);

  ModelLoadOptions lo;
  lo.allow_random = true;
  lo.adapter = o.adapter;
  lo.log = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
  LoadedModel m = load_model(o.model, lo);
  if (m.random_init) {
    m.model->init_random(123);
    std::fprintf(stderr, "llmft serve: %s has random weights: its answers are noise\n",
                 m.spec.c_str());
  }
  const Gpt2Config& cfg = m.cfg();

  serve::ServedModel sm;
  sm.name = o.name.empty() ? default_name(o.model) : o.name;
  sm.prompt_template = tmpl;
  sm.tokenizer = m.tokenizer.get();
  sm.config = cfg;
  sm.parameters = m.model->table().numel();
  sm.precision = o.precision;

  serve::EngineOptions eo;
  eo.slots = o.parallel;
  eo.max_queue = o.queue;
  eo.precision = precision;
  eo.threads = o.threads;
  serve::Engine engine(*m.model, *m.tokenizer, eo);

  serve::ServerOptions so;
  so.host = o.host;
  so.port = o.port;
  so.api_key = api_key;
  so.max_body_bytes = o.max_body_bytes;
  so.timeout_s = o.timeout;
  so.limits.max_new_tokens = o.max_tokens;
  so.limits.max_prompt_tokens = o.max_prompt_tokens > 0 ? o.max_prompt_tokens : cfg.maxT;
  so.http_threads = o.parallel + o.queue + 8;
  serve::Server server(sm, engine, so);
  const int port = server.bind();
  if (!loopback(o.host) && api_key.empty())
    std::fprintf(stderr,
                 "llmft serve: WARNING: listening on %s with no authentication: anyone who can "
                 "reach this address can use the model (set --api-key-env VAR)\n",
                 o.host.c_str());
  const std::string host = o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host;
  std::printf("llmft serve: %s as \"%s\" (%s, %lld slots, queue %lld)\n", m.description.c_str(),
              sm.name.c_str(), o.precision.c_str(), static_cast<long long>(o.parallel),
              static_cast<long long>(o.queue));
  std::printf("listening on http://%s:%d (chat page at /; Ctrl-C or SIGTERM drains and exits)\n",
              host.c_str(), port);
  std::fflush(stdout);

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    std::fprintf(stderr, "llmft serve: %s: finishing the requests in progress, refusing new ones\n",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT");
    server.shutdown();
  });
  server.run();
  waiter.join();
  const serve::EngineStats s = engine.stats();
  std::printf(
      "served %lld requests (%lld cancelled by their clients, %lld refused as busy): "
      "%lld prompt tokens, %lld new tokens\n",
      static_cast<long long>(s.completed + s.cancelled), static_cast<long long>(s.cancelled),
      static_cast<long long>(s.rejected), static_cast<long long>(s.prompt_tokens),
      static_cast<long long>(s.new_tokens));
  return 0;
}

Runner setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option(
         "--model", o->model,
         "Model folder (Hugging Face layout), name (gpt2-medium) or random:<preset> (tests)")
      ->required();
  app.add_option("--adapter", o->adapter,
                 "LoRA adapter folder (PEFT layout, e.g. a finetune --lora run's adapter/) run "
                 "beside the model without merging");
  app.add_option("--name", o->name, "Model name clients use (default: the folder or model name)");
  app.add_option("--template", o->prompt_template,
                 "Prompt template the model was finetuned with: alpaca or phi3")
      ->capture_default_str();
  app.add_option("--host", o->host,
                 "Address to listen on (another than 127.0.0.1 exposes the model to the network)")
      ->capture_default_str();
  app.add_option("--port", o->port, "Port (0 = any free port, printed at start)")
      ->capture_default_str();
  app.add_option("--precision", o->precision, "Matrix products: fp32 or bf16 (see generate)")
      ->capture_default_str();
  app.add_option("--threads", o->threads, "Threads for generation (0 = all cores)")
      ->capture_default_str();
  app.add_option("--parallel", o->parallel,
                 "Sequences decoded together (each holds a KV cache of 2 x layers x context x "
                 "width values: gpt2-medium, fp32: 192 MiB at the full 1024 tokens)")
      ->capture_default_str();
  app.add_option("--queue", o->queue, "Requests that may wait for a free slot; more get HTTP 503")
      ->capture_default_str();
  app.add_option("--max-tokens", o->max_tokens,
                 "New tokens a request may ask for at most (also the default)")
      ->capture_default_str();
  app.add_option("--max-prompt-tokens", o->max_prompt_tokens,
                 "Prompt tokens a request may send at most (0 = the model's context)")
      ->capture_default_str();
  app.add_option("--max-body-bytes", o->max_body_bytes, "Largest request body (HTTP 413 above)")
      ->capture_default_str();
  app.add_option("--timeout", o->timeout,
                 "Seconds a request may take in all, queue included (then 503 while queued, or "
                 "the answer ends with done_reason length)")
      ->capture_default_str();
  app.add_option("--api-key-env", o->api_key_env,
                 "Environment variable holding an API key that requests must send as "
                 "\"Authorization: Bearer KEY\" (default: no key)");
  return [o] { return run(*o); };
}

const Registration reg{
    "serve", "Serve a model over Ollama's and OpenAI's HTTP APIs, with a chat page", setup};

}  // namespace
}  // namespace llmft::app
