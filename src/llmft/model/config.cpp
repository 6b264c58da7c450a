#include "llmft/model/config.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "llmft/core/error.h"

namespace llmft {

namespace {
struct Preset {
  const char* name;
  int64_t C, L, NH;
};
constexpr Preset kPresets[] = {
    {"gpt2", 768, 12, 12},
    {"gpt2-medium", 1024, 24, 16},
    {"gpt2-large", 1280, 36, 20},
    {"gpt2-xl", 1600, 48, 25},
};
}  // namespace

bool is_known_model_name(const std::string& name) {
  for (const auto& p : kPresets)
    if (name == p.name) return true;
  return false;
}

Gpt2Config Gpt2Config::from_name(const std::string& name) {
  for (const auto& p : kPresets) {
    if (name == p.name) {
      Gpt2Config c;
      c.C = p.C;
      c.L = p.L;
      c.NH = p.NH;
      return c;
    }
  }
  throw UsageError(fmt::format("unknown model name '{}'", name),
                   "expected gpt2, gpt2-medium, gpt2-large or gpt2-xl, or a model folder");
}

void Gpt2Config::validate() const {
  if (V <= 0 || maxT <= 0 || C <= 0 || L <= 0 || NH <= 0 || C % NH != 0) {
    throw Error(fmt::format("invalid GPT-2 shape: {}", describe()),
                "need positive sizes and C divisible by NH");
  }
  if (!(dropout >= 0.0f && dropout < 1.0f)) {
    throw Error(fmt::format("invalid dropout {}", dropout), "expected 0 <= dropout < 1");
  }
}

std::string Gpt2Config::describe() const {
  return fmt::format("L={} C={} NH={} V={} maxT={} {}", L, C, NH, V, maxT,
                     tied ? "tied" : "untied");
}

nlohmann::json to_json(const Gpt2Config& c) {
  return {{"V", c.V},   {"maxT", c.maxT}, {"C", c.C},           {"L", c.L},
          {"NH", c.NH}, {"tied", c.tied}, {"dropout", c.dropout}};
}

namespace {
// j[key], which must exist and be of the kind `is_kind` accepts (`kind` names it for the error).
const nlohmann::json& config_field(const nlohmann::json& j, const char* key,
                                   bool (nlohmann::json::*is_kind)() const, const char* kind,
                                   const std::string& origin) {
  const char* hint = "expected the keys V, maxT, C, L, NH (integers), tied (true/false) and "
                     "dropout (a number), as llmft writes them";
  const auto it = j.find(key);
  if (it == j.end()) {
    throw Error(fmt::format("{}: the model configuration has no \"{}\"", origin, key), hint);
  }
  if (!((*it).*is_kind)()) {
    throw Error(fmt::format("{}: the model configuration's \"{}\" is {}, expected {}", origin,
                            key, it->dump(), kind),
                hint);
  }
  return *it;
}
}  // namespace

Gpt2Config gpt2_config_from_json(const nlohmann::json& j, const std::string& origin) {
  using json = nlohmann::json;
  if (!j.is_object()) {
    throw Error(fmt::format("{}: the model configuration is {}, expected a JSON object", origin,
                            j.dump()),
                "a run's config.json holds it under \"model\": {\"config\": {...}}");
  }
  auto integer = [&](const char* key) {
    return config_field(j, key, &json::is_number_integer, "an integer", origin).get<int64_t>();
  };
  Gpt2Config c;
  c.V = integer("V");
  c.maxT = integer("maxT");
  c.C = integer("C");
  c.L = integer("L");
  c.NH = integer("NH");
  c.tied = config_field(j, "tied", &json::is_boolean, "true or false", origin).get<bool>();
  c.dropout = config_field(j, "dropout", &json::is_number, "a number", origin).get<float>();
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", origin, e.what()), e.hint());
  }
  return c;
}

}  // namespace llmft
