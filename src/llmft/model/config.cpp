#include "llmft/model/config.h"

#include <fmt/format.h>

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

}  // namespace llmft
