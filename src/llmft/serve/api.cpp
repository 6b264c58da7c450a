// Request parsing and checks for both APIs; see api.h.
#include "llmft/serve/api.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "llmft/core/json.h"
#include "llmft/data/conversation.h"
#include "llmft/generate/answer.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft::serve {

using nlohmann::json;

bool ServedModel::matches(std::string_view requested) const {
  return requested == name || requested == name + ":latest";
}

namespace {

[[noreturn]] void bad(const std::string& what) { throw HttpError(400, what); }

const char* type_name(const json& v) { return v.type_name(); }

// Field `key` of object `o` when present and not null.
const json* field(const json& o, const char* key) {
  const auto it = o.find(key);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}

std::string get_string(const json& o, const char* key, const std::string& where) {
  const json* v = field(o, key);
  if (!v) return {};
  if (!v->is_string())
    bad(fmt::format("{}{}: expected a string, got {}", where, key, type_name(*v)));
  return v->get<std::string>();
}

bool get_bool(const json& o, const char* key, bool dflt) {
  const json* v = field(o, key);
  if (!v) return dflt;
  if (!v->is_boolean()) bad(fmt::format("{}: expected true or false, got {}", key, type_name(*v)));
  return v->get<bool>();
}

// A finite number in [lo, hi].
double get_number(const json& v, const std::string& name, double lo, double hi) {
  if (!v.is_number()) bad(fmt::format("{}: expected a number, got {}", name, type_name(v)));
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad(fmt::format("{}: {} is out of range [{}, {}]", name, v.dump(), lo, hi));
  return x;
}

// An integer (a JSON integer, or a float with an integral value) in [lo, hi].
int64_t get_int(const json& v, const std::string& name, int64_t lo, int64_t hi) {
  if (v.is_number_integer() || v.is_number_unsigned()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
      bad(fmt::format("{}: {} is out of range [{}, {}]", name, v.dump(), lo, hi));
    const int64_t x =
        v.is_number_unsigned() ? static_cast<int64_t>(v.get<uint64_t>()) : v.get<int64_t>();
    if (x < lo || x > hi) bad(fmt::format("{}: {} is out of range [{}, {}]", name, x, lo, hi));
    return x;
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && d >= static_cast<double>(lo) &&
        d <= static_cast<double>(hi))
      return static_cast<int64_t>(d);
    bad(fmt::format("{}: {} is not an integer in [{}, {}]", name, v.dump(), lo, hi));
  }
  bad(fmt::format("{}: expected an integer, got {}", name, type_name(v)));
}

std::vector<std::string> get_stop(const json& v, const std::string& name, bool allow_string) {
  std::vector<std::string> out;
  if (allow_string && v.is_string()) {
    out.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    if (v.size() > 16) bad(fmt::format("{}: {} stop strings, at most 16", name, v.size()));
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string())
        bad(fmt::format("{}[{}]: expected a string, got {}", name, i, type_name(v[i])));
      out.push_back(v[i].get<std::string>());
    }
  } else {
    bad(fmt::format("{}: expected {}an array of strings, got {}", name,
                    allow_string ? "a string or " : "", type_name(v)));
  }
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i].empty()) bad(fmt::format("{}[{}]: a stop string must not be empty", name, i));
  return out;
}

// num_predict / max_tokens: -1 (Ollama: no limit) or absent = the server's limit.
int64_t get_max_new(const json* v, const std::string& name, const Limits& lim, bool allow_neg) {
  if (!v) return lim.max_new_tokens;
  const int64_t n = get_int(*v, name, allow_neg ? -2 : 0, std::numeric_limits<int64_t>::max());
  if (n < 0) return lim.max_new_tokens;
  if (n > lim.max_new_tokens)
    bad(fmt::format("{}: {} is more than this server's limit of {} new tokens", name, n,
                    lim.max_new_tokens));
  return n;
}

