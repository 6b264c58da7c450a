#include "llmft/train/model_source.h"

#include <fmt/format.h>

#include <filesystem>

#include "llmft/core/error.h"
#include "llmft/io/hf_folder.h"
#include "llmft/io/hub.h"
#include "llmft/model/config.h"

namespace llmft {

Gpt2Config random_preset(const std::string& name) {
  Gpt2Config c;
  if (name == "tiny") {
    c.L = 2, c.C = 64, c.NH = 2;
  } else if (name == "small") {
    c.L = 4, c.C = 128, c.NH = 4;
  } else if (is_known_model_name(name)) {
    c = Gpt2Config::from_name(name);
  } else {
    throw UsageError(fmt::format("unknown random model preset '{}'", name),
                     "expected random:tiny, random:small, or random:<gpt2 name>");
  }
  return c;
}

namespace {
ModelSource random_model(const std::string& preset, const FinetuneOptions& opts) {
  ModelSource m;
  m.cfg = random_preset(preset);
  m.cfg.tied = opts.tied;
  m.cfg.dropout = static_cast<float>(opts.dropout);
  m.pretrained = false;
  m.spec = "random:" + preset;
  m.description = fmt::format("random:{} (randomly initialised, NOT pretrained; {})", preset,
                              m.cfg.describe());
  return m;
}
}  // namespace

ModelSource load_model_source(const FinetuneOptions& opts,
                              const std::function<void(const std::string&)>& log) {
  if (opts.model.starts_with("random:")) return random_model(opts.model.substr(7), opts);
  std::filesystem::path dir;
  try {
    dir = resolve_model(opts.model, opts.allow_download);
  } catch (const Error& e) {
    // Only a known model name that cannot be had falls back; a typo in a name or a path is the
    // user's error and must not silently train a random model.
    if (!opts.offline_fallback || !is_known_model_name(opts.model)) throw;
    log(fmt::format("Model '{}' is not available: {}", opts.model, e.what()));
    log(fmt::format(
        "Falling back to a RANDOMLY INITIALISED small GPT-2 (random:{}) so that every step of the "
        "recipe still runs. Its answers will be nonsense: this is NOT a pretrained model.",
        kFallbackPreset));
    log("(Use --no-fallback to fail instead; put the model in the Hugging Face cache or allow the "
        "download to train the real thing.)");
    ModelSource m = random_model(kFallbackPreset, opts);
    m.fallback = true;
    return m;
  }
  HfModel hf = read_hf_folder(dir, opts.tied);
  ModelSource m;
  m.cfg = hf.cfg;
  m.cfg.dropout = static_cast<float>(opts.dropout);
  m.params = std::move(hf.params);
  m.pretrained = true;
  m.spec = dir.string();
  m.description = fmt::format("{} (pretrained weights from {}; {}{})", opts.model, dir.string(),
                              m.cfg.describe(),
                              hf.info.lm_head_from_wte ? ", lm_head copied from wte" : "");
  return m;
}

}  // namespace llmft
