// Reply formats for both APIs; see reply.h.
#include "llmft/serve/reply.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>

namespace llmft::serve {

using nlohmann::ordered_json;

namespace {

std::string dump(const ordered_json& j) {
  // Model text is valid UTF-8 (the tokenizer shows broken bytes as U+FFFD); replace anyway.
  return j.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

// RFC 3339 with nanoseconds, UTC, as Go's time.RFC3339Nano.
std::string now_rfc3339() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::floor<std::chrono::seconds>(now);
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now - secs).count();
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:09d}Z", secs, ns);
}

bool is_openai(Route r) { return r == Route::kOpenAiChat || r == Route::kOpenAiCompletion; }

}  // namespace

ReplyWriter::ReplyWriter(const GenRequest& req, std::string model_name, uint64_t id)
    : route_(req.route),
      include_usage_(req.include_usage),
      model_(std::move(model_name)),
      id_(fmt::format("{}-{}", req.route == Route::kOpenAiChat ? "chatcmpl" : "cmpl", id)),
      created_(std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count()) {}

const char* ReplyWriter::content_type() const {
  return is_openai(route_) ? "text/event-stream" : "application/x-ndjson";
}

std::string ReplyWriter::ollama_object(const std::string& text, const GenSummary* s) const {
  ordered_json j{{"model", model_}, {"created_at", now_rfc3339()}};
  if (route_ == Route::kOllamaChat)
    j["message"] = {{"role", "assistant"}, {"content", text}};
  else
    j["response"] = text;
  j["done"] = s != nullptr;
  if (s) {
    j["done_reason"] = s->done_reason;
    j["total_duration"] = s->total_ns;
    j["load_duration"] = 0;
    j["prompt_eval_count"] = s->prompt_tokens;
    j["prompt_eval_duration"] = s->prompt_ns;
    j["eval_count"] = s->new_tokens;
    j["eval_duration"] = s->eval_ns;
  }
  return dump(j);
}

// text: a piece (chunk) or the whole answer; null in a finish chunk. s: the finish reason and
// usage when known.
std::string ReplyWriter::openai_object(const std::string* text, const GenSummary* s,
                                       bool chunk) const {
  const bool chat = route_ == Route::kOpenAiChat;
  ordered_json j{
      {"id", id_},
      {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
      {"created", created_},
      {"model", model_},
      {"system_fingerprint", "fp_llmft"}};
  ordered_json c{{"index", 0}};
  if (chat) {
    ordered_json m = ordered_json::object();
    if (!chunk) m["role"] = "assistant";
    if (text) m["content"] = *text;
    c[chunk ? "delta" : "message"] = m;
  } else {
    c["text"] = text ? *text : std::string();
  }
  c["finish_reason"] = s ? ordered_json(s->done_reason) : ordered_json(nullptr);
  j["choices"] = ordered_json::array({c});
  if (s && !chunk)
    j["usage"] = {{"prompt_tokens", s->prompt_tokens},
                  {"completion_tokens", s->new_tokens},
                  {"total_tokens", s->prompt_tokens + s->new_tokens}};
  return dump(j);
}

std::string ReplyWriter::begin() const {
  if (route_ != Route::kOpenAiChat) return {};
  ordered_json j = ordered_json::parse(openai_object(nullptr, nullptr, true));
  j["choices"][0]["delta"] = {{"role", "assistant"}, {"content", ""}};
  return "data: " + dump(j) + "\n\n";
}

std::string ReplyWriter::piece(const std::string& text) const {
  if (text.empty()) return {};
  if (!is_openai(route_)) return ollama_object(text, nullptr) + "\n";
  return "data: " + openai_object(&text, nullptr, true) + "\n\n";
}

std::string ReplyWriter::end(const GenSummary& s) const {
  if (!is_openai(route_)) return ollama_object("", &s) + "\n";
  std::string out = "data: " + openai_object(nullptr, &s, true) + "\n\n";
  if (include_usage_) {
    ordered_json j = ordered_json::parse(openai_object(nullptr, nullptr, true));
    j["choices"] = ordered_json::array();
    j["usage"] = {{"prompt_tokens", s.prompt_tokens},
                  {"completion_tokens", s.new_tokens},
                  {"total_tokens", s.prompt_tokens + s.new_tokens}};
    out += "data: " + dump(j) + "\n\n";
  }
  return out + "data: [DONE]\n\n";
}

std::string ReplyWriter::error(const std::string& message) const {
  if (!is_openai(route_)) return error_body(message, 500, false) + "\n";
  return "data: " + error_body(message, 500, true) + "\n\n";
}

std::string ReplyWriter::whole(const std::string& text, const GenSummary& s) const {
  if (!is_openai(route_)) return ollama_object(text, &s);
  return openai_object(&text, &s, false);
}

std::string error_body(const std::string& message, int status, bool openai) {
  if (!openai) return dump(ordered_json{{"error", message}});
  const char* type = status == 401   ? "authentication_error"
                     : status == 404 ? "not_found_error"
                     : status == 503 ? "server_overloaded"
                     : status < 500  ? "invalid_request_error"
                                     : "server_error";
  return dump(ordered_json{{"error", {{"message", message}, {"type", type}, {"code", status}}}});
}

}  // namespace llmft::serve