// Ollama's options object.
void parse_ollama_options(const json& body, GenRequest& r, const Limits& lim) {
  const json* o = field(body, "options");
  r.seq.max_new_tokens = lim.max_new_tokens;
  if (!o) return;
  if (!o->is_object()) bad(fmt::format("options: expected an object, got {}", type_name(*o)));
  auto& s = r.seq.sampler;
  if (const json* v = field(*o, "temperature"))
    s.temperature = static_cast<float>(get_number(*v, "options.temperature", 0, 100));
  if (const json* v = field(*o, "top_k"))
    s.top_k = static_cast<int>(get_int(*v, "options.top_k", 0, 1 << 30));
  if (const json* v = field(*o, "top_p")) {
    s.top_p = static_cast<float>(get_number(*v, "options.top_p", 0, 1));
    if (s.top_p == 0.0f) bad("options.top_p: 0 keeps no token; expected a value in (0, 1]");
  }
  if (const json* v = field(*o, "min_p"))
    s.min_p = static_cast<float>(get_number(*v, "options.min_p", 0, 1));
  if (const json* v = field(*o, "repeat_penalty")) {
    s.repeat_penalty = static_cast<float>(get_number(*v, "options.repeat_penalty", 0, 100));
    if (s.repeat_penalty == 0.0f) bad("options.repeat_penalty: expected a value > 0 (1 = off)");
  }
  if (const json* v = field(*o, "repeat_last_n"))
    s.repeat_last_n = static_cast<int>(get_int(*v, "options.repeat_last_n", -1, 1 << 30));
  if (const json* v = field(*o, "seed"))
    s.seed = static_cast<uint64_t>(get_int(*v, "options.seed", std::numeric_limits<int64_t>::min(),
                                           std::numeric_limits<int64_t>::max()));
  r.seq.max_new_tokens = get_max_new(field(*o, "num_predict"), "options.num_predict", lim, true);
  if (const json* v = field(*o, "stop")) r.stop = get_stop(*v, "options.stop", false);
  if (const json* v = field(*o, "num_ctx")) get_int(*v, "options.num_ctx", 1, 1 << 30);
}

// OpenAI's top-level sampling fields.
void parse_openai_options(const json& body, GenRequest& r, const Limits& lim) {
  auto& s = r.seq.sampler;
  if (const json* v = field(body, "temperature"))
    s.temperature = static_cast<float>(get_number(*v, "temperature", 0, 2));
  if (const json* v = field(body, "top_p")) {
    s.top_p = static_cast<float>(get_number(*v, "top_p", 0, 1));
    if (s.top_p == 0.0f) bad("top_p: 0 keeps no token; expected a value in (0, 1]");
  }
  if (const json* v = field(body, "seed"))
    s.seed = static_cast<uint64_t>(get_int(*v, "seed", std::numeric_limits<int64_t>::min(),
                                           std::numeric_limits<int64_t>::max()));
  const json* mt = field(body, "max_completion_tokens");
  r.seq.max_new_tokens = get_max_new(mt ? mt : field(body, "max_tokens"),
                                     mt ? "max_completion_tokens" : "max_tokens", lim, false);
  if (const json* v = field(body, "stop")) r.stop = get_stop(*v, "stop", true);
  if (const json* v = field(body, "n"); v && get_int(*v, "n", 1, 128) != 1)
    bad("n: only 1 choice per request is supported");
  if (const json* v = field(body, "stream_options")) {
    if (!v->is_object())
      bad(fmt::format("stream_options: expected an object, got {}", type_name(*v)));
    r.include_usage = get_bool(*v, "include_usage", false);
  }
  for (const char* k : {"tools", "functions"})
    if (const json* v = field(body, k); v && !(v->is_array() && v->empty()))
      bad(fmt::format("{}: tool calls are not supported by this model", k));
  if (get_bool(body, "logprobs", false)) bad("logprobs: not supported");
}

std::vector<ChatMessage> parse_messages(const json& body, bool openai) {
  const json* m = field(body, "messages");
  if (!m) bad("messages: missing");
  if (!m->is_array()) bad(fmt::format("messages: expected an array, got {}", type_name(*m)));
  if (m->empty()) bad("messages: empty; give at least one user message");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < m->size(); ++i) {
    const json& e = (*m)[i];
    const std::string w = fmt::format("messages[{}].", i);
    if (!e.is_object())
      bad(fmt::format("messages[{}]: expected an object, got {}", i, type_name(e)));
    ChatMessage c;
    c.role = get_string(e, "role", w);
    const json* content = field(e, "content");
    if (openai && content && content->is_array()) {
      // Content parts: text only.
      for (size_t k = 0; k < content->size(); ++k) {
        const json& p = (*content)[k];
        const std::string pw = fmt::format("{}content[{}].", w, k);
        if (!p.is_object()) bad(fmt::format("{}content[{}]: expected an object", w, k));
        if (get_string(p, "type", pw) != "text")
          bad(fmt::format("{}type: only \"text\" parts are supported", pw));
        c.content += get_string(p, "text", pw);
      }
    } else {
      c.content = get_string(e, "content", w);
    }
    if (const json* im = field(e, "images"); im && !(im->is_array() && im->empty()))
      bad(fmt::format("{}images: this model reads text only", w));
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

std::string chat_prompt(const ServedModel& model, const std::vector<ChatMessage>& messages,
                        int64_t budget) {
  std::string system;
  std::vector<ChatTurn> turns;
  bool open = false;  // the last turn has a user message and no reply yet
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "system") {
      if (!system.empty()) system += "\n\n";
      system += m.content;
    } else if (m.role == "user") {
      turns.push_back({m.content, {}});
      open = true;
    } else if (m.role == "assistant") {
      if (!open) turns.push_back({});
      turns.back().assistant = m.content;
      open = false;
    } else {
      bad(
          fmt::format("messages[{}].role: \"{}\" is not supported; expected system, user or "
                      "assistant",
                      i, m.role));
    }
  }
  if (!open) bad("messages: the last message must be from the user");
  return fit_conversation(model.prompt_template, *model.tokenizer, system, turns, budget).prompt;
}

