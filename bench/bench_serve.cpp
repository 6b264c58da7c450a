// `llmft serve` under load: N concurrent clients (1, 4, 16 by default) each stream one answer
// from /api/generate of an in-process server (the library's Engine + Server, real HTTP over
// 127.0.0.1 through libcurl). One JSON line per N: total new tokens per second of wall time,
// time to the first streamed piece (median and max over the clients), and the throughput ratio
// against one client measured in the same run (repeats alternate between the client counts).
//   bench_serve [--model random:gpt2-medium] [--clients 1,4,16] [--new-tokens 64]
//               [--precision fp32|bf16] [--threads 0] [--repeats 3]
// --model takes a folder, a name in the Hugging Face cache (gpt2-medium) or random:<preset>
// (GPT-2's shapes, uniform weights of sd 0.02: timing only).
#include <fmt/format.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "llmft/core/http.h"
#include "llmft/io/model_loader.h"
#include "llmft/model/precision.h"
#include "llmft/serve/server.h"
#include "common.h"
#include "llmft/model/kernels/matmul.h"

using namespace llmft;
using Clock = std::chrono::steady_clock;

namespace {

using llmft::bench::median;

struct ClientResult {
  double ttft_s = 0;
  int64_t tokens = 0;
};

// One streamed request; the time to its first piece and the tokens the final line counts.
ClientResult one_client(const std::string& url, const std::string& prompt, int64_t new_tokens) {
  HttpRequest req;
  req.method = "POST";
  req.url = url + "/api/generate";
  req.headers = {"Content-Type: application/json"};
  req.body = nlohmann::json{{"model", "bench"},
                            {"prompt", prompt},
                            {"raw", true},
                            {"options", {{"temperature", 0}, {"num_predict", new_tokens}}}}
                 .dump();
  req.read_timeout_s = 600;
  ClientResult r;
  const auto t0 = Clock::now();
  std::string buf;
  bool first = true;
  const HttpResponse res = http_request(req, [&](std::string_view chunk) {
    if (first) {
      r.ttft_s = std::chrono::duration<double>(Clock::now() - t0).count();
      first = false;
    }
    buf.append(chunk);
    return true;
  });
  if (res.status != 200) throw Error(fmt::format("HTTP {}: {}", res.status, buf));
  const size_t last = buf.rfind('\n', buf.size() - 2);
  const auto fin = nlohmann::json::parse(buf.substr(last == std::string::npos ? 0 : last + 1));
  r.tokens = fin.at("eval_count").get<int64_t>();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_spec = "random:gpt2-medium", clients_arg = "1,4,16", precision = "fp32";
  int64_t new_tokens = 64;
  int threads = 0, repeats = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--model")
      model_spec = v;
    else if (k == "--clients")
      clients_arg = v;
    else if (k == "--new-tokens")
      new_tokens = std::stoll(v);
    else if (k == "--precision")
      precision = v;
    else if (k == "--threads")
      threads = std::stoi(v);
    else if (k == "--repeats")
      repeats = std::stoi(v);
    else {
      fmt::print(stderr, "unknown option {}\n", k);
      return 2;
    }
  }
  std::vector<int> counts;
  std::stringstream ss(clients_arg);
  for (std::string t; std::getline(ss, t, ',');) counts.push_back(std::stoi(t));
  const int most = *std::max_element(counts.begin(), counts.end());

  ModelLoadOptions lo;
  lo.allow_random = true;
  LoadedModel m = load_model(model_spec, lo);
  if (m.random_init) {
    std::mt19937 gen(1);
    std::uniform_real_distribution<float> d(-0.0346f, 0.0346f);  // sd 0.02
    for (auto& x : m.model->params()) x = d(gen);
  }
  serve::ServedModel sm;
  sm.name = "bench";
  sm.tokenizer = m.tokenizer.get();
  sm.config = m.cfg();
  serve::EngineOptions eo;
  eo.slots = most;
  eo.max_queue = most;
  eo.precision = parse_precision(precision);
  eo.threads = threads;
  serve::Engine engine(*m.model, *m.tokenizer, eo);
  serve::ServerOptions so;
  so.port = 0;
  so.limits.max_new_tokens = new_tokens;
  serve::Server server(sm, engine, so);
  const int port = server.bind();
  std::thread listener([&] { server.run(); });
  const std::string url = fmt::format("http://127.0.0.1:{}", port);

  // Prompts of ~40 tokens, a different one per client.
  std::vector<std::string> prompts;
  for (int c = 0; c < most; ++c)
    prompts.push_back(fmt::format(
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nWrite sentence number {} about the sea.\n\n"
        "### Response:\n",
        c + 1));
  utsname u{};
  uname(&u);
  fmt::print(
      "{{\"context\": \"bench_serve\", \"model\": \"{}\", \"precision\": \"{}\", "
      "\"new_tokens\": {}, \"threads\": {}, \"repeats\": {}, \"host\": \"{} {}\", "
      "\"cores\": {}}}\n",
      m.description, precision, new_tokens, threads, repeats, u.sysname, u.machine,
      std::thread::hardware_concurrency());
  one_client(url, prompts[0], 4);  // warm-up (in bf16 it packs the weights)

  // Repeats alternate between the client counts, so a change in the machine's load hits all.
  struct Series {
    std::vector<double> tps, ttft_med, ttft_max;
    int64_t tokens = 0;
  };
  std::vector<Series> series(counts.size());
  for (int rep = 0; rep < repeats; ++rep) {
    for (size_t k = 0; k < counts.size(); ++k) {
      const int n = counts[k];
      std::vector<ClientResult> res(static_cast<size_t>(n));
      const auto t0 = Clock::now();
      std::vector<std::thread> ts;
      for (int c = 0; c < n; ++c)
        ts.emplace_back([&, c] {
          res[static_cast<size_t>(c)] =
              one_client(url, prompts[static_cast<size_t>(c)], new_tokens);
        });
      for (auto& t : ts) t.join();
      const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
      Series& s = series[k];
      s.tokens = 0;
      std::vector<double> ttft;
      for (const auto& r : res) {
        s.tokens += r.tokens;
        ttft.push_back(r.ttft_s);
      }
      s.tps.push_back(static_cast<double>(s.tokens) / wall);
      s.ttft_med.push_back(median(ttft));
      s.ttft_max.push_back(*std::max_element(ttft.begin(), ttft.end()));
      fmt::print(stderr,
                 "repeat {}: {} clients, {} tokens in {:.1f} s, {:.2f} tok/s, ttft {:.0f} ms\n",
                 rep + 1, n, s.tokens, wall, s.tps.back(), 1e3 * s.ttft_med.back());
    }
  }
  const double base_tps = median(series[0].tps);
  for (size_t k = 0; k < counts.size(); ++k) {
    const Series& s = series[k];
    const double t = median(s.tps);
    fmt::print(
        "{{\"bench\": \"serve\", \"clients\": {}, \"new_tokens\": {}, \"tokens_per_s\": "
        "{:.2f}, \"tokens_per_s_min\": {:.2f}, \"tokens_per_s_max\": {:.2f}, "
        "\"ttft_ms_median\": {:.1f}, \"ttft_ms_max\": {:.1f}, \"vs_{}_client\": {:.2f}}}\n",
        counts[k], s.tokens, t, *std::min_element(s.tps.begin(), s.tps.end()),
        *std::max_element(s.tps.begin(), s.tps.end()), 1e3 * median(s.ttft_med),
        1e3 * median(s.ttft_max), counts.front(), t / base_tps);
  }
  std::fflush(stdout);
  server.shutdown();
  listener.join();
  return 0;
}
