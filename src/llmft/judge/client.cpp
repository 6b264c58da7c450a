#include "llmft/judge/client.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>
#include <thread>

#include "llmft/core/http.h"
#include "llmft/core/json.h"
#include "llmft/judge/prompt.h"

namespace llmft::judge {

using ojson = nlohmann::ordered_json;

namespace {

const char* api_name(JudgeApi api) { return api == JudgeApi::kOllama ? "Ollama" : "OpenAI-compatible"; }

ojson parse_reply(std::string_view text, const char* what) {
  try {
    check_json_limits(text, what);
  } catch (const Error& e) {
    throw EntryError(e.what());  // this reply is bad; the next one may be fine
  }
  try {
    return ojson::parse(text);
  } catch (const ojson::parse_error& e) {
    throw EntryError(
        fmt::format("{}: {}: {}", what, describe_json_error(text, e), quote_truncated(text)));
  }
}

// Calls fn(line) for every line of body (without "\n" or "\r\n").
template <typename Fn>
void for_each_line(std::string_view body, Fn&& fn) {
  size_t pos = 0;
  while (pos < body.size()) {
    size_t nl = body.find('\n', pos);
    if (nl == std::string_view::npos) nl = body.size();
    std::string_view line = body.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!fn(line)) return;
    pos = nl + 1;
  }
}

void throw_if_error_object(const ojson& j) {
  if (j.is_object() && j.contains("error")) {
    const auto& e = j["error"];
    std::string msg = e.is_string() ? e.get<std::string>()
                      : (e.is_object() && e.contains("message") && e["message"].is_string())
                          ? e["message"].get<std::string>()
                          : e.dump();
    throw EntryError(fmt::format("the server reported an error: {}", quote_truncated(msg, 200)));
  }
}

// Content string at j[k1][k2] (null or absent -> empty); anything else is malformed.
std::string content_at(const ojson& j, const char* k1, const char* k2, const char* what) {
  if (!j.is_object() || !j.contains(k1) || !j[k1].is_object()) {
    throw EntryError(fmt::format("{} has no \"{}\" object: {}", what, k1, quote_truncated(j.dump())));
  }
  const auto& o = j[k1];
  if (!o.contains(k2) || o[k2].is_null()) return {};
  if (!o[k2].is_string()) {
    throw EntryError(fmt::format("{}: \"{}.{}\" is not a string", what, k1, k2));
  }
  return o[k2].get<std::string>();
}

const ojson& first_choice(const ojson& j, const char* what) {
  if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) {
    throw EntryError(fmt::format("{} has no \"choices\": {}", what, quote_truncated(j.dump())));
  }
  return j["choices"][0];
}

std::string join_url(const std::string& base, const char* path) { return base + path; }

// No judge reply comes near this (a score and a sentence, or a few KB of streamed lines); a
// server that sends more (or streams without end) is misbehaving, and the bytes would pile up.
constexpr int64_t kMaxReplyBytes = 16 << 20;

// Redirects are not followed: a 3xx to another host would re-send the prompt (and the API key)
// there. Says where it pointed so the user can pass that URL.
bool is_redirect(const HttpResponse& resp) { return resp.status >= 300 && resp.status < 400; }
std::string redirect_message(const HttpRequest& req, const HttpResponse& resp) {
  const std::string to = resp.header("Location");
  return fmt::format("HTTP {} from {} {}: redirected to {} (not followed); pass the server's "
                     "address with --url",
                     resp.status, req.method, req.url,
                     to.empty() ? std::string("nowhere") : quote_truncated(to, 200));
}

}  // namespace