GenRequest parse_request(Route route, std::string_view body, const ServedModel& model,
                         const Limits& lim, uint64_t fresh_seed) {
  json j;
  try {
    j = parse_json(body, "the request body");
  } catch (const Error& e) {
    bad(e.what());
  } catch (const json::exception&) {  // anything the limits check missed: never nlohmann's words
    bad("the request body: not valid JSON");
  }
  if (!j.is_object()) bad(fmt::format("the body must be a JSON object, got {}", type_name(j)));
  GenRequest r;
  r.route = route;
  r.seq.sampler.seed = fresh_seed;
  r.model = get_string(j, "model", "");
  if (r.model.empty()) bad("model: missing; name the served model, e.g. \"" + model.name + "\"");
  if (!model.matches(r.model))
    throw HttpError(
        404, fmt::format("model \"{}\" not found; this server has \"{}\"", r.model, model.name));
  const bool openai = route == Route::kOpenAiChat || route == Route::kOpenAiCompletion;
  r.stream = get_bool(j, "stream", !openai);
  if (openai) {
    parse_openai_options(j, r, lim);
  } else {
    parse_ollama_options(j, r, lim);
    for (const char* k : {"images", "context"})
      if (const json* v = field(j, k); v && !(v->is_array() && v->empty()))
        bad(fmt::format("{}: not supported by this server", k));
    for (const char* k : {"format", "suffix", "template"})
      if (const json* v = field(j, k); v && !(v->is_string() && v->get<std::string>().empty()))
        bad(fmt::format("{}: not supported by this server", k));
  }
  // The prompt must leave room for at least one new token in the context when it is cropped.
  const int64_t budget = std::min(lim.max_prompt_tokens,
                                  std::max<int64_t>(1, model.config.maxT - r.seq.max_new_tokens));
  switch (route) {
    case Route::kOllamaGenerate: {
      const std::string prompt = get_string(j, "prompt", "");
      const std::string system = get_string(j, "system", "");
      r.raw = get_bool(j, "raw", false);
      if (prompt.empty()) {
        r.seq.max_new_tokens = 0;  // Ollama: an empty prompt only loads the model
      } else if (r.raw) {
        r.prompt = prompt;
      } else {
        r.prompt = chat_prompt(model, {{"system", system}, {"user", prompt}}, budget);
      }
      break;
    }
    case Route::kOllamaChat:
    case Route::kOpenAiChat:
      r.prompt = chat_prompt(model, parse_messages(j, openai), budget);
      break;
    case Route::kOpenAiCompletion: {
      const json* p = field(j, "prompt");
      if (!p || !p->is_string())
        bad(fmt::format("prompt: expected a string, got {}", p ? type_name(*p) : "nothing"));
      r.prompt = p->get<std::string>();
      r.raw = true;
      if (r.prompt.empty()) bad("prompt: empty; give some text to continue");
      break;
    }
  }
  if (!r.raw) r.marker = std::string(response_marker(model.prompt_template));
  if (!r.prompt.empty()) {
    r.ids = model.tokenizer->encode(r.prompt, SpecialTokens::kAllow);
    if (static_cast<int64_t>(r.ids.size()) > lim.max_prompt_tokens)
      bad(fmt::format("the prompt has {} tokens; this server accepts at most {}", r.ids.size(),
                      lim.max_prompt_tokens));
  }
  if (r.ids.empty()) r.seq.max_new_tokens = 0;
  return r;
}

}  // namespace llmft::serve
