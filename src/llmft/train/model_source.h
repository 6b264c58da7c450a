// Where `llmft finetune` gets its starting weights: a named GPT-2 (hub cache or download), a
// Hugging Face folder, or "random:<preset>" (GPT-2's initialisation, real 50,257-token vocabulary).
// When a named model can be neither found nor downloaded, the recipe falls back to random:small so
// that every step still runs (and says plainly that the result is not a pretrained model).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "llmft/model/config.h"
#include "llmft/model/params.h"
#include "llmft/train/options.h"

namespace llmft {

struct ModelSource {
  Gpt2Config cfg;
  std::vector<float> params;  // laid out by ParamTable(cfg); empty: initialise randomly
  bool pretrained = false;    // false: random initialisation
  bool fallback = false;      // the named model was unavailable; this is random:small instead
  std::string spec;           // what to record: a folder path or "random:<preset>"
  std::string description;    // one line for the log and the summary
};

// "tiny" (L=2 C=64 NH=2), "small" (L=4 C=128 NH=4; the offline fallback) or a GPT-2 name.
// All use V=50257 and maxT=1024. Throws UsageError for other names.
Gpt2Config random_preset(const std::string& name);
constexpr const char* kFallbackPreset = "small";

// Resolves opts.model (see above). `log` receives human-readable lines (the fallback notice).
ModelSource load_model_source(const FinetuneOptions& opts,
                              const std::function<void(const std::string&)>& log);

}  // namespace llmft