std::string chat_request_body(const JudgeOptions& opts, const std::string& prompt) {
  ojson body;
  body["model"] = opts.model;
  body["messages"] = ojson::array({ojson{{"role", "user"}, {"content", prompt}}});
  if (opts.api == JudgeApi::kOllama) {
    body["options"] = ojson{{"seed", 123}, {"temperature", 0}, {"num_ctx", 2048}};
  } else {
    body["temperature"] = 0;
    body["seed"] = 123;
  }
  body["stream"] = opts.stream;
  return body.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

namespace {

// Ollama's reply: one JSON object, or (streamed) one object per line until "done": true.
// piece(j, what) extracts the text of one object.
template <typename Piece>
std::string parse_ndjson(std::string_view body, bool streamed, Piece&& piece) {
  if (!streamed) {
    const ojson j = parse_reply(trim(body), "the reply");
    throw_if_error_object(j);
    return piece(j, "the reply");
  }
  std::string text;
  bool done = false;
  for_each_line(body, [&](std::string_view line) {
    if (trim(line).empty()) return true;
    const ojson j = parse_reply(line, "a line of the streamed reply");
    if (!j.is_object()) {
      throw EntryError(fmt::format("a line of the streamed reply is JSON {}, expected an object: {}",
                                   j.type_name(), quote_truncated(line)));
    }
    throw_if_error_object(j);
    text += piece(j, "a streamed line");
    const auto d = j.find("done");
    done = d != j.end() && d->is_boolean() && d->get<bool>();
    return !done;
  });
  if (!done) {
    throw EntryError(fmt::format("the streamed reply ended without \"done\": true (got {})",
                                 quote_truncated(text)));
  }
  return text;
}

// An OpenAI-compatible reply: one JSON object, or (streamed) server-sent events until
// "data: [DONE]". whole(choice) reads a complete reply's first choice, delta(choice) a chunk's.
template <typename Whole, typename Delta>
std::string parse_sse(std::string_view body, bool streamed, Whole&& whole, Delta&& delta) {
  const std::string_view t = trim(body);
  // Some servers ignore "stream": true and answer with one JSON object; accept that too.
  if (!streamed || (!t.empty() && t.front() == '{')) {
    const ojson j = parse_reply(t, "the reply");
    throw_if_error_object(j);
    return whole(first_choice(j, "the reply"));
  }
  std::string text;
  bool done = false;
  for_each_line(body, [&](std::string_view line) {
    // Server-sent events: "data: ..." lines carry the payload; ":" comments, "event:", "id:"
    // and blank lines do not.
    if (line.rfind("data:", 0) != 0) return true;
    std::string_view data = trim(line.substr(5));
    if (data == "[DONE]") {
      done = true;
      return false;
    }
    const ojson j = parse_reply(data, "an event of the streamed reply");
    throw_if_error_object(j);
    text += delta(first_choice(j, "a streamed event"));
    return true;
  });
  if (!done) {
    throw EntryError(fmt::format("the streamed reply ended without \"data: [DONE]\" (got {})",
                                 quote_truncated(text)));
  }
  return text;
}

// A string member that may be absent or null (empty); anything else is malformed.
std::string optional_string(const ojson& j, const char* key, const char* what) {
  if (!j.is_object()) throw EntryError(fmt::format("{} is not an object: {}", what, quote_truncated(j.dump())));
  if (!j.contains(key) || j[key].is_null()) return {};
  if (!j[key].is_string()) throw EntryError(fmt::format("{}: \"{}\" is not a string", what, key));
  return j[key].get<std::string>();
}

}  // namespace

std::string parse_ollama_reply(std::string_view body, bool streamed) {
  return parse_ndjson(body, streamed, [](const ojson& j, const char* what) {
    // A streamed line without "message" (e.g. the final metrics) adds nothing.
    if (std::string_view(what) != "the reply" && !j.contains("message")) return std::string();
    return content_at(j, "message", "content", what);
  });
}

std::string parse_ollama_generate_reply(std::string_view body, bool streamed) {
  return parse_ndjson(body, streamed, [](const ojson& j, const char* what) {
    if (std::string_view(what) == "the reply" && (!j.is_object() || !j.contains("response"))) {
      throw EntryError(fmt::format("the reply has no \"response\": {}", quote_truncated(j.dump())));
    }
    return optional_string(j, "response", what);
  });
}

std::string parse_openai_reply(std::string_view body, bool streamed) {
  return parse_sse(
      body, streamed,
      [](const ojson& c) { return content_at(c, "message", "content", "the reply"); },
      [](const ojson& c) {
        return c.contains("delta") ? content_at(c, "delta", "content", "a streamed event")
                                   : std::string();
      });
}

std::string parse_openai_completion_reply(std::string_view body, bool streamed) {
  return parse_sse(
      body, streamed, [](const ojson& c) { return optional_string(c, "text", "the reply"); },
      [](const ojson& c) { return optional_string(c, "text", "a streamed event"); });
}

double parse_retry_after(const std::string& value) {
  const std::string_view v = trim(value);
  if (v.empty()) return -1;
  if (v.find_first_not_of("0123456789") == std::string_view::npos && v.size() < 9) {
    return std::atof(std::string(v).c_str());
  }
  const time_t when = curl_getdate(std::string(v).c_str(), nullptr);
  if (when < 0) return -1;
  const double d = std::difftime(when, std::time(nullptr));
  return d > 0 ? d : 0;
}

JudgeClient::JudgeClient(const JudgeOptions& opts, std::string role)
    : opts_(opts), base_(opts.url), role_(std::move(role)) {
  while (!base_.empty() && base_.back() == '/') base_.pop_back();
  if (base_.empty()) throw UsageError("--url is empty", "e.g. --url http://localhost:11434");
  if (opts_.api == JudgeApi::kOpenAi && base_.size() >= 3 &&
      base_.compare(base_.size() - 3, 3, "/v1") == 0) {
    base_.resize(base_.size() - 3);  // users often pass the SDK-style base URL ".../v1"
  }
  if (opts_.api == JudgeApi::kOpenAi) {
    const char* k = std::getenv(opts_.api_key_env.c_str());
    if (k && *k) {
      key_ = k;
    } else if (opts_.api_key_env_required) {
      throw UsageError(fmt::format("environment variable {} (--api-key-env) is not set or empty",
                                   opts_.api_key_env),
                       fmt::format("export {}=<your key>", opts_.api_key_env));
    }
  }
}

std::string JudgeClient::redact(std::string text) const {
  if (key_.empty()) return text;
  for (size_t p = text.find(key_); p != std::string::npos; p = text.find(key_, p + 3)) {
    text.replace(p, key_.size(), "***");
  }
  return text;
}

std::vector<std::string> JudgeClient::headers(bool json_body) const {
  std::vector<std::string> h;
  if (json_body) h.push_back("Content-Type: application/json");
  if (!key_.empty()) h.push_back("Authorization: Bearer " + key_);
  return h;
}

void JudgeClient::check(long connect_timeout_s, double read_timeout_s) const {
  const bool ollama = opts_.api == JudgeApi::kOllama;
  HttpRequest req;
  req.url = join_url(base_, ollama ? "/api/tags" : "/v1/models");
  req.headers = headers(false);
  req.connect_timeout_s = connect_timeout_s;
  req.read_timeout_s = 0;  // the idle timeout is the precise one
  req.idle_timeout_s = read_timeout_s;
  req.max_body_bytes = kMaxReplyBytes;
  req.follow_redirects = false;
  const std::string start = ollama ? "start it with `ollama serve`" : "start it";
  HttpResponse resp;
  try {
    resp = http_request(req);
  } catch (const Error& e) {
    throw Error(redact(fmt::format("cannot reach the {} {} at {} ({}); {}, or pass --url",
                                   api_name(opts_.api), role_, base_, e.what(), start)));
  }
  if (is_redirect(resp)) {
    throw Error(redact(fmt::format("the {} at {}: {}", role_, base_, redirect_message(req, resp))));
  }
  if (resp.status == 401 || resp.status == 403) {
    throw Error(fmt::format("the {} at {} refused GET {} with HTTP {}; set the API key in "
                            "${} (or name another variable with --api-key-env)",
                            role_, base_, req.url, resp.status, opts_.api_key_env));
  }
  if (resp.status != 200) {
    throw Error(redact(fmt::format(
        "the server at {} answered HTTP {} to GET {}: {}; {}", base_, resp.status, req.url,
        quote_truncated(resp.body),
        ollama ? "is it an Ollama server? For an OpenAI-compatible server pass --api openai"
               : "is it an OpenAI-compatible server? For Ollama pass --api ollama")));
  }
  ojson j;
  try {
    j = parse_json<ojson>(resp.body, "GET " + req.url);
  } catch (const Error& e) {
    throw Error(fmt::format("{} (not JSON): {}", e.what(), quote_truncated(resp.body)));
  }
  const char* list_key = ollama ? "models" : "data";
  const char* name_key = ollama ? "name" : "id";
  if (!j.is_object() || !j.contains(list_key) || !j[list_key].is_array()) {
    throw Error(fmt::format("GET {} returned no \"{}\" list: {}", req.url, list_key,
                            quote_truncated(resp.body)));
  }
  std::string names;
  for (const auto& m : j[list_key]) {
    if (!m.is_object() || !m.contains(name_key) || !m[name_key].is_string()) continue;
    const std::string name = m[name_key].get<std::string>();
    // Ollama names carry a tag; "llama3" means "llama3:latest".
    if (name == opts_.model || name == opts_.model + ":latest") return;
    names += (names.empty() ? "" : ", ") + name;
  }
  if (names.empty()) names = "none";
  if (ollama) {
    throw Error(fmt::format("model \"{}\" is not on the Ollama server at {} (it has: {}); pull it "
                            "with `ollama pull {}`, or pass --model",
                            opts_.model, base_, names, opts_.model));
  }
  throw Error(fmt::format("model \"{}\" is not served at {} (it serves: {}); start the server with "
                          "that model, or pass --model with one of these",
                          opts_.model, base_, names));
}

std::string JudgeClient::ask(const std::string& prompt,
                             const std::function<void(const std::string&)>& note,
                             std::atomic<int64_t>& requests, const std::atomic<bool>* stop) const {
  const bool ollama = opts_.api == JudgeApi::kOllama;
  const std::string body = post(ollama ? "/api/chat" : "/v1/chat/completions",
                                chat_request_body(opts_, prompt), note, requests, stop);
  return ollama ? parse_ollama_reply(body, opts_.stream) : parse_openai_reply(body, opts_.stream);
}

std::string JudgeClient::post(const char* path, const std::string& body,
                              const std::function<void(const std::string&)>& note,
                              std::atomic<int64_t>& requests, const std::atomic<bool>* stop) const {
  HttpRequest req;
  req.method = "POST";
  req.url = join_url(base_, path);
  req.headers = headers(true);
  if (opts_.api == JudgeApi::kOpenAi && opts_.stream) req.headers.push_back("Accept: text/event-stream");
  req.body = body;
  req.connect_timeout_s = opts_.connect_timeout_s;
  req.read_timeout_s = 0;
  req.idle_timeout_s = opts_.read_timeout_s;
  req.deadline_s = opts_.request_timeout_s;
  req.max_body_bytes = kMaxReplyBytes;
  req.follow_redirects = false;
  const int attempts = opts_.max_retries + 1;
  auto wait = [&](double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < until) {
      if (stop && stop->load()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  auto backoff = [&](int attempt) {
    return std::min(opts_.retry_max_s, opts_.retry_base_s * std::pow(2.0, attempt));
  };
  for (int attempt = 0;; ++attempt) {
    if (stop && stop->load()) throw ServerLostError("stopped: another request lost the server");
    ++requests;
    HttpResponse resp;
    try {
      resp = http_request(req);
    } catch (const Error& e) {
      const std::string msg = redact(e.what());
      if (!http_error_is_transient(e) || attempt + 1 >= attempts) {
        throw ServerLostError(fmt::format("{} (attempt {} of {})", msg, attempt + 1, attempts));
      }
      const double w = backoff(attempt);
      note(fmt::format("{}; retrying in {:.1f} s (attempt {} of {})", msg, w, attempt + 2, attempts));
      wait(w);
      continue;
    }
    if (resp.status == 200) return std::move(resp.body);
    if (is_redirect(resp)) throw EntryError(redact(redirect_message(req, resp)));
    const std::string what = redact(fmt::format("HTTP {} from POST {}: {}", resp.status, req.url,
                                                quote_truncated(trim(resp.body), 120)));
    if (resp.status != 429 && resp.status < 500) throw EntryError(what);
    if (attempt + 1 >= attempts) {
      throw EntryError(fmt::format("{} (attempt {} of {})", what, attempt + 1, attempts));
    }
    const double ra = parse_retry_after(resp.header("Retry-After"));
    const double w = ra >= 0 ? std::min(ra, opts_.retry_after_max_s) : backoff(attempt);
    note(fmt::format("{}; retrying in {:.1f} s{} (attempt {} of {})", what, w,
                     ra < 0                          ? ""
                     : ra > opts_.retry_after_max_s ? fmt::format(" (Retry-After {:g} s, capped)", ra)
                                                     : std::string(" (Retry-After)"),
                     attempt + 2, attempts));
    wait(w);
  }
}

}  // namespace llmft::judge
