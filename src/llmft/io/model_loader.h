// Model + tokenizer loading for every command that needs a model: a spec (a folder, a GPT-2 name
// from the hub cache or downloaded, or "random:<preset>" where the caller allows it) becomes a
// configuration, weights laid out by ParamTable, a tokenizer and a line saying where they are from.
// A ".gguf" file (llmft export's) loads too: generate and chat run exported models.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "llmft/io/hf_folder.h"
#include "llmft/model/config.h"
#include "llmft/model/gpt2.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft {

// "tiny" (L=2 C=64 NH=2), "small" (L=4 C=128 NH=4; the offline fallback) or a GPT-2 name.
// All use V=50257 and maxT=1024. Throws UsageError for other names.
Gpt2Config random_preset(const std::string& name);
constexpr const char* kFallbackPreset = "small";

enum class TokenizerSource {
  kFolderOrBundled,  // the folder's vocab.json + merges.txt (or encoder.json + vocab.bpe) if any
  kBundled,          // always the bundled GPT-2 vocabulary (finetune writes it with the model)
};

struct ModelLoadOptions {
  bool allow_download = true;     // fetch a known name missing from the hub cache
  bool allow_random = false;      // accept "random:<preset>" (GPT-2's initialisation, no weights)
  // A known model name that can be neither found nor downloaded loads as random:small instead,
  // saying so through `log`. A typo in a name or a path is still an error.
  bool fallback_to_random = false;
  std::optional<bool> tied;       // the output head: overrides the folder's tie_word_embeddings
                                  // (false: lm_head copied from wte when the file has none)
  // Overrides the configuration's dropout (a folder's resid_pdrop; 0 for a random model).
  std::optional<float> dropout;
  TokenizerSource tokenizer = TokenizerSource::kFolderOrBundled;
  // A LoRA adapter folder (PEFT's layout, io/peft.h) attached to the model; empty: none.
  std::filesystem::path adapter;
  std::function<void(const std::string&)> log;  // human-readable notices; empty: none
};

struct LoadedModel {
  // Never null. The folder's weights, read straight into the model; zeros for a random model
  // (random_init: the caller initialises it, with its own seed) and for a run being resumed
  // (its checkpoint fills it).
  std::unique_ptr<Gpt2> model;
  bool random_init = false;
  std::unique_ptr<BpeTokenizer> tokenizer;  // never null
  std::filesystem::path dir;  // the model folder; empty for a random model or a GGUF file
  std::string spec;           // what to record: the folder path or "random:<preset>"
  std::string description;    // one line for logs and summaries
  const Gpt2Config& cfg() const { return model->config(); }
  bool pretrained = false;    // false: random initialisation
  bool fallback = false;      // the named model was unavailable; this is random:small instead
  LoadInfo info;              // what reading the weights found (default for a random model)
  std::unique_ptr<Lora> lora;           // the attached adapter (ModelLoadOptions::adapter), or null
  std::filesystem::path adapter_dir;    // where it was read from
};

// True when `spec` names an existing file ending in ".gguf".
bool is_gguf_path(const std::string& spec);

// Resolves `spec` (see above; folders and names through io's resolve_model, or a GPT-2 GGUF file
// read with io/gguf.h, its tokenizer included) and loads the configuration, weights and tokenizer. Throws Error when the model's vocabulary is smaller than
// the tokenizer's, UsageError for an unknown name or preset, Error for unreadable files.
LoadedModel load_model(const std::string& spec, const ModelLoadOptions& opts);

}  // namespace llmft
